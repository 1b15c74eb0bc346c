//! Shadow comparisons: a sampled request is mirrored to the candidate only after the
//! client has its answer, a slow candidate holds neither the client nor more than its
//! places, and the shadow rows stay out of budgets and spend, in a report of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use common::db::backends;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, json};
use common::routed::{add_upstream, answer, asked, open_reservations, route_rows};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tollgate::config::{AuthMode, ShadowConfig};
use tollgate::ledger::{Kind, LedgerRow, Outcome, RowRoute, ShadowMark};
use tollgate::metering::{Usage, UsageSource};

/// A candidate whose first request waits for the test (which learns of its arrival),
/// and whose later ones are answered at once; every answer says "Paris" and bills a
/// million output tokens.
struct Candidate {
    base_url: String,
    arrived: mpsc::UnboundedReceiver<()>,
    release: Option<oneshot::Sender<()>>,
}

async fn candidate() -> Candidate {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, released) = oneshot::channel::<()>();
    let gate = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let app = Router::new().fallback(move |request: Request| {
        let (gate, arrived) = (gate.clone(), arrived_tx.clone());
        async move {
            let body = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .unwrap();
            let model: Value = serde_json::from_slice(&body).unwrap();
            let _ = arrived.send(());
            if let Some(released) = gate.lock().await.take() {
                let _ = released.await;
            }
            let model = model["model"].as_str().unwrap_or_default().to_owned();
            json(StatusCode::OK, &answer(&model, 10, 1_000_000, "Paris"))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Candidate {
        base_url: format!("http://{addr}/v1"),
        arrived,
        release: Some(release),
    }
}

fn ask() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}],
           "max_tokens": 5})
}

