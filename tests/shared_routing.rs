//! Routing state shared through Redis: two tollgate servers in one process, sharing
//! nothing but a Redis, learn from each other's answers: a target one was told to
//! leave alone, the other leaves alone too; headroom one saw run out, the other
//! rations. Each test uses model names of its own, so its state is its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::harness::{Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, json};
use common::routed::{add_upstream, answer, asked, chat, error, ok_as_asked, route};
use serde_json::Value;
use tollgate::config::{Config, LimitsBackend};

fn shared(redis: &str) -> impl FnOnce(&mut Config) + use<> {
    let redis = redis.to_owned();
    move |config: &mut Config| {
        config.limits.backend = LimitsBackend::Redis;
        config.limits.redis_url = redis;
        config.limits.redis_timeout = Duration::from_secs(2);
    }
}

/// A model name no other test (or earlier run) uses.
fn fresh(model: &str) -> String {
    format!("{model}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_retry_after_seen_by_one_replica_is_honoured_by_the_other() {
    let Some(redis) = common::redis::url() else {
        return;
    };
    let (first_model, second_model) = (fresh("primary"), fresh("backup"));
    let first = MockUpstream::start(|_| {
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "slow down");
        response
            .headers_mut()
            .insert("retry-after", "20".parse().unwrap());
        response
    })
    .await;
    let second = MockUpstream::start(|r| ok_as_asked(r, 1, 1)).await;
    let start = || {
        let (backup, redis) = (second.base_url.clone(), redis.clone());
        let (a, b) = (first_model.clone(), second_model.clone());
        Harness::start_with(&first.base_url, move |config| {
            shared(&redis)(config);
            add_upstream(config, "backup", &backup);
            config.routes = vec![route("smart", &[(&a, "openai"), (&b, "backup")])];
        })
    };
    let (one, two) = (start().await, start().await);
    let response = one
        .post("/v1/chat/completions")
        .json(&chat("smart"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-attempts"], "2");
    assert_eq!(first.received().len(), 1);
    // One sends what it learnt; two reads it (each does so on its own every 500 ms).
    one.sync_routing().await;
    two.sync_routing().await;
    let response = two
        .post("/v1/chat/completions")
        .json(&chat("smart"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-tollgate-attempts").is_none());
    assert_eq!(
        first.received().len(),
        1,
        "the other replica left it alone too"
    );
    assert_eq!(asked(&second.last()), second_model);
}

#[tokio::test]
async fn headroom_one_replica_saw_run_out_is_rationed_by_the_other() {
    let Some(redis) = common::redis::url() else {
        return;
    };
    let model = fresh("gpt-4o-mini");
    let upstream = MockUpstream::start(|r| {
        let mut response = json(StatusCode::OK, &answer(&asked(r), 1, 1, "ok"));
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        headers.insert("x-ratelimit-limit-requests", "500".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "30s".parse().unwrap());
        response
    })
    .await;
    let start = || {
        let redis = redis.clone();
        Harness::start_with(&upstream.base_url, move |config| {
            shared(&redis)(config);
            config.routing.headroom.reserve_requests = Some(50);
            config.routing.headroom.queue_timeout = Duration::from_millis(50);
        })
    };
    let (one, two) = (start().await, start().await);
    // The first answer says the organisation has no requests left for 30 s.
    let response = one
        .post("/v1/chat/completions")
        .json(&chat(&model))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    one.sync_routing().await;
    two.sync_routing().await;
    let refused = two
        .post("/v1/chat/completions")
        .json(&chat(&model))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let body: Value = refused.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("requests"), Some("rate_limit_exceeded"))
    );
    assert_eq!(
        upstream.received().len(),
        1,
        "refused before reaching the upstream"
    );
    let metrics = two.metrics_text().await;
    let gauge = format!(
        "tollgate_upstream_headroom{{kind=\"requests\",model=\"{model}\",upstream=\"openai\"}} 0"
    );
    assert!(metrics.contains(&gauge), "missing {gauge}");
}
