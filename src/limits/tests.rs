use super::*;

fn limiter(config: &LimitsConfig) -> (Limiter, LimitClock, Metrics) {
    let clock = LimitClock::manual();
    let metrics = Metrics::new().unwrap();
    (
        Limiter::new(config, clock.clone(), metrics.clone()),
        clock,
        metrics,
    )
}

fn caller(id: &str) -> Identity {
    Identity {
        key_id: id.to_owned(),
        team_id: None,
        display: id.to_owned(),
        key: None,
    }
}

/// Figures for the key on the model alone, no totals.
fn figures(rpm: Option<u64>, tpm: Option<u64>, rpd: Option<u64>, tpd: Option<u64>) -> Limits {
    Limits {
        model: RateFigures { rpm, tpm, rpd, tpd },
        ..Limits::default()
    }
}

#[test]
fn each_kind_trips_at_its_limit() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let who = caller("k");
    let cases = [
        (Kind::Rpm, figures(Some(3), None, None, None), 1, 3),
        (Kind::Rpd, figures(None, None, Some(2), None), 1, 2),
        (Kind::Tpm, figures(None, Some(100), None, None), 30, 3),
        (Kind::Tpd, figures(None, None, None, Some(100)), 50, 2),
    ];
    for (kind, limits, tokens, fits) in cases {
        let model = kind.label();
        for _ in 0..fits {
            limiter
                .admit_local(&who, Some(model), limits, tokens)
                .unwrap()
                .settle(0);
        }
        let refused = limiter
            .admit_local(&who, Some(model), limits, tokens)
            .err()
            .unwrap();
        assert_eq!(refused.kind, kind);
        assert!(refused.retry_after.is_some());
    }
}

#[test]
fn a_refusal_takes_nothing_from_the_other_limits() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let who = caller("k");
    let limits = figures(Some(10), Some(100), None, None);
    let admitted = limiter.admit_local(&who, Some("m"), limits, 60).unwrap();
    assert_eq!(admitted.standing.requests.unwrap().remaining, 9);
    let refused = limiter
        .admit_local(&who, Some("m"), limits, 60)
        .err()
        .unwrap();
    assert_eq!(
        (refused.kind, refused.used, refused.requested),
        (Kind::Tpm, 60, 60)
    );
    // The refused request's RPM charge was given back.
    assert_eq!(refused.standing.requests.unwrap().remaining, 9);
    assert_eq!(refused.standing.tokens.unwrap().remaining, 40);
    admitted.cancel();
    let again = limiter.admit_local(&who, Some("m"), limits, 60).unwrap();
    assert_eq!(again.standing.requests.unwrap().remaining, 9);
}

#[test]
fn tokens_beyond_the_estimate_are_charged_and_unused_estimate_is_kept() {
    let (limiter, clock, _) = limiter(&LimitsConfig::default());
    let who = caller("k");
    let limits = figures(None, Some(1000), None, None);
    limiter
        .admit_local(&who, Some("m"), limits, 100)
        .unwrap()
        .settle(700);
    let next = limiter.admit_local(&who, Some("m"), limits, 100).unwrap();
    assert_eq!(next.standing.tokens.unwrap().remaining, 200);
    next.settle(10);
    let refused = limiter
        .admit_local(&who, Some("m"), limits, 300)
        .err()
        .unwrap();
    assert_eq!((refused.used, refused.limit), (800, 1000));
    // 100 tokens free up every 6 s: 300 fit once 6 s have passed.
    assert_eq!(refused.retry_after, Some(Duration::from_secs(6)));
    assert_eq!(
        refused.to_string(),
        "Rate limit reached for m on tokens per min (TPM): Limit 1000, Used 800, \
         Requested 300. Please try again in 6s."
    );
    clock.advance(Duration::from_secs(6));
    limiter.admit_local(&who, Some("m"), limits, 300).unwrap();
}