#[tokio::test]
async fn a_slow_candidate_never_holds_the_client_and_its_rows_are_not_spend() {
    for backend in backends().await {
        let primary =
            MockUpstream::start(|r| json(StatusCode::OK, &answer(&asked(r), 10, 5, "Paris"))).await;
        let mut candidate = candidate().await;
        let (url, candidate_url) = (backend.url.clone(), candidate.base_url.clone());
        let tollgate = Harness::start_with(&primary.base_url, move |config| {
            config.database.url = url;
            config.auth.mode = AuthMode::Keys;
            add_upstream(config, "candidate", &candidate_url);
            config.shadow = vec![ShadowConfig {
                model: "gpt-4o-mini".to_owned(),
                candidate: "gpt-4.1-nano".to_owned(),
                sample: 1.0,
                upstream: Some("candidate".to_owned()),
            }];
            config.routing.shadow_max_in_flight = 1;
        })
        .await;
        // $0.01: one shadow answer ($0.40) would spend it forty times over.
        let key = tollgate
            .key(
                "research",
                json!({"name": "notebook", "budget_usd": "0.01", "budget_period": "total"}),
            )
            .await;

        // Bounded only so that a client held by its shadow fails instead of hanging.
        let first =
            tokio::time::timeout(Duration::from_secs(60), tollgate.chat(&key, &ask()).send())
                .await
                .expect("the client's answer does not wait for the candidate")
                .unwrap();
        assert_eq!(first.status(), 200);
        let body: Value = first.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Paris");
        // The client has its whole answer; only now does the mirror reach the
        // candidate, which the test keeps waiting.
        candidate.arrived.recv().await.unwrap();
        // While it waits, the one place for shadows is taken: the next sampled request
        // is answered and not mirrored.
        let second = tollgate.chat(&key, &ask()).send().await.unwrap();
        assert_eq!(second.status(), 200);
        second.bytes().await.unwrap();
        candidate.release.take().unwrap().send(()).unwrap();
        tollgate.flush().await;
        // Within its budget whatever the shadows cost: they are not its spend.
        let third = tollgate.chat(&key, &ask()).send().await.unwrap();
        assert_eq!(third.status(), 200, "{}", backend.name);
        third.bytes().await.unwrap();
        candidate.arrived.recv().await.unwrap();
        tollgate.flush().await;

        let store = backend.open().await;
        let rows = route_rows(&store).await;
        let (shadows, served): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.kind == "shadow");
        assert_eq!((served.len(), shadows.len()), (3, 2), "{rows:#?}");
        for shadow in &shadows {
            let of = shadow.shadow_of.as_deref().unwrap();
            let mirrored = served
                .iter()
                .find(|row| row.id == of)
                .expect("links its request");
            assert_eq!(shadow.id, format!("{of}.s0"));
            assert_eq!(shadow.request_id, mirrored.request_id);
            assert_eq!(shadow.key_id, mirrored.key_id);
            assert_eq!(shadow.model_requested.as_deref(), Some("gpt-4.1-nano"));
            assert_eq!(shadow.upstream, "candidate");
            assert_eq!(shadow.shadow_text_match, Some(true));
            assert_eq!(shadow.shadow_value_match, None, "prose has no parsed value");
            // 10 in at $0.10, 1M out at $0.40 per 1M.
            assert_eq!(shadow.cost_pico, Some(400_001_000_000));
        }
        assert_eq!(open_reservations(&store).await, 0);

        // Spend, budgets and the key's own view leave the shadows out.
        // Each served request: 10 in at $0.15 and 5 out at $0.60 per 1M, $0.0000045.
        let spend = tollgate.spend("group_by=key").await;
        assert_eq!(spend.len(), 1);
        let line = spend.values().next().unwrap();
        assert_eq!(line["requests"], 3);
        assert_eq!(line["cost_usd"], "0.0000135");
        let me: Value = tollgate
            .get("/v1/tollgate/me")
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["budgets"][0]["spent_usd"], "0.0000135", "{me}");
        let by_kind = tollgate.spend("group_by=kind").await;
        assert!(!by_kind.contains_key("shadow"), "{by_kind:?}");
        let only_shadow = tollgate.spend("group_by=kind&kind=shadow").await;
        assert_eq!(only_shadow["shadow"]["requests"], 2);

        // Their own report, in the admin API and on the dashboard.
        let report: Value = tollgate
            .admin(Method::GET, "/admin/shadow")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let line = &report["data"][0];
        assert_eq!(line["model"], "gpt-4o-mini", "{report}");
        assert_eq!(line["candidate"], "gpt-4.1-nano");
        assert_eq!(line["requests"], 2);
        assert_eq!(line["model_cost_per_request_usd"], "0.0000045");
        assert_eq!(line["candidate_cost_per_request_usd"], "0.400001");
        assert_eq!(line["text_agreement"], "1.0000");
        assert_eq!(line["value_agreement"], Value::Null);
        let dashboard: Value = tollgate
            .admin(Method::GET, "/admin/dashboard/data")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(dashboard["shadow"][0]["requests"], 2);
        assert_eq!(
            dashboard["total"]["requests"], 3,
            "spend totals leave shadows out"
        );
        let metrics = tollgate.metrics_text().await;
        for line in [
            "tollgate_shadow_requests_total{candidate=\"gpt-4.1-nano\",model=\"gpt-4o-mini\",result=\"answered\"} 2",
            "tollgate_shadow_requests_total{candidate=\"gpt-4.1-nano\",model=\"gpt-4o-mini\",result=\"skipped_busy\"} 1",
        ] {
            assert!(metrics.contains(line), "missing {line}");
        }
    }
}

