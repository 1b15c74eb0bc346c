//! `/metrics`, its labels and `/readyz` against the real server: traffic with priced,
//! unpriced, rate-limited and budget-refused requests, then a scrape checked against
//! the ledger (cost to the last pico-dollar), against every metric the Grafana
//! dashboard and the alert rules in deploy/ query, and with per-key labels off and a
//! scrape token on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use common::harness::{Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, chat_chunks, chat_completion, json, sse};
use serde_json::{Value, json};
use sqlx::Row as _;
use tollgate::config::{AuthMode, Config, LimitsBackend, Secret, StoreFailure};
use tollgate::pricing::Cost;

const DASHBOARD: &str = include_str!("../deploy/grafana/dashboards/tollgate.json");
const ALERTS: &str = include_str!("../deploy/prometheus/alerts.yml");

/// Answers with the model it was asked for (so an unknown one stays unpriced), the
/// service tier it was asked for, and the usage the client scripts with `x-mock-prompt`
/// / `x-mock-completion`; streams (as `gpt-4o-mini-2024-07-18`) when asked to.
async fn echo_upstream() -> MockUpstream {
    MockUpstream::start(|received| {
        let number = |name: &str| {
            received
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(7)
        };
        let (prompt, completion) = (number("x-mock-prompt"), number("x-mock-completion"));
        if received.json()["stream"] == true {
            return sse(&chat_chunks(&["Hi", " there"], Some((prompt, completion))));
        }
        let mut body = chat_completion(prompt, completion);
        body["model"] = received.json()["model"].clone();
        if let Some(tier) = received.json().get("service_tier") {
            body["service_tier"] = tier.clone();
        }
        json(StatusCode::OK, &body)
    })
    .await
}

async fn keyed(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Harness {
    Harness::start_with(upstream, |config| {
        config.auth.mode = AuthMode::Keys;
        config.limits.enabled = true;
        tweak(config);
    })
    .await
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20})
}

async fn send(tollgate: &Harness, key: &str, model: &str, prompt: u64) -> StatusCode {
    let response = tollgate
        .chat(key, &ask(model))
        .header("x-mock-prompt", prompt.to_string())
        .header("x-mock-completion", "13")
        .send()
        .await
        .unwrap();
    let status = response.status();
    response.bytes().await.unwrap();
    status
}

async fn scrape(tollgate: &Harness, token: Option<&str>) -> reqwest::Response {
    let mut request = tollgate.get("/metrics");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// One sample line: name, labels, value as written.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: String,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            // Label values here never hold commas or quotes: split naively.
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.to_owned(),
            }
        })
        .collect()
}

/// Every `tollgate_*` metric a PromQL text names, histogram suffixes stripped.
fn queried_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("tollgate_") {
        let start = at + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        names.insert(name.to_owned());
        at = end;
    }
    names
}

/// The PromQL of the dashboard's panels and variables, and of the alert rules.
fn deploy_queries() -> String {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        queries.push(variable["definition"].as_str().unwrap().to_owned());
    }
    assert!(queries.len() > 10, "the dashboard has its panels");
    for line in ALERTS.lines() {
        let line = line.trim();
        // `expr:` lines and the continuation lines of folded expressions.
        if !line.starts_with('#') && !line.starts_with("summary:") {
            queries.push(line.to_owned());
        }
    }
    queries.join("\n")
}

/// Ledger spend by (team name, key prefix, priced model, served tier), in pico-USD.
type SpendKey = (String, String, String, String);

async fn ledger_spend(tollgate: &Harness) -> BTreeMap<SpendKey, u128> {
    tollgate.flush().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", tollgate.db.display()))
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT t.name AS team, r.caller, r.priced_model, r.service_tier, r.cost_pico \
         FROM requests r \
         JOIN teams t ON t.id = r.team_id WHERE r.cost_pico IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let mut spend = BTreeMap::new();
    for row in rows {
        let cost: i64 = row.get("cost_pico");
        *spend
            .entry((
                row.get("team"),
                row.get("caller"),
                row.get("priced_model"),
                row.get("service_tier"),
            ))
            .or_default() += u128::try_from(cost).unwrap();
    }
    spend
}

