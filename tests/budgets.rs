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

/// Holds the lock every budget check needs, as a slow replica or a long transaction
/// would: SQLite's write lock, or an exclusive lock on the reservations on Postgres.
enum HeldLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl HeldLock {
    async fn take(backend: &Backend) -> Self {
        use sqlx::Connection as _;
        if backend.name == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(&backend.url).await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Self::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(&backend.url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE budget_reservations IN ACCESS EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            Self::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Self::Postgres(mut conn) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// A database that answers, only not in time, is load, not an outage: under the
/// default `fail_open` the check is refused with a retryable 503 rather than admitted
/// unchecked, so a budget cannot overshoot when load peaks.
#[tokio::test]
async fn a_busy_database_refuses_budget_checks_with_a_retryable_503_never_admits_them() {
    for backend in backends().await {
        let upstream = scripted_usage().await;
        let url = backend.url.clone();
        let tollgate = Harness::start_with(&upstream.base_url, move |config| {
            config.auth.mode = AuthMode::Keys;
            config.database.url = url;
            config.database.acquire_timeout = Duration::from_secs(1);
        })
        .await;
        let key = tollgate
            .key("busy", json!({"budget_usd": "1", "budget_period": "daily"}))
            .await;
        let free = tollgate.key("busy", json!({})).await;
        let first = tollgate.chat(&key, &ask(10)).send().await.unwrap();
        assert_eq!(first.status(), 200, "{}", backend.name);
        tollgate.flush().await;

        let lock = HeldLock::take(&backend).await;
        let started = Instant::now();
        let refused = tollgate.chat(&key, &ask(10)).send().await.unwrap();
        let waited = started.elapsed();
        assert_eq!(refused.status(), 503, "{}", backend.name);
        assert_eq!(refused.headers()["retry-after"], "1");
        let body: Value = refused.json().await.unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(error["code"], "budget_store_busy", "{body}");
        assert_eq!(error["type"], "server_error");
        // It waited for the lock as long as configured, not forever.
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
            "{}: waited {waited:?}",
            backend.name
        );
        // A key without a budget never waits on the database.
        assert_eq!(
            tollgate
                .chat(&free, &ask(10))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        lock.release().await;

        let again = tollgate.chat(&key, &ask(10)).send().await.unwrap();
        assert_eq!(again.status(), 200, "{}", backend.name);
        assert_eq!(
            upstream.received().len(),
            3,
            "the refused request never left"
        );
        let metrics = tollgate.metrics_text().await;
        assert!(
            metrics.contains("tollgate_budget_check_errors_total{action=\"busy\"} 1"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("tollgate_budget_check_errors_total{action=\"admitted\"}"),
            "{metrics}"
        );
    }
}
