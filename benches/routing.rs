//! What routing adds to one request when no fallback is taken, call for call as the
//! proxy makes them (src/proxy/mod.rs and src/proxy/routed.rs): the plan, the first
//! target's cooldown and headroom checks, the body rewritten for the target's model,
//! the answer's `x-ratelimit-*` report read into the headroom view, the attempt
//! counted, the routed-model header, and the shadow sample.
//!
//! - `routing/unconfigured`: no routing configured at all: what every request pays
//!   for the routing code being there.
//! - `routing/direct`: routing configured (aliases, a headroom reserve, team shares,
//!   a shadow rule, a downgrade), but the request names a model no alias covers: what
//!   every plain request pays once routing is on.
//! - `routing/alias`: the request names an alias; its first target answers.
//! - `routing/alias_under_reserve`: the same while the upstream's headroom is under its
//!   reserve, so the request is admitted by team share.
//! - `routing/rewrite_only`: of `alias`, the body rewrite alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use tollgate::config::{
    Config, DowngradeConfig, RouteConfig, ShadowConfig, TargetConfig, TeamConfig, UpstreamConfig,
};
use tollgate::metering::Endpoint;
use tollgate::metrics::Metrics;
use tollgate::routing::Routing;

const BODY: &str = r#"{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say something about a fox."}],"model":"smart","max_tokens":256}"#;

fn config() -> Config {
    let mut config = Config {
        upstreams: vec![
            UpstreamConfig {
                name: "openai".into(),
                models: vec!["gpt-*".into(), "o*".into()],
                ..UpstreamConfig::default()
            },
            UpstreamConfig {
                name: "azure".into(),
                base_url: "https://example.openai.azure.com/openai".into(),
                ..UpstreamConfig::default()
            },
        ],
        ..Config::default()
    };
    let target = |model: &str, upstream: &str| TargetConfig {
        model: model.into(),
        upstream: Some(upstream.into()),
    };
    config.routes = vec![RouteConfig {
        alias: "smart".into(),
        targets: vec![target("gpt-4.1", "openai"), target("gpt-4o", "azure")],
        max_attempts: None,
    }];
    config.routing.headroom.reserve_tokens = Some(1_000_000);
    for (team, share) in [("batch", 1), ("web", 3)] {
        config
            .teams
            .insert(team.into(), TeamConfig { share: Some(share) });
    }
    config.shadow = vec![ShadowConfig {
        model: "gpt-4o-mini".into(),
        candidate: "gpt-4.1-nano".into(),
        sample: 0.01,
        upstream: None,
    }];
    config.downgrades = vec![DowngradeConfig {
        models: [("gpt-4o".into(), "gpt-4o-mini".into())].into(),
        ..DowngradeConfig::default()
    }];
    config.validate().unwrap();
    config
}

/// An answer's head as OpenAI sends it: the organisation's standing on the model.
fn answer_headers(remaining_tokens: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json".to_owned()),
        ("x-request-id", "req_0123456789abcdef".to_owned()),
        ("openai-processing-ms", "412".to_owned()),
        ("x-ratelimit-limit-requests", "10000".to_owned()),
        ("x-ratelimit-limit-tokens", "30000000".to_owned()),
        ("x-ratelimit-remaining-requests", "9999".to_owned()),
        ("x-ratelimit-remaining-tokens", remaining_tokens.to_string()),
        ("x-ratelimit-reset-requests", "6ms".to_owned()),
        ("x-ratelimit-reset-tokens", "1m0s".to_owned()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    headers
}

/// One request's routing, as the proxy runs it.
fn request(
    routing: &Routing,
    model: &str,
    body: &Bytes,
    answer: &HeaderMap,
    row_id: &str,
) -> usize {
    let requested = Some(model);
    let plan = routing.plan(requested, || Some(0)).unwrap();
    let tokens = if routing.needs_tokens(&plan, requested) {
        1_000
    } else {
        0
    };
    let target = plan.target(0, requested).unwrap();
    if plan.routed() {
        assert!(routing.cooling(&target).is_none());
    }
    let debit = routing
        .admit(&target, "web", tokens, false)
        .now_or_never()
        .expect("admitted without waiting")
        .expect("room for the team");
    let sent = match target.model.filter(|m| Some(*m) != requested) {
        Some(model) => tollgate::routing::with_model(body, model).unwrap(),
        None => body.clone(),
    };
    routing.answered(&target, 200, answer, debit);
    let mut head = HeaderMap::new();
    if plan.routed() {
        routing.attempted(&target, "answered");
        if let Some(value) = target.model.and_then(|m| HeaderValue::from_str(m).ok()) {
            head.insert("x-tollgate-routed-model", value);
        }
    }
    let mirrors = routing.mirrors(target.model, Endpoint::ChatCompletions, false, row_id);
    sent.len() + head.len() + mirrors.len() + usize::from(plan.len() > 1)
}

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new().unwrap();
    let routing = Routing::new(&config(), vec![true, true], &metrics).unwrap();
    let body = Bytes::from_static(BODY.as_bytes());
    let roomy = answer_headers(25_000_000);
    let row_id = uuid::Uuid::now_v7().to_string();
    let plain = Routing::new(&Config::default(), vec![true], &Metrics::new().unwrap()).unwrap();
    c.bench_function("routing/unconfigured", |b| {
        b.iter(|| request(&plain, black_box("gpt-4o-mini"), &body, &roomy, &row_id));
    });
    c.bench_function("routing/direct", |b| {
        b.iter(|| request(&routing, black_box("gpt-4o-mini"), &body, &roomy, &row_id));
    });
    c.bench_function("routing/alias", |b| {
        b.iter(|| request(&routing, black_box("smart"), &body, &roomy, &row_id));
    });
    // Every answer leaves 900,000 tokens of a 1,000,000 reserve: always rationed,
    // never exhausted.
    let low = answer_headers(900_000);
    request(&routing, "smart", &body, &low, &row_id);
    c.bench_function("routing/alias_under_reserve", |b| {
        b.iter(|| request(&routing, black_box("smart"), &body, &low, &row_id));
    });
    c.bench_function("routing/rewrite_only", |b| {
        b.iter(|| tollgate::routing::with_model(black_box(&body), black_box("gpt-4.1")));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
