//! A Postgres that is down when tollgate starts: tollgate starts anyway, serves, spills
//! rows, says so on /readyz, and stores every row once the database is back. (SQLite is
//! a local file: one that cannot be opened is a configuration error and stops start-up.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::db::{backends, count_and_completion};
use common::forwarder::Forwarder;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, chat_completion, json};
use serde_json::{Value, json};
use tollgate::config::{AuthMode, StoreFailure};

async fn ready(tollgate: &Harness) -> (u16, Value) {
    let response = tollgate.get("/readyz").send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn postgres_down_at_start_serves_spills_and_catches_up() {
    for backend in backends().await {
        let Some(server) = backend.server_addr() else {
            continue; // SQLite: nothing to take down.
        };
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(4, 2))).await;
        let forwarder = Forwarder::start(server).await;
        forwarder.cut();
        let url = backend.url_through(forwarder.addr);
        let tollgate = Harness::start_with(&upstream.base_url, |config| {
            config.auth.mode = AuthMode::Passthrough;
            config.database.url = url;
        })
        .await;

        for _ in 0..3 {
            let response = tollgate
                .post("/v1/chat/completions")
                .json(&json!({"model": "gpt-4o-mini", "messages": []}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        tollgate.flush().await; // returns once the rows are safe in the spill file
        let (status, body) = ready(&tollgate).await;
        assert_eq!(status, 200, "serving while spilling is ready: {body}");
        assert_eq!(body["database"], "unreachable", "{body}");
        assert_eq!(body["ledger"], "spilling", "{body}");
        assert_eq!(body["ledger_spilled"], 3, "{body}");

        forwarder.restore();
        let store = backend.open().await;
        eventually("the spilled rows to be replayed", async || {
            count_and_completion(&store).await == (3, 6)
        })
        .await;
        eventually("readiness to recover", async || {
            let (_, body) = ready(&tollgate).await;
            body["database"] == "ok" && body["ledger_spilled"] == 0
        })
        .await;
    }
}

#[tokio::test]
async fn keys_mode_waits_for_its_keys_and_says_why() {
    for backend in backends().await {
        let Some(server) = backend.server_addr() else {
            continue;
        };
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
        let forwarder = Forwarder::start(server).await;
        forwarder.cut();
        let url = backend.url_through(forwarder.addr);
        let tollgate = Harness::start_with(&upstream.base_url, |config| {
            config.auth.mode = AuthMode::Keys;
            config.database.url = url;
        })
        .await;
        let (status, body) = ready(&tollgate).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["keys"], "not_loaded", "{body}");
        let response = tollgate
            .chat(
                &format!("tg-{}", "a".repeat(43)),
                &json!({"model": "gpt-4o-mini"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "key_store_unavailable");

        forwarder.restore();
        eventually("keys to load", async || ready(&tollgate).await.0 == 200).await;
        let key = tollgate.key("late", json!({})).await;
        let response = tollgate.chat(&key, &json!({"model": "gpt-4o-mini", "messages": []}));
        assert_eq!(response.send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn budget_checks_follow_the_store_failure_policy() {
    for backend in backends().await {
        let Some(server) = backend.server_addr() else {
            continue;
        };
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
        let forwarder = Forwarder::start(server).await;
        let start = |policy: StoreFailure| {
            let url = backend.url_through(forwarder.addr);
            Harness::start_with(&upstream.base_url, move |config| {
                config.auth.mode = AuthMode::Keys;
                config.database.url = url;
                config.budgets.on_store_error = policy;
            })
        };
        let open = start(StoreFailure::FailOpen).await;
        let closed = start(StoreFailure::FailClosed).await;
        let key = open.key("b", json!({"budget_usd": 5})).await;
        eventually("the other replica to load the key", async || {
            closed
                .get("/v1/tollgate/me")
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await;

        forwarder.cut();
        let ask = json!({"model": "gpt-4o-mini", "messages": [], "max_tokens": 5});
        let admitted = open.chat(&key, &ask).send().await.unwrap();
        assert_eq!(
            admitted.status(),
            200,
            "fail_open admits from the cached key"
        );
        let refused = closed.chat(&key, &ask).send().await.unwrap();
        assert_eq!(refused.status(), 503);
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "budget_store_unavailable");
        let metrics = open
            .get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("tollgate_budget_check_errors_total{action=\"admitted\"} 1"),
            "{metrics}"
        );
        forwarder.restore();
    }
}