#[test]
fn settling_to_the_real_usage_gives_back_an_overlarge_bound_and_charges_a_short_one() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let who = caller("k");
    let limits = figures(Some(10), Some(1000), None, None);
    // Charged a 300-token bound; the upstream counted 120.
    let first = limiter.admit_local(&who, Some("m"), limits, 300).unwrap();
    assert_eq!(first.standing.tokens.unwrap().remaining, 700);
    first.settle_to(120);
    let next = limiter.admit_local(&who, Some("m"), limits, 100).unwrap();
    assert_eq!(next.standing.tokens.unwrap().remaining, 780);
    // Requests are never given back: both still count against RPM.
    assert_eq!(next.standing.requests.unwrap().remaining, 8);
    // Short by 400: charged past the estimate, on every token bucket.
    next.settle_to(500);
    let refused = limiter
        .admit_local(&who, Some("m"), limits, 500)
        .err()
        .unwrap();
    assert_eq!((refused.kind, refused.used), (Kind::Tpm, 620));
}

#[test]
fn reset_and_remaining_recover_as_time_passes() {
    let (limiter, clock, _) = limiter(&LimitsConfig::default());
    let who = caller("k");
    let limits = figures(Some(60), Some(6000), None, None);
    let first = limiter
        .admit_local(&who, Some("m"), limits, 600)
        .unwrap()
        .standing;
    let requests = first.requests.unwrap();
    let tokens = first.tokens.unwrap();
    assert_eq!(
        (requests.remaining, requests.reset),
        (59, Duration::from_secs(1))
    );
    assert_eq!(
        (tokens.remaining, tokens.reset),
        (5400, Duration::from_secs(6))
    );
    clock.advance(Duration::from_millis(2500));
    let later = limiter
        .admit_local(&who, Some("m"), limits, 1)
        .unwrap()
        .standing;
    assert_eq!(later.requests.unwrap().reset, Duration::from_secs(1));
    assert_eq!(later.tokens.unwrap().reset, Duration::from_millis(3510));
    assert_eq!(later.tokens.unwrap().remaining, 5649);
}

#[test]
fn models_and_keys_have_separate_buckets() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let limits = figures(Some(1), None, None, None);
    limiter
        .admit_local(&caller("a"), Some("gpt-4o"), limits, 1)
        .unwrap();
    limiter
        .admit_local(&caller("a"), Some("gpt-4o-mini"), limits, 1)
        .unwrap();
    limiter
        .admit_local(&caller("b"), Some("gpt-4o"), limits, 1)
        .unwrap();
    assert!(
        limiter
            .admit_local(&caller("a"), Some("gpt-4o"), limits, 1)
            .is_err()
    );
}

#[test]
fn too_large_and_zero_limits_refuse_without_a_retry_time() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let who = caller("k");
    let big = limiter
        .admit_local(
            &who,
            Some("gpt-4o"),
            figures(None, Some(30_000), None, None),
            31_538,
        )
        .err()
        .unwrap();
    assert_eq!(big.retry_after, None);
    assert!(big.to_string().starts_with(
        "Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 31538."
    ));
    let zero = limiter
        .admit_local(&who, Some("gpt-4o"), figures(Some(0), None, None, None), 1)
        .err()
        .unwrap();
    assert_eq!(
        (zero.kind, zero.limit, zero.retry_after),
        (Kind::Rpm, 0, None)
    );
}

#[test]
fn in_flight_permits_are_released_on_drop() {
    let config = LimitsConfig {
        max_in_flight_per_key: Some(2),
        ..LimitsConfig::default()
    };
    let (limiter, _clock, _) = limiter(&config);
    let who = caller("k");
    let limits = Limits::default();
    let one = limiter.admit_local(&who, Some("m"), limits, 1).unwrap();
    let two = limiter.admit_local(&who, Some("n"), limits, 1).unwrap();
    let refused = limiter
        .admit_local(&who, Some("m"), limits, 1)
        .err()
        .unwrap();
    assert_eq!(refused.kind, Kind::Concurrency);
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
    limiter
        .admit_local(&caller("other"), Some("m"), limits, 1)
        .unwrap();
    drop(one);
    two.settle(5);
    limiter.admit_local(&who, Some("m"), limits, 1).unwrap();
    assert!(limiter.in_flight.lock().unwrap().is_empty());
}