#[tokio::test]
async fn streams_are_never_mirrored_and_a_sample_of_zero_mirrors_nothing() {
    let primary = MockUpstream::start(|r| {
        if r.json()["stream"] == json!(true) {
            return common::mock_upstream::sse(&common::mock_upstream::chat_chunks(
                &["x"],
                Some((1, 1)),
            ));
        }
        json(StatusCode::OK, &answer(&asked(r), 1, 1, "x"))
    })
    .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let counted = seen.clone();
    let candidate = MockUpstream::start(move |r| {
        counted.lock().unwrap().push(asked(r));
        json(StatusCode::OK, &answer(&asked(r), 1, 1, "x"))
    })
    .await;
    let candidate_url = candidate.base_url.clone();
    let tollgate = Harness::start_with(&primary.base_url, move |config| {
        add_upstream(config, "candidate", &candidate_url);
        let shadow = |model: &str, candidate: &str, sample| ShadowConfig {
            model: model.to_owned(),
            candidate: candidate.to_owned(),
            sample,
            upstream: Some("candidate".to_owned()),
        };
        config.shadow = vec![
            shadow("gpt-4o-mini", "gpt-4.1-nano", 1.0),
            shadow("gpt-4o", "gpt-4.1", 0.0),
        ];
    })
    .await;
    let mut streamed = ask();
    streamed["stream"] = json!(true);
    for _ in 0..5 {
        let response = tollgate
            .post("/v1/chat/completions")
            .json(&streamed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        let mut unsampled = ask();
        unsampled["model"] = json!("gpt-4o");
        let response = tollgate
            .post("/v1/chat/completions")
            .json(&unsampled)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    tollgate.flush().await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    // The same model, not streamed: mirrored.
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&ask())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tollgate.flush().await;
    assert_eq!(*seen.lock().unwrap(), ["gpt-4.1-nano"]);
}

/// A priced row; `shadow`: (mirrored row id, text match, value match).
fn row(
    id: &str,
    model: &str,
    usage: Usage,
    shadow: Option<(&str, Option<bool>, Option<bool>)>,
) -> LedgerRow {
    let price = common::rows::priced(None, Some(model), &usage);
    LedgerRow {
        id: id.to_owned(),
        request_id: format!("req-{}", id.split('.').next().unwrap()),
        upstream_request_id: None,
        ts_ms: tollgate::clock::now_ms() - 60_000,
        caller: "fp:abc".to_owned(),
        upstream: "openai".to_owned(),
        endpoint: "chat.completions".to_owned(),
        model_requested: Some(model.to_owned()),
        model_answered: None,
        streamed: false,
        usage,
        usage_source: UsageSource::Upstream,
        status: 200,
        outcome: Outcome::Ok,
        latency_ms: 1,
        ttfb_ms: Some(1),
        price,
        key_id: Some("fp:abc".to_owned()),
        team_id: None,
        kind: if shadow.is_some() {
            Kind::Shadow
        } else {
            Kind::Realtime
        },
        service_tier_requested: None,
        service_tier: Some("default".to_owned()),
        route: RowRoute {
            shadow: shadow.map(|(of, text_match, value_match)| ShadowMark {
                of: of.to_owned(),
                text_match,
                value_match,
            }),
            ..RowRoute::default()
        },
        provider: "openai".to_owned(),
        tokenizer: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spend_shadow_reports_cost_per_request_and_agreement_on_each_backend() {
    let million_in = Usage {
        prompt_tokens: 1_000_000,
        ..Usage::default()
    };
    for backend in backends().await {
        let store = backend.open().await;
        // Three mirrored gpt-4o-mini requests ($0.15 each) against gpt-4.1-nano ($0.10):
        // two answers matched exactly, one differed in text but matched as JSON; one
        // more mirror failed (nothing to compare).
        store
            .insert(&[
                row("a", "gpt-4o-mini", million_in, None),
                row("b", "gpt-4o-mini", million_in, None),
                row("c", "gpt-4o-mini", million_in, None),
                row(
                    "a.s0",
                    "gpt-4.1-nano",
                    million_in,
                    Some(("a", Some(true), None)),
                ),
                row(
                    "b.s0",
                    "gpt-4.1-nano",
                    million_in,
                    Some(("b", Some(true), Some(true))),
                ),
                row(
                    "c.s0",
                    "gpt-4.1-nano",
                    million_in,
                    Some(("c", Some(false), Some(true))),
                ),
            ])
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tollgate.toml");
        std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", backend.url)).unwrap();
        let run = |args: &[&str]| {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .env_remove("TOLLGATE_CONFIG")
                .env_remove("TOLLGATE_DATABASE_URL")
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        let report: Value =
            serde_json::from_str(&run(&["spend", "--shadow", "--format", "json"])).unwrap();
        let line = &report["data"][0];
        assert_eq!(report["data"].as_array().unwrap().len(), 1, "{report}");
        for (field, want) in [
            ("model", json!("gpt-4o-mini")),
            ("candidate", json!("gpt-4.1-nano")),
            ("requests", json!(3)),
            ("model_cost_per_request_usd", json!("0.15")),
            ("candidate_cost_per_request_usd", json!("0.1")),
            ("model_cost_usd", json!("0.45")),
            ("candidate_cost_usd", json!("0.3")),
            ("compared", json!(3)),
            ("text_matches", json!(2)),
            ("text_agreement", json!("0.6666")),
            ("value_compared", json!(2)),
            ("value_agreement", json!("1.0000")),
        ] {
            assert_eq!(line[field], want, "{field} on {}: {report}", backend.name);
        }
        let table = run(&["spend", "--shadow"]);
        assert!(table.contains("0.6666 (2/3)"), "{table}");
        // Spend itself leaves them out: three requests, $0.45.
        let spend: Value =
            serde_json::from_str(&run(&["spend", "--by", "model", "--format", "json"])).unwrap();
        assert_eq!(spend["data"].as_array().unwrap().len(), 1, "{spend}");
        assert_eq!(spend["data"][0]["requests"], 3);
        assert_eq!(spend["data"][0]["cost_usd"], "0.45");
    }
}
