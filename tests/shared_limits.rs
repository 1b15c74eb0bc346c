//! Rate limits shared through Redis: two tollgate servers on one Redis enforce one
//! limit; when Redis is down, `fail_open` falls back to each server's own buckets and
//! `fail_closed` answers 503. Each test sends a bearer of its own, so its buckets are
//! its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::harness::{Harness, assert_openai_error};
use common::mock_upstream::scripted_usage;
use serde_json::{Value, json};
use tollgate::config::{Config, LimitsBackend, RateFigures, StoreFailure, TierConfig};

fn ask() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
           "max_tokens": 10})
}

/// tollgate with limits on in `backend`: every caller in a tier of `rpm` requests per
/// minute and nothing else.
async fn limited(upstream: &str, redis_url: &str, rpm: u64, tweak: fn(&mut Config)) -> Harness {
    let redis_url = redis_url.to_owned();
    Harness::start_with(upstream, move |config| {
        config.limits.enabled = true;
        config.limits.backend = LimitsBackend::Redis;
        config.limits.redis_url = redis_url;
        // Generous: on a loaded CI machine a 250 ms call can time out, and a fallback to
        // per-server buckets would be a different test (the fail_open one below).
        config.limits.redis_timeout = std::time::Duration::from_secs(2);
        config.limits.default_tier = "shared".to_owned();
        config.limits.tiers.insert(
            "shared".to_owned(),
            TierConfig {
                rpm: Some(rpm),
                ..TierConfig::default()
            },
        );
        tweak(config);
    })
    .await
}

async fn metrics(tollgate: &Harness) -> String {
    let response = tollgate.get("/metrics").send().await.unwrap();
    response.text().await.unwrap()
}

#[tokio::test]
async fn two_servers_on_one_redis_enforce_one_limit() {
    let Some(redis) = common::redis::url() else {
        return;
    };
    let upstream = scripted_usage().await;
    let a = limited(&upstream.base_url, &redis, 60, |_| {}).await;
    let b = limited(&upstream.base_url, &redis, 60, |_| {}).await;
    let bearer = common::redis::fresh_bearer();
    let started = Instant::now();
    let sends = (0..200).map(|i| {
        let tollgate = if i % 2 == 0 { &a } else { &b };
        tollgate.chat(&bearer, &ask()).send()
    });
    let mut served = [0, 0];
    let mut refused = 0;
    for (i, response) in futures_util::future::join_all(sends)
        .await
        .into_iter()
        .enumerate()
    {
        let response = response.unwrap();
        assert_eq!(
            response.headers()["x-ratelimit-limit-requests"],
            "60",
            "every answer reports the shared limit"
        );
        match response.status().as_u16() {
            200 => served[i % 2] += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // GCRA with burst = limit: 60 at once, then one a second.
    let refilled = started.elapsed().as_secs() + 1;
    let total = served[0] + served[1];
    assert!(
        (60..=60 + refilled).contains(&total),
        "{total} served in {:?} ({served:?})",
        started.elapsed()
    );
    assert!(served[0] > 0 && served[1] > 0, "{served:?}");
    assert_eq!(total + refused, 200);
    assert_eq!(upstream.received().len() as u64, total);
    // Neither server fell back to its own buckets.
    for tollgate in [&a, &b] {
        let text = metrics(tollgate).await;
        assert!(
            !text.contains("tollgate_rate_limit_backend_errors_total{"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_total_across_models_is_shared_by_two_servers() {
    let Some(redis) = common::redis::url() else {
        return;
    };
    let upstream = scripted_usage().await;
    // Per model: 1,000 a minute; across the caller's models: 20.
    let tweak = |config: &mut Config| {
        config.limits.key_total = RateFigures {
            rpm: Some(20),
            ..RateFigures::default()
        };
    };
    let a = limited(&upstream.base_url, &redis, 1_000, tweak).await;
    let b = limited(&upstream.base_url, &redis, 1_000, tweak).await;
    let bearer = common::redis::fresh_bearer();
    let started = Instant::now();
    let models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1"];
    let sends = (0..80).map(|i| {
        let tollgate = if i % 2 == 0 { &a } else { &b };
        let mut body = ask();
        body["model"] = json!(models[i % 4]);
        tollgate.chat(&bearer, &body).send()
    });
    let mut served = 0;
    for response in futures_util::future::join_all(sends).await {
        let response = response.unwrap();
        assert_eq!(response.headers()["x-ratelimit-limit-requests"], "20");
        match response.status().as_u16() {
            200 => served += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // 20 at once, then one every 3 s.
    let refilled = started.elapsed().as_secs() / 3 + 1;
    assert!((20..=20 + refilled).contains(&served), "{served}");
    assert_eq!(upstream.received().len() as u64, served);
}

#[tokio::test]
async fn redis_down_and_fail_open_serves_with_local_limits_and_counts_it() {
    let upstream = scripted_usage().await;
    let down = common::redis::down_url().await;
    let tollgate = limited(&upstream.base_url, &down, 2, |_| {}).await;
    let bearer = common::redis::fresh_bearer();
    for remaining in ["1", "0"] {
        let ok = tollgate.chat(&bearer, &ask()).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], remaining);
    }
    let refused = tollgate.chat(&bearer, &ask()).send().await.unwrap();
    assert_eq!(refused.status(), 429, "the local limit still holds");
    let text = metrics(&tollgate).await;
    assert!(
        text.contains("tollgate_rate_limit_backend_errors_total{action=\"local\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn redis_down_and_fail_closed_answers_503() {
    let upstream = scripted_usage().await;
    let down = common::redis::down_url().await;
    let tollgate = limited(&upstream.base_url, &down, 2, |config| {
        config.limits.on_redis_error = StoreFailure::FailClosed;
    })
    .await;
    let bearer = common::redis::fresh_bearer();
    for _ in 0..2 {
        let response = tollgate.chat(&bearer, &ask()).send().await.unwrap();
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(error["code"], "rate_limit_store_unavailable", "{body}");
        assert_eq!(error["type"], "server_error", "{body}");
    }
    assert!(upstream.received().is_empty(), "nothing was forwarded");
    let text = metrics(&tollgate).await;
    assert!(
        text.contains("tollgate_rate_limit_backend_errors_total{action=\"refused\"} 2"),
        "{text}"
    );
}