#[tokio::test]
async fn metrics_cover_the_dashboard_and_alerts_and_cost_equals_the_ledger() {
    let upstream = echo_upstream().await;
    let tollgate = keyed(&upstream.base_url, |_| {}).await;
    let alice = tollgate
        .key("research", json!({"name": "alice", "rpm": 1}))
        .await;
    let bob = tollgate.key("research", json!({"name": "bob"})).await;
    let carol = tollgate
        .key(
            "sales",
            json!({"name": "carol", "budget_usd": "0.001", "budget_period": "daily"}),
        )
        .await;

    // Odd token counts: costs with many significant digits, summed over requests.
    assert_eq!(send(&tollgate, &alice, "gpt-4o-mini", 1234).await, 200);
    assert_eq!(send(&tollgate, &alice, "gpt-4o-2024-08-06", 777).await, 200);
    assert_eq!(
        send(&tollgate, &alice, "gpt-4o-mini", 1).await,
        429,
        "rpm 1 per model"
    );
    assert_eq!(send(&tollgate, &bob, "gpt-4o-mini", 98_765).await, 200);
    // Bob's gpt-4o-mini again, served at priority (its own sheet) and at flex (which
    // gpt-4o-mini does not offer: standard rates, and counted).
    for tier in ["priority", "flex"] {
        let mut body = ask("gpt-4o-mini");
        body["service_tier"] = json!(tier);
        let response = tollgate
            .chat(&bob, &body)
            .header("x-mock-prompt", "4567")
            .header("x-mock-completion", "13")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{tier}");
    }
    assert_eq!(
        send(&tollgate, &bob, "house-llama", 50).await,
        200,
        "unpriced"
    );
    let stream = tollgate
        .chat(
            &bob,
            &json!({"model": "gpt-4o-mini", "stream": true, "messages": []}),
        )
        .header("x-mock-prompt", "4321")
        .header("x-mock-completion", "99")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    stream.bytes().await.unwrap();
    assert_eq!(send(&tollgate, &carol, "gpt-4o-mini", 333).await, 200);
    let big = tollgate
        .chat(
            &carol,
            &json!({"model": "gpt-4o", "max_tokens": 100_000, "messages": []}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 429, "the worst case does not fit the budget");
    assert_eq!(
        big.json::<Value>().await.unwrap()["error"]["code"],
        "insufficient_quota"
    );

    let spend = ledger_spend(&tollgate).await;
    let response = scrape(&tollgate, None).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let samples = samples(&text);

    // Every metric deploy/ queries is exported.
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    let queried = queried_metrics(&deploy_queries());
    assert!(queried.len() >= 12, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");

    // Cost per team, key, model and served tier equals the ledger's, exactly.
    let scraped: BTreeMap<SpendKey, u128> = samples
        .iter()
        .filter(|s| s.name == "tollgate_cost_usd_total")
        .map(|s| {
            let label = |name: &str| s.labels[name].clone();
            let cost =
                Cost::from_decimal_str(&s.value).unwrap_or_else(|e| panic!("{}: {e:?}", s.value));
            (
                (
                    label("team"),
                    label("key"),
                    label("model"),
                    label("service_tier"),
                ),
                cost.as_pico(),
            )
        })
        .collect();
    assert_eq!(scraped, spend, "{text}");
    assert_eq!(
        spend.len(),
        6,
        "alice x2 models, bob at 3 tiers, carol: {spend:?}"
    );
    assert!(
        text.contains("tollgate_unpriced_tier_total{model=\"gpt-4o-mini\",tier=\"flex\"} 1"),
        "{text}"
    );
    assert!(
        spend.values().any(|pico| pico % 1_000_000 != 0),
        "some cost has sub-micro digits: {spend:?}"
    );

    let value = |name: &str, wanted: &[(&str, &str)]| -> Vec<String> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                wanted
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value.clone())
            .collect()
    };
    let alice_prefix = &alice[..11];
    assert_eq!(
        value(
            "tollgate_requests_total",
            &[
                ("key", alice_prefix),
                ("model", "gpt-4o-mini"),
                ("status_class", "2xx")
            ]
        ),
        ["1"]
    );
    assert_eq!(
        value(
            "tollgate_requests_total",
            &[
                ("key", alice_prefix),
                ("model", "gpt-4o-mini"),
                ("status_class", "4xx")
            ]
        ),
        ["1"],
        "the refused request is counted too"
    );
    // A dated snapshot folds into its family; an unknown name into `other`.
    assert_eq!(
        value(
            "tollgate_requests_total",
            &[("key", alice_prefix), ("model", "gpt-4o")]
        ),
        ["1"]
    );
    assert_eq!(
        value(
            "tollgate_tokens_total",
            &[("model", "other"), ("type", "prompt")]
        ),
        ["50"]
    );
    assert_eq!(
        value(
            "tollgate_unpriced_requests_total",
            &[("model", "house-llama")]
        ),
        ["1"]
    );
    assert_eq!(
        value(
            "tollgate_tokens_total",
            &[
                ("key", &bob[..11]),
                ("model", "gpt-4o-mini"),
                ("type", "prompt")
            ]
        ),
        ["112220"],
        "98,765 buffered + 4,321 streamed + 4,567 at priority + 4,567 at flex"
    );
    assert_eq!(
        value(
            "tollgate_rate_limited_requests_total",
            &[("kind", "rpm"), ("team", "research")]
        ),
        ["1"]
    );
    assert_eq!(
        value(
            "tollgate_rate_limited_requests_total",
            &[("kind", "budget"), ("team", "sales")]
        ),
        ["1"]
    );
    let ratio = value(
        "tollgate_budget_used_ratio",
        &[("scope", "key"), ("team", "sales"), ("key", &carol[..11])],
    );
    let ratio: f64 = ratio[0].parse().unwrap();
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
    assert_eq!(value("tollgate_in_flight_requests", &[]), ["0"]);
    assert_eq!(value("tollgate_ledger_queue_depth", &[]), ["0"]);
    assert_eq!(
        value(
            "tollgate_ledger_write_failures_total",
            &[("target", "database")]
        ),
        ["0"]
    );
    // Seven forwarded priced requests (one streamed) and one unpriced, each timed once.
    let timed: u64 = value("tollgate_request_duration_seconds_count", &[])
        .iter()
        .map(|v| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(timed, 8);

    // No secret in any label: only the 11-character display prefix.
    for key in [&alice, &bob, &carol] {
        assert!(!text.contains(&key[11..]), "a key secret is in /metrics");
    }
}

#[tokio::test]
async fn without_per_key_labels_series_are_per_team_and_a_token_guards_the_scrape() {
    let upstream = echo_upstream().await;
    let tollgate = keyed(&upstream.base_url, |config| {
        config.metrics.per_key_labels = false;
        config.metrics.bearer_token = Some(Secret::new("scrape-5ecret".to_owned()));
    })
    .await;
    let one = tollgate
        .key("research", json!({"name": "one", "rpm": 1}))
        .await;
    let two = tollgate
        .key(
            "research",
            json!({"name": "two", "budget_usd": "5", "budget_period": "monthly"}),
        )
        .await;
    for key in [&one, &one, &two] {
        send(&tollgate, key, "gpt-4o-mini", 100).await;
    }

    for token in [None, Some("scrape-5ecre"), Some("wrong")] {
        let refused = scrape(&tollgate, token).await;
        assert_eq!(refused.status(), 401, "{token:?}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(assert_openai_error(&body)["code"], "invalid_api_key");
    }
    let response = scrape(&tollgate, Some("scrape-5ecret")).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let samples = samples(&text);
    assert!(
        samples.iter().all(|s| !s.labels.contains_key("key")),
        "no series has a key label:\n{text}"
    );
    let merged: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == "tollgate_requests_total"
                && s.labels.get("status_class").map(String::as_str) == Some("2xx")
        })
        .collect();
    assert_eq!(merged.len(), 1, "both keys in one team series: {merged:?}");
    assert_eq!(merged[0].value, "2");
    assert_eq!(merged[0].labels["team"], "research");
    // Team budgets would stay; key budgets have no series without the key label.
    assert!(!text.contains("tollgate_budget_used_ratio{"), "{text}");
}

