//! Rate limits against the real server: tiers per key, team and default; RPM, TPM, RPD
//! and TPD tripping with OpenAI's 429s; the x-ratelimit-* headers on every answer; TPM
//! reconciled with the real usage; limits per model; the in-flight cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::StatusCode;
use common::harness::{Harness, assert_openai_error, refused_url};
use common::mock_upstream::{
    MockUpstream, chat_chunk, chat_completion, json, scripted_usage, sse_channel,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tollgate::config::{AuthMode, Config, RateFigures, TierConfig};

fn ask(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
           "max_tokens": max_tokens})
}

/// tollgate in keys mode with limits on, after `tweak`.
async fn limited(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Harness {
    Harness::start_with(upstream, |config| {
        config.auth.mode = AuthMode::Keys;
        config.limits.enabled = true;
        tweak(config);
    })
    .await
}

#[track_caller]
fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts a rate-limit 429 of `kind` (`requests` or `tokens`); returns its message.
async fn assert_rate_limited(response: reqwest::Response, kind: &str) -> (String, Vec<String>) {
    assert_eq!(response.status(), 429);
    let retry = ["retry-after", "retry-after-ms", "x-should-retry"]
        .map(|name| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        })
        .to_vec();
    let body: Value = response.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(error["param"], Value::Null, "{body}");
    (error["message"].as_str().unwrap().to_owned(), retry)
}

