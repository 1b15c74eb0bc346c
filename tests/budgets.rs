//! Budgets reserve before forwarding and settle with the ledger row, on SQLite and
//! Postgres, across replicas sharing one database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::db::{Backend, backends};
use common::harness::{Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, json, scripted_usage};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate::config::AuthMode;
use tollgate::pricing::Cost;

fn ask(max_tokens: u64) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
           "max_tokens": max_tokens})
}

async fn replica(upstream: &str, backend: &Backend, webhook: Option<String>) -> Harness {
    let url = backend.url.clone();
    Harness::start_with(upstream, move |config| {
        config.auth.mode = AuthMode::Keys;
        config.database.url = url;
        config.budgets.webhook_url = webhook;
    })
    .await
}

fn usd(text: &Value) -> Cost {
    text.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_spent_budget_refuses_with_insufficient_quota_before_forwarding() {
    for backend in backends().await {
        let upstream = scripted_usage().await;
        let tollgate = replica(&upstream.base_url, &backend, None).await;
        // $0.001 a day; one request of 6,000 prompt tokens costs $0.0009.
        let key = tollgate
            .key(
                "t",
                json!({"budget_usd": "0.001", "budget_period": "daily"}),
            )
            .await;
        let first = tollgate
            .chat(&key, &ask(10))
            .header("x-mock-prompt", "6000")
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 200, "{}", backend.name);
        // The mock bills far beyond the estimate (its usage is scripted); until the
        // row lands only the reservation counts, so wait for it.
        tollgate.flush().await;
        // Room is left for a 10-token answer (~$0.000007), not for 1,000 tokens ($0.0006).
        let big = tollgate.chat(&key, &ask(1000)).send().await.unwrap();
        assert_eq!(big.status(), 429, "{}", backend.name);
        assert_eq!(big.headers()["x-should-retry"], "false");
        let body: Value = big.json().await.unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(error["code"], "insufficient_quota");
        assert_eq!(error["type"], "insufficient_quota");
        assert!(
            error["message"].as_str().unwrap().contains("key budget"),
            "{body}"
        );
        let small = tollgate.chat(&key, &ask(10)).send().await.unwrap();
        assert_eq!(small.status(), 200, "{}", backend.name);
        assert_eq!(
            upstream.received().len(),
            2,
            "the refused request never left"
        );
        tollgate.flush().await;

        let me: Value = tollgate
            .get("/v1/tollgate/me")
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let budget = &me["budgets"][0];
        assert_eq!(budget["reserved_usd"], "0", "settled: {me}");
        // 6,000 + 1 prompt tokens at $0.15/M and 2 completion tokens at $0.60/M.
        assert_eq!(budget["spent_usd"], "0.00090135", "{me}");
    }
}

/// 100 concurrent requests through two replicas against a team budget with $0.001
/// left: the reservations, not luck, keep the total within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_cannot_spend_a_budget_twice() {
    for backend in backends().await {
        let upstream = scripted_usage().await;
        let webhook = MockUpstream::start(|_| json(StatusCode::OK, &json!({}))).await;
        let a = replica(&upstream.base_url, &backend, Some(webhook.base_url.clone())).await;
        let b = replica(&upstream.base_url, &backend, Some(webhook.base_url.clone())).await;
        let created = a
            .admin(reqwest::Method::POST, "/admin/teams")
            .json(&json!({"name": "crowd", "budget_usd": "0.01", "budget_period": "monthly"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let mut keys = Vec::new();
        for i in 0..4 {
            keys.push(a.key("crowd", json!({"name": format!("k{i}")})).await);
        }
        // Spend $0.009 of the $0.01: 60,000 prompt tokens at $0.15/M.
        let seed = a
            .chat(&keys[0], &ask(1))
            .header("x-mock-prompt", "60000")
            .header("x-mock-completion", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(seed.status(), 200);
        a.flush().await;
        // Let replica b see the keys.
        let deadline = Instant::now() + Duration::from_secs(2);
        while b
            .get("/v1/tollgate/me")
            .bearer_auth(&keys[3])
            .send()
            .await
            .unwrap()
            .status()
            != 200
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Each asks for up to 100 output tokens (~$0.000061 reserved) and uses 100
        // completion tokens + 1 prompt token ($0.00006015), never more than reserved.
        let sends = (0..100).map(|i| {
            let replica = if i % 2 == 0 { &a } else { &b };
            replica
                .chat(&keys[i % 4], &ask(100))
                .header("x-mock-completion", "100")
                .send()
        });
        let responses = join_all(sends).await;
        let mut admitted = 0;
        for response in responses {
            let response = response.unwrap();
            match response.status().as_u16() {
                200 => admitted += 1,
                429 => assert_eq!(response.headers()["x-should-retry"], "false"),
                other => panic!("{}: unexpected {other}", backend.name),
            }
        }
        a.flush().await;
        b.flush().await;
        let team = &a.spend("group_by=team").await["crowd"];
        let spent = usd(&team["cost_usd"]);
        let budget: Cost = "0.01".parse().unwrap();
        assert!(
            spent <= budget,
            "{}: spent {spent} of {budget}",
            backend.name
        );
        // $0.001 left buys 16 requests at most; reservations in flight may refuse
        // some that would have fitted, but never all of them.
        assert!(
            (1..=16).contains(&admitted),
            "{}: {admitted} admitted",
            backend.name
        );
        assert_eq!(team["requests"], 1 + admitted);

        // One soft alert (80%) and one exhausted alert for the team, though two
        // replicas saw both thresholds.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let alerts: Vec<Value> = webhook.received().iter().map(|r| r.json()).collect();
            let team_alerts: Vec<&Value> = alerts
                .iter()
                .filter(|a| a["alert"]["scope"] == "team")
                .collect();
            if team_alerts.len() >= 2 {
                let levels: Vec<&str> = team_alerts
                    .iter()
                    .map(|a| a["alert"]["level"].as_str().unwrap())
                    .collect();
                assert_eq!(levels.len(), 2, "{}: {alerts:?}", backend.name);
                assert!(levels.contains(&"soft") && levels.contains(&"exhausted"));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: alerts {alerts:?}",
                backend.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = a
            .get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            + &b.get("/metrics")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
        assert!(
            metrics.contains("tollgate_budget_alerts_total{level=\"soft\",scope=\"team\"} 1"),
            "{metrics}"
        );
    }
}
