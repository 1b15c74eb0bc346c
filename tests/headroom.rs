//! Organisation headroom: once an upstream reports its tokens under the reserve, teams
//! share what is left by weight, a team over its share waits and then gets tollgate's
//! own 429, and nothing is sent that the upstream said it no longer has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::harness::{Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, json};
use common::routed::{answer, asked, chat};
use serde_json::Value;
use tollgate::config::{AuthMode, TeamConfig};
use tollgate::metering::{Endpoint, tokens};

/// Requests of headroom left after the first answer.
const CAPACITY: i64 = 200;
/// Requests each team sends at once.
const FLOOD: usize = 150;

/// An upstream whose organisation has `tokens` left: each request takes `cost` (what
/// tollgate estimates for it), every answer reports what is left with a reset a minute
/// away, and a request it has no room for is refused and counted as overdrawn.
struct Org {
    upstream: MockUpstream,
    overdrawn: Arc<AtomicI64>,
    by_team: Arc<Mutex<HashMap<String, usize>>>,
}

async fn org(tokens: i64, cost: i64) -> Org {
    let left = Arc::new(AtomicI64::new(tokens));
    let overdrawn = Arc::new(AtomicI64::new(0));
    let by_team = Arc::new(Mutex::new(HashMap::new()));
    let (l, o, t) = (left.clone(), overdrawn.clone(), by_team.clone());
    let upstream = MockUpstream::start(move |received| {
        let team = received.headers["x-test-team"].to_str().unwrap().to_owned();
        let after = l.fetch_sub(cost, Ordering::SeqCst) - cost;
        if after < 0 {
            o.fetch_add(1, Ordering::SeqCst);
            return json(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({"error": {}}),
            );
        }
        *t.lock().unwrap().entry(team).or_default() += 1;
        let mut response = json(StatusCode::OK, &answer(&asked(received), 5, 5, "ok"));
        let headers = response.headers_mut();
        headers.insert(
            "x-ratelimit-remaining-tokens",
            after.to_string().parse().unwrap(),
        );
        headers.insert("x-ratelimit-limit-tokens", "100000000".parse().unwrap());
        headers.insert("x-ratelimit-reset-tokens", "60s".parse().unwrap());
        response
    })
    .await;
    Org {
        upstream,
        overdrawn,
        by_team,
    }
}

#[tokio::test]
async fn under_the_reserve_two_teams_share_by_weight_and_nothing_goes_past_the_headroom() {
    // What tollgate charges each request against headroom: its prompt counted with
    // the tokenizer, plus its max_tokens.
    let body = chat("gpt-4o-mini");
    let prompt = tokens::count_prompt(Endpoint::ChatCompletions, "gpt-4o-mini", &body);
    let cost = i64::try_from(prompt).unwrap() + 20;
    // The first answer leaves CAPACITY requests' worth, far under the reserve.
    let org = org((CAPACITY + 1) * cost, cost).await;
    let tollgate = Harness::start_with(&org.upstream.base_url, |config| {
        config.auth.mode = AuthMode::Keys;
        config.routing.headroom.reserve_tokens = Some(1_000_000_000);
        config.routing.headroom.queue_timeout = Duration::from_millis(200);
        for (team, share) in [("batch", 1), ("web", 3)] {
            config
                .teams
                .insert(team.to_owned(), TeamConfig { share: Some(share) });
        }
    })
    .await;
    let keys = [
        (
            "batch",
            tollgate
                .key("batch", serde_json::json!({"name": "nightly"}))
                .await,
        ),
        (
            "web",
            tollgate
                .key("web", serde_json::json!({"name": "site"}))
                .await,
        ),
    ];
    let send = |team: &str, key: &str| tollgate.chat(key, &body).header("x-test-team", team).send();
    // The first answer brings the view; then each team is seen once, one at a time.
    assert_eq!(send("web", &keys[1].1).await.unwrap().status(), 200);
    for (team, key) in &keys {
        assert_eq!(send(team, key).await.unwrap().status(), 200);
    }
    let flood = keys
        .iter()
        .flat_map(|(team, key)| (0..FLOOD).map(move |_| (*team, key.as_str())))
        .map(|(team, key)| async move { (team, send(team, key).await.unwrap()) });
    let mut admitted: HashMap<&str, usize> = HashMap::new();
    for (team, response) in futures_util::future::join_all(flood).await {
        match response.status().as_u16() {
            200 => *admitted.entry(team).or_default() += 1,
            429 => {
                let retry: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                let body: Value = response.json().await.unwrap();
                let error = assert_openai_error(&body);
                assert_eq!(error["code"], "rate_limit_exceeded");
                assert_eq!(error["type"], "tokens");
                assert!(error["message"].as_str().unwrap().contains(team), "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    assert_eq!(
        org.overdrawn.load(Ordering::SeqCst),
        0,
        "nothing past the headroom"
    );
    let seen = org.by_team.lock().unwrap().clone();
    let (batch, web) = (seen["batch"], seen["web"] - 1);
    assert_eq!(batch, admitted["batch"] + 1);
    assert_eq!(web, admitted["web"] + 1);
    assert!(
        i64::try_from(batch + web).unwrap() <= CAPACITY,
        "{batch} + {web} requests for {CAPACITY} of headroom"
    );
    #[expect(clippy::cast_precision_loss, reason = "a ratio")]
    let ratio = batch as f64 / web as f64;
    assert!(
        (ratio - 1.0 / 3.0).abs() <= 0.1 / 3.0,
        "batch {batch} : web {web} is not within 10% of 1:3"
    );
    assert!(
        batch + web > 150,
        "most of the headroom is used: {batch} + {web}"
    );

    let metrics = tollgate.metrics_text().await;
    for series in [
        "tollgate_headroom_queued_total{team=\"batch\",upstream=\"openai\"}",
        "tollgate_headroom_refused_total{team=\"batch\",upstream=\"openai\"}",
        "tollgate_headroom_rationed_total{team=\"web\",upstream=\"openai\"}",
        "tollgate_headroom_queue_wait_seconds_count{upstream=\"openai\"}",
        "tollgate_upstream_headroom{kind=\"tokens\",model=\"gpt-4o-mini\",upstream=\"openai\"}",
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
}
