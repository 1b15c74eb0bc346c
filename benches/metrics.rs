//! What recording one metered request in the metrics costs on the request path: the
//! label-handle lookup, the request, token and cost counters and three histograms, on a
//! registry already holding a thousand callers' series, as on a busy gateway. Also a
//! scrape of that registry, which runs off the request path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::metering::Usage;
use tollgate::metrics::{Caller, Metrics, Observation};
use tollgate::pricing::Cost;

fn observation<'a>(caller: &'a Caller, usage: &'a Usage) -> Observation<'a> {
    Observation {
        caller,
        model: "gpt-4o-mini",
        endpoint: "chat.completions",
        service_tier: "default",
        provider: "openai",
        status: 200,
        usage,
        cost: Some(Cost::from_pico(4_275_000)),
        duration: Duration::from_millis(420),
        upstream_ttfb: Some(Duration::from_millis(180)),
        overhead: Duration::from_micros(350),
    }
}

fn record(c: &mut Criterion) {
    let metrics = Metrics::new().unwrap();
    let usage = Usage {
        prompt_tokens: 1200,
        cached_tokens: 400,
        completion_tokens: 300,
        reasoning_tokens: 0,
        cache_write_tokens: 0,
    };
    for i in 0..1000 {
        let other = Caller {
            team: format!("team-{}", i % 20),
            key: format!("tg-{i:08}"),
        };
        metrics.observe(&observation(&other, &usage));
    }
    let caller = Caller {
        team: "research".into(),
        key: "tg-4kQx81Pa".into(),
    };
    c.bench_function("metrics/observe", |b| {
        b.iter(|| metrics.observe(&observation(black_box(&caller), black_box(&usage))))
    });
    c.bench_function("metrics/render_1000_callers", |b| {
        b.iter(|| black_box(metrics.render().unwrap().len()))
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