#[tokio::test]
async fn rpm_trips_at_the_limit_with_openai_shaped_429s_and_headers() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |_| {}).await;
    let key = tollgate.key("t", json!({"rpm": 2})).await;
    for remaining in ["1", "0"] {
        let ok = tollgate
            .chat(&key, &ask("gpt-4o-mini", 10))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(header(&ok, "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), remaining);
        // The default tier's TPM (tier-1: 200,000), charged ~18 tokens per request.
        assert_eq!(header(&ok, "x-ratelimit-limit-tokens"), "200000");
        let left: u64 = header(&ok, "x-ratelimit-remaining-tokens").parse().unwrap();
        assert!((199_900..200_000).contains(&left), "{left}");
        let reset = header(&ok, "x-ratelimit-reset-requests");
        assert!(reset.ends_with('s') && !reset.contains(' '), "{reset}");
    }
    let refused = tollgate
        .chat(&key, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&refused, "x-ratelimit-limit-tokens"), "200000");
    let (message, retry) = assert_rate_limited(refused, "requests").await;
    assert!(
        message.starts_with(
            "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 2, Used 2, \
             Requested 1. Please try again in 2"
        ),
        "{message}"
    );
    // One request frees up every 30 s: the next fits in just under 30 s.
    assert_eq!(retry[0], "30");
    let ms: u64 = retry[1].parse().unwrap();
    assert!((29_000..=30_000).contains(&ms), "{ms}");
    assert_eq!(
        upstream.received().len(),
        2,
        "the refused request never left"
    );

    let metrics = tollgate
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_rate_limited_requests_total{kind=\"rpm\",team=\"t\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn tpm_charges_the_estimate_then_the_real_usage_beyond_it() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |_| {}).await;
    let key = tollgate.key("t", json!({"tpm": 1000})).await;
    // Estimated at ~8 prompt + 10 output tokens, but the upstream bills 900.
    let first = tollgate
        .chat(&key, &ask("gpt-4o-mini", 10))
        .header("x-mock-prompt", "900")
        .header("x-mock-completion", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let left: u64 = header(&first, "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert!((980..1000).contains(&left), "{left}");
    tollgate.flush().await;
    // Without reconciliation ~208 more would fit.
    let second = tollgate
        .chat(&key, &ask("gpt-4o-mini", 200))
        .send()
        .await
        .unwrap();
    let left: u64 = header(&second, "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert!(left < 110, "{left}");
    let (message, retry) = assert_rate_limited(second, "tokens").await;
    assert!(
        message.starts_with(
            "Rate limit reached for gpt-4o-mini on tokens per min (TPM): Limit 1000, Used 9"
        ),
        "{message}"
    );
    assert!(message.contains("Please try again in"), "{message}");
    assert!(!retry[0].is_empty() && !retry[1].is_empty(), "{retry:?}");
    // Smaller requests still fit in what is left.
    let small = tollgate
        .chat(&key, &ask("gpt-4o-mini", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
}

#[tokio::test]
async fn a_prompt_is_charged_its_bound_when_it_fits_its_count_when_not_and_settles_to_usage() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |_| {}).await;
    let key = tollgate.key("t", json!({"tpm": 100})).await;
    // 180 bytes of English, ~40 tokens: at a byte a token the bound (~197 with the cap)
    // is larger than the whole TPM, the count (~57) is not.
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(4);
    let long = json!({"model": "gpt-4o-mini", "max_tokens": 10,
                      "messages": [{"role": "user", "content": text}]});
    let first = tollgate
        .chat(&key, &long)
        .header("x-mock-prompt", "20")
        .header("x-mock-completion", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200, "admitted on its count");
    let left: u64 = header(&first, "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert!(
        (35..=50).contains(&left),
        "charged the count plus the cap: {left}"
    );
    tollgate.flush().await;
    // Settled to the upstream's 20 prompt tokens plus the 10 of the cap: 30 used. A
    // short prompt is charged its bound (~9) and its cap.
    let second = tollgate
        .chat(&key, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let left: u64 = header(&second, "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert!((45..=55).contains(&left), "{left}");
}

#[tokio::test]
async fn a_request_larger_than_the_whole_tpm_is_refused_at_once() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |_| {}).await;
    let key = tollgate.key("t", json!({"tpm": 1000})).await;
    let refused = tollgate
        .chat(&key, &ask("gpt-4o", 5000))
        .send()
        .await
        .unwrap();
    let (message, retry) = assert_rate_limited(refused, "tokens").await;
    assert!(
        message.starts_with(
            "Request too large for gpt-4o on tokens per min (TPM): Limit 1000, Requested 50"
        ),
        "{message}"
    );
    // No wait makes room, so the SDKs are told not to retry.
    assert_eq!(retry, ["", "", "false"]);
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn limits_apply_per_model_and_per_key() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |_| {}).await;
    let a = tollgate.key("t", json!({"name": "a", "rpm": 1})).await;
    let b = tollgate.key("t", json!({"name": "b", "rpm": 1})).await;
    for (key, model) in [(&a, "gpt-4o-mini"), (&a, "gpt-4o"), (&b, "gpt-4o-mini")] {
        let ok = tollgate.chat(key, &ask(model, 10)).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{model}");
    }
    let refused = tollgate.chat(&a, &ask("gpt-4o", 10)).send().await.unwrap();
    let (message, _) = assert_rate_limited(refused, "requests").await;
    assert!(message.contains("for gpt-4o on"), "{message}");
}

#[tokio::test]
async fn totals_across_models_cap_a_key_and_a_team() {
    let upstream = scripted_usage().await;
    let rpm = |n| RateFigures {
        rpm: Some(n),
        ..RateFigures::default()
    };
    let tollgate = limited(&upstream.base_url, |config| {
        config.limits.key_total = rpm(3);
        config.limits.team_total = rpm(4);
    })
    .await;
    let a = tollgate.key("research", json!({"name": "a"})).await;
    let b = tollgate.key("research", json!({"name": "b"})).await;
    let models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"];
    for (model, remaining) in models.iter().zip(["2", "1", "0"]) {
        let ok = tollgate.chat(&a, &ask(model, 10)).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{model}");
        // The tightest line: the key's total, not the model's 500.
        assert_eq!(header(&ok, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), remaining);
    }
    let refused = tollgate.chat(&a, &ask("o3", 10)).send().await.unwrap();
    let (message, _) = assert_rate_limited(refused, "requests").await;
    assert!(
        message.starts_with("Rate limit reached for o3 on key tg-")
            && message
                .contains(" (all models) on requests per min (RPM): Limit 3, Used 3, Requested 1."),
        "{message}"
    );
    // b has room of its own, but the team's four are nearly gone.
    let ok = tollgate.chat(&b, &ask("gpt-4o", 10)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-ratelimit-limit-requests"), "4");
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), "0");
    let refused = tollgate.chat(&b, &ask("gpt-4o", 10)).send().await.unwrap();
    let (message, _) = assert_rate_limited(refused, "requests").await;
    assert!(
        message.contains("for gpt-4o in team research (all models) on requests per min"),
        "{message}"
    );
    assert_eq!(upstream.received().len(), 4, "refused requests never left");
}

#[tokio::test]
async fn rpd_and_tpd_trip_from_a_custom_tier() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |config| {
        let daily = TierConfig {
            rpd: Some(2),
            ..TierConfig::default()
        };
        config.limits.tiers.insert("daily".into(), daily);
        let tokens = TierConfig {
            tpd: Some(100),
            ..TierConfig::default()
        };
        config.limits.tiers.insert("tokens".into(), tokens);
    })
    .await;
    let daily = tollgate
        .key("t", json!({"name": "d", "tier": "daily"}))
        .await;
    for _ in 0..2 {
        let ok = tollgate
            .chat(&daily, &ask("gpt-4o-mini", 10))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        // A tier without per-minute figures sends no x-ratelimit-* headers.
        assert!(ok.headers().get("x-ratelimit-limit-requests").is_none());
    }
    let refused = tollgate
        .chat(&daily, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    let (message, retry) = assert_rate_limited(refused, "requests").await;
    assert!(
        message.contains("on requests per day (RPD): Limit 2, Used 2"),
        "{message}"
    );
    // Half a day until one frees up: beyond what the SDKs honour, but still sent.
    assert_eq!(retry[0], "43200");

    let tokens = tollgate
        .key("t", json!({"name": "tk", "tier": "tokens"}))
        .await;
    let ok = tollgate
        .chat(&tokens, &ask("gpt-4o-mini", 40))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = tollgate
        .chat(&tokens, &ask("gpt-4o-mini", 60))
        .send()
        .await
        .unwrap();
    let (message, _) = assert_rate_limited(refused, "tokens").await;
    assert!(
        message.contains("on tokens per day (TPD): Limit 100"),
        "{message}"
    );
}

#[tokio::test]
async fn the_key_override_beats_the_key_tier_beats_the_team_tier_beats_the_default() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |config| {
        let gold = TierConfig {
            rpm: Some(3),
            tpm: Some(3000),
            ..TierConfig::default()
        };
        config.limits.tiers.insert("gold".into(), gold);
    })
    .await;
    let team = tollgate
        .admin(Method::POST, "/admin/teams")
        .json(&json!({"name": "tiered", "tier": "tier-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(team.status(), 201);
    let cases = [
        ("plain", "t", json!({}), "500", "200000"),
        ("team", "tiered", json!({}), "5000", "2000000"),
        (
            "key",
            "tiered",
            json!({"tier": "tier-3"}),
            "5000",
            "4000000",
        ),
        ("custom", "tiered", json!({"tier": "gold"}), "3", "3000"),
        (
            "override",
            "tiered",
            json!({"tier": "gold", "rpm": 7}),
            "7",
            "3000",
        ),
    ];
    for (name, team, mut body, rpm, tpm) in cases {
        body["name"] = json!(name);
        let key = tollgate.key(team, body).await;
        let ok = tollgate
            .chat(&key, &ask("gpt-4o-mini", 10))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{name}");
        assert_eq!(header(&ok, "x-ratelimit-limit-requests"), rpm, "{name}");
        assert_eq!(header(&ok, "x-ratelimit-limit-tokens"), tpm, "{name}");
    }
    // A tier nobody configured is refused by the admin API.
    let unknown = tollgate
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"team": "t", "name": "x", "tier": "platinum"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn a_limit_of_zero_blocks_every_request_for_good() {
    let upstream = scripted_usage().await;
    let tollgate = limited(&upstream.base_url, |config| {
        let figures = tollgate::config::RateFigures {
            rpm: Some(0),
            ..Default::default()
        };
        config.limits.models.insert("gpt-4o".into(), figures);
    })
    .await;
    let key = tollgate.key("t", json!({})).await;
    let refused = tollgate
        .chat(&key, &ask("gpt-4o", 10))
        .send()
        .await
        .unwrap();
    let (message, retry) = assert_rate_limited(refused, "requests").await;
    assert!(message.contains("Limit 0"), "{message}");
    assert_eq!(retry, ["", "", "false"]);
    let other = tollgate
        .chat(&key, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn passthrough_callers_get_the_default_tier_per_fingerprint() {
    let upstream = scripted_usage().await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.limits.enabled = true;
        config.limits.default_tier = "tiny".into();
        let tiny = TierConfig {
            rpm: Some(1),
            ..TierConfig::default()
        };
        config.limits.tiers.insert("tiny".into(), tiny);
    })
    .await;
    for caller in ["sk-one", "sk-two"] {
        let ok = tollgate
            .chat(caller, &ask("gpt-4o-mini", 10))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(header(&ok, "x-ratelimit-limit-requests"), "1");
    }
    let refused = tollgate
        .chat("sk-one", &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    assert_rate_limited(refused, "requests").await;
}

/// An upstream that holds a request with `x-hold` open as a stream until the test
/// drops its sender, and answers every other at once.
async fn holding_upstream() -> (MockUpstream, Arc<Mutex<Vec<UnboundedSender<Bytes>>>>) {
    let held: Arc<Mutex<Vec<UnboundedSender<Bytes>>>> = Arc::default();
    let senders = held.clone();
    let upstream = MockUpstream::start(move |received| {
        if received.headers.contains_key("x-hold") {
            let (tx, response) = sse_channel();
            let first = chat_chunk(json!({"role": "assistant", "content": "hi"}), None, false);
            tx.send(Bytes::from(format!("data: {first}\n\n"))).unwrap();
            senders.lock().unwrap().push(tx);
            response
        } else {
            json(StatusCode::OK, &chat_completion(3, 2))
        }
    })
    .await;
    (upstream, held)
}

#[tokio::test]
async fn the_in_flight_cap_refuses_until_a_request_finishes_however_it_ends() {
    let (upstream, held) = holding_upstream().await;
    let tollgate = limited(&upstream.base_url, |config| {
        config.limits.max_in_flight_per_key = Some(1);
    })
    .await;
    let key = tollgate.key("t", json!({})).await;
    let other = tollgate.key("t", json!({"name": "other"})).await;
    let mut streaming = ask("gpt-4o-mini", 10);
    streaming["stream"] = json!(true);

    let open = tollgate
        .chat(&key, &streaming)
        .header("x-hold", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let refused = tollgate
        .chat(&key, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    let (message, retry) = assert_rate_limited(refused, "requests").await;
    assert!(message.contains("in flight"), "{message}");
    assert_eq!(retry[..2], ["1", "1000"]);
    // Another key has its own places.
    let ok = tollgate
        .chat(&other, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // The stream ends: the place is free again.
    held.lock().unwrap().clear();
    open.bytes().await.unwrap();
    tollgate.flush().await;
    let ok = tollgate
        .chat(&key, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // The client hangs up mid-stream; once the exchange ends, the place is free.
    let open = tollgate
        .chat(&key, &streaming)
        .header("x-hold", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    drop(open);
    held.lock().unwrap().clear();
    tollgate.flush().await;
    let ok = tollgate
        .chat(&key, &ask("gpt-4o-mini", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn an_upstream_failure_frees_its_in_flight_place() {
    let tollgate = limited(&refused_url().await, |config| {
        config.limits.max_in_flight_per_key = Some(1);
    })
    .await;
    let key = tollgate.key("t", json!({})).await;
    for _ in 0..3 {
        let failed = tollgate
            .chat(&key, &ask("gpt-4o-mini", 10))
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 502);
        // Errors after admission still say where the key stands.
        assert_eq!(header(&failed, "x-ratelimit-limit-requests"), "500");
    }
}

/// A team whose tier the config no longer defines stops start-up, naming the team,
/// instead of silently running on the default tier's limits.
#[tokio::test]
async fn an_unknown_tier_in_the_database_fails_start_naming_the_team() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let mut first = Harness::start_with(&upstream.base_url, |config| {
        config.auth.mode = AuthMode::Keys;
        config
            .limits
            .tiers
            .insert("gold".into(), TierConfig::default());
    })
    .await;
    let created = first
        .admin(reqwest::Method::POST, "/admin/teams")
        .json(&serde_json::json!({"name": "vip", "tier": "gold"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    first.shutdown().await;

    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", first.db.display());
    config.ledger.spill_dir = first.db.with_extension("spill");
    config.upstreams[0].base_url = upstream.base_url.clone();
    let error = match tollgate::server::start(config, &std::collections::HashMap::new()).await {
        Ok(_) => panic!("started with a team on an unknown tier"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("team `vip` has unknown tier `gold`"),
        "{error}"
    );
}