async fn readyz(upstream: &str, tweak: impl FnOnce(&mut Config)) -> (StatusCode, Value) {
    let tollgate = Harness::start_with(upstream, tweak).await;
    let response = tollgate.get("/readyz").send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn readyz_reports_redis_and_fails_only_when_its_outage_refuses_requests() {
    let upstream = echo_upstream().await;
    let down = common::redis::down_url().await;
    let redis = |url: String, policy: StoreFailure| {
        move |config: &mut Config| {
            config.limits.backend = LimitsBackend::Redis;
            config.limits.redis_url = url;
            config.limits.on_redis_error = policy;
        }
    };

    let (status, body) = readyz(&upstream.base_url, |_| {}).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["degraded"], json!([]), "{body}");
    assert!(body.get("redis").is_none(), "no redis configured: {body}");

    let (status, body) = readyz(
        &upstream.base_url,
        redis(down.clone(), StoreFailure::FailOpen),
    )
    .await;
    assert_eq!(status, 200, "fail_open: each replica limits alone: {body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["redis"], "unreachable");
    assert_eq!(body["degraded"], json!(["redis"]));

    let (status, body) = readyz(&upstream.base_url, redis(down, StoreFailure::FailClosed)).await;
    assert_eq!(
        status, 503,
        "fail_closed: limited requests would all fail: {body}"
    );
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["redis"], "unreachable");

    let Some(url) = common::redis::url() else {
        return;
    };
    let (status, body) = readyz(&upstream.base_url, redis(url, StoreFailure::FailClosed)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redis"], "ok");
    assert_eq!(body["degraded"], json!([]));
}
