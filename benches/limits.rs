//! One local rate-limit check, as the proxy makes per metered request: resolve the
//! key's figures for the model, charge RPM, RPD, TPM and TPD in its governor buckets,
//! then settle the real usage. The figures are large enough never to trip, so every
//! iteration takes the admitting path. A second case adds totals across models for the
//! key and the team: twelve buckets instead of four.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::auth::Identity;
use tollgate::config::{LimitsConfig, RateFigures, TierConfig};
use tollgate::limits::{LimitClock, Limiter};
use tollgate::metrics::Metrics;

const ROOMY: RateFigures = RateFigures {
    rpm: Some(4_000_000_000),
    tpm: Some(4_000_000_000),
    rpd: Some(4_000_000_000),
    tpd: Some(4_000_000_000),
};

fn check(c: &mut Criterion) {
    let mut config = LimitsConfig::default();
    let roomy = TierConfig {
        rpm: ROOMY.rpm,
        tpm: ROOMY.tpm,
        rpd: ROOMY.rpd,
        tpd: ROOMY.tpd,
        ..TierConfig::default()
    };
    config.tiers.insert("bench".into(), roomy);
    config.default_tier = "bench".into();
    run(c, "limits/admit_and_settle", &config);
    config.key_total = ROOMY;
    config.team_total = ROOMY;
    run(
        c,
        "limits/admit_and_settle_with_key_and_team_totals",
        &config,
    );
}

fn run(c: &mut Criterion, name: &str, config: &LimitsConfig) {
    let limiter = Limiter::new(config, LimitClock::default(), Metrics::new().unwrap());
    let identity = Identity {
        key_id: "key_0192b3c4-d5e6-7f80-9a1b-2c3d4e5f6a7b".into(),
        team_id: Some("team_1".into()),
        display: "tg-4kQx81Pa".into(),
        key: None,
    };
    // Other keys in the map, as on a busy gateway.
    for i in 0..1000 {
        let other = Identity {
            key_id: format!("key_{i}"),
            ..identity.clone()
        };
        let figures = limiter.figures(&other, Some("gpt-4o-mini")).unwrap();
        limiter
            .admit_local(&other, Some("gpt-4o-mini"), figures, 10)
            .unwrap();
    }
    c.bench_function(name, |b| {
        b.iter(|| {
            let model = black_box(Some("gpt-4o-mini"));
            let figures = limiter.figures(black_box(&identity), model).unwrap();
            // Small counts, so tens of millions of iterations stay within the limits;
            // settling more than the estimate takes the debt path too.
            let admitted = limiter
                .admit_local(&identity, model, figures, black_box(1))
                .unwrap();
            admitted.settle(black_box(2));
        })
    });
}

criterion_group!(benches, check);
criterion_main!(benches);