#[test]
fn the_estimate_is_prompt_plus_output_cap_or_default() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    assert_eq!(limiter.estimate(Endpoint::ChatCompletions, 10, Some(5)), 15);
    assert_eq!(limiter.estimate(Endpoint::ChatCompletions, 10, None), 1034);
    assert_eq!(limiter.estimate(Endpoint::Embeddings, 10, None), 10);
    let off = LimitsConfig {
        enabled: false,
        ..LimitsConfig::default()
    };
    let (limiter, _clock, _) = self::limiter(&off);
    assert_eq!(limiter.figures(&caller("k"), Some("m")), None);
}

fn teammate(id: &str, team: &str) -> Identity {
    Identity {
        team_id: Some(team.to_owned()),
        ..caller(id)
    }
}

fn rpm(n: u64) -> RateFigures {
    RateFigures {
        rpm: Some(n),
        ..RateFigures::default()
    }
}

#[test]
fn a_key_total_counts_across_its_models() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let limits = Limits {
        model: rpm(10),
        key_total: rpm(3),
        ..Limits::default()
    };
    let who = caller("tg-k");
    for model in ["gpt-4o", "gpt-4o-mini", "o3"] {
        let admitted = limiter.admit_local(&who, Some(model), limits, 1).unwrap();
        admitted.settle(0);
    }
    let refused = limiter
        .admit_local(&who, Some("gpt-4.1"), limits, 1)
        .err()
        .unwrap();
    assert_eq!((refused.kind, refused.scope), (Kind::Rpm, Scope::Key));
    assert!(
        refused.to_string().starts_with(
            "Rate limit reached for gpt-4.1 on key tg-k (all models) on requests per min \
             (RPM): Limit 3, Used 3, Requested 1."
        ),
        "{refused}"
    );
    // The headers report the tightest line: the total's, not the model's 10.
    let line = refused.standing.requests.unwrap();
    assert_eq!((line.limit, line.remaining), (3, 0));
    // Another key is not affected.
    limiter
        .admit_local(&caller("tg-other"), Some("gpt-4o"), limits, 1)
        .unwrap();
}

#[test]
fn a_team_total_counts_across_its_keys_and_a_refusal_takes_nothing() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let limits = Limits {
        model: figures(Some(100), None, None, None).model,
        team_total: RateFigures {
            tpm: Some(100),
            ..RateFigures::default()
        },
        ..Limits::default()
    };
    let (a, b) = (teammate("a", "research"), teammate("b", "research"));
    let first = limiter.admit_local(&a, Some("m"), limits, 60).unwrap();
    assert_eq!(first.standing.tokens.unwrap().remaining, 40);
    let refused = limiter
        .admit_local(&b, Some("n"), limits, 60)
        .err()
        .unwrap();
    assert_eq!((refused.kind, refused.scope), (Kind::Tpm, Scope::Team));
    assert!(
        refused
            .to_string()
            .contains("in team research (all models)"),
        "{refused}"
    );
    // b's RPM on n was given back when the team total refused.
    assert_eq!(refused.standing.requests.unwrap().remaining, 100);
    // Another team has its own total; the first admission's cancel frees the team's.
    limiter
        .admit_local(&teammate("c", "ops"), Some("m"), limits, 60)
        .unwrap();
    first.cancel();
    limiter.admit_local(&b, Some("n"), limits, 60).unwrap();
}

#[test]
fn reconciliation_charges_every_scope() {
    let (limiter, _clock, _) = limiter(&LimitsConfig::default());
    let tpm = |n| RateFigures {
        tpm: Some(n),
        ..RateFigures::default()
    };
    let limits = Limits {
        model: tpm(10_000),
        key_total: tpm(1_000),
        team_total: tpm(5_000),
    };
    let who = teammate("k", "t");
    limiter
        .admit_local(&who, Some("m"), limits, 100)
        .unwrap()
        .settle(900);
    // 900 used of the key's 1,000 across models, though a new model was never charged.
    let next = limiter
        .admit_local(&who, Some("other"), limits, 50)
        .unwrap();
    assert_eq!(next.standing.tokens.unwrap().remaining, 50);
    assert!(
        limiter
            .admit_local(&who, Some("third"), limits, 100)
            .is_err()
    );
}
