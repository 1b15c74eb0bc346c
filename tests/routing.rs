//! Routing: an alias falls back from a target that refused (honouring its retry-after),
//! every attempt that reached an upstream has its row, a stream never falls back after
//! its first byte, connect errors and timeouts move on, and a budget past its threshold
//! is served by the cheaper model. Ledger assertions run on SQLite and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::db::backends;
use common::harness::{Harness, assert_openai_error, refused_url, silent_url};
use common::mock_upstream::{MockUpstream, chat_chunks, json, sse};
use common::routed::{
    RouteRow, add_upstream, answer, asked, chat, error, ok_as_asked, open_reservations, route,
    route_rows,
};
use serde_json::{Value, json};
use tollgate::config::{AuthMode, DowngradeConfig, DowngradeScope};

/// gpt-4o: $2.50 in, $10 out per 1M tokens; 100 in and 20 out.
const GPT_4O_100_20: i64 = 450_000_000;

#[track_caller]
fn by_attempt(rows: &[RouteRow], attempt: i64) -> &RouteRow {
    rows.iter()
        .find(|row| row.attempt == attempt)
        .unwrap_or_else(|| panic!("no attempt {attempt} in {rows:#?}"))
}

fn too_many(retry_after: &'static str) -> axum::response::Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit reached for gpt-4.1",
    );
    response
        .headers_mut()
        .insert("retry-after", retry_after.parse().unwrap());
    response
}

#[tokio::test]
async fn a_429_with_retry_after_falls_back_and_its_target_is_left_alone_until_then() {
    for backend in backends().await {
        let first = MockUpstream::start(|_| too_many("20")).await;
        let second = MockUpstream::start(|r| ok_as_asked(r, 100, 20)).await;
        let (url, backup) = (backend.url.clone(), second.base_url.clone());
        let tollgate = Harness::start_with(&first.base_url, move |config| {
            config.database.url = url;
            add_upstream(config, "backup", &backup);
            config.routes = vec![route(
                "smart",
                &[("gpt-4.1", "openai"), ("gpt-4o", "backup")],
            )];
        })
        .await;

        let response = tollgate
            .post("/v1/chat/completions")
            .json(&chat("smart"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", backend.name);
        assert_eq!(response.headers()["x-tollgate-routed-model"], "gpt-4o");
        assert_eq!(response.headers()["x-tollgate-attempts"], "2");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], "gpt-4o", "the client sees one answer");
        assert_eq!(asked(&first.last()), "gpt-4.1");
        assert_eq!(asked(&second.last()), "gpt-4o");

        // The first target said "wait 20 s": the next request goes straight on.
        let again = tollgate
            .post("/v1/chat/completions")
            .json(&chat("smart"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 200);
        assert!(again.headers().get("x-tollgate-attempts").is_none());
        assert_eq!(
            first.received().len(),
            1,
            "left alone until its retry-after"
        );
        assert_eq!(second.received().len(), 2);

        tollgate.flush().await;
        let store = backend.open().await;
        let rows = route_rows(&store).await;
        assert_eq!(rows.len(), 3, "{rows:#?}");
        let failed = rows.iter().find(|row| row.id.ends_with(".1")).unwrap();
        let answered = rows
            .iter()
            .find(|row| format!("{}.1", row.id) == failed.id)
            .expect("the answer keeps the request's row id");
        assert_eq!(
            (failed.attempt, failed.status, failed.outcome.as_str()),
            (1, 429, "upstream_error")
        );
        assert_eq!(failed.upstream, "openai");
        assert_eq!(failed.model_requested.as_deref(), Some("gpt-4.1"));
        assert_eq!(failed.cost_pico, Some(0), "a refusal bills nothing");
        assert_eq!((answered.attempt, answered.status), (2, 200));
        assert_eq!(answered.upstream, "backup");
        assert_eq!(answered.request_id, failed.request_id);
        for row in [failed, answered] {
            assert_eq!(row.model_alias.as_deref(), Some("smart"));
        }
        // Billed by the model that answered.
        assert_eq!(answered.priced_model.as_deref(), Some("gpt-4o"));
        assert_eq!(answered.cost_pico, Some(GPT_4O_100_20));
        let metrics = tollgate.metrics_text().await;
        for line in [
            "tollgate_route_fallbacks_total{alias=\"smart\",reason=\"status_429\"} 1",
            "tollgate_route_skipped_total{model=\"gpt-4.1\",reason=\"cooling_down\",upstream=\"openai\"} 1",
            "tollgate_route_cooldowns_total{upstream=\"openai\"} 1",
            "tollgate_route_attempts_total{model=\"gpt-4o\",result=\"answered\",upstream=\"backup\"} 2",
        ] {
            assert!(metrics.contains(line), "missing {line}");
        }
    }
}

#[tokio::test]
async fn when_every_target_fails_the_client_gets_the_last_error_and_every_attempt_its_row() {
    for backend in backends().await {
        let first =
            MockUpstream::start(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "first down")).await;
        // An error answer that says it billed tokens: that spend must not be lost.
        let second = MockUpstream::start(|_| {
            json(
                StatusCode::BAD_GATEWAY,
                &json!({"error": {"message": "second down", "type": "server_error", "param": null, "code": null},
                        "model": "gpt-4o", "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}),
            )
        })
        .await;
        let third =
            MockUpstream::start(|_| error(StatusCode::from_u16(529).unwrap(), "third down")).await;
        let (url, b, c) = (
            backend.url.clone(),
            second.base_url.clone(),
            third.base_url.clone(),
        );
        let tollgate = Harness::start_with(&first.base_url, move |config| {
            config.database.url = url;
            add_upstream(config, "second", &b);
            add_upstream(config, "third", &c);
            let targets = [
                ("gpt-4.1", "openai"),
                ("gpt-4o", "second"),
                ("gpt-4o-mini", "third"),
            ];
            let mut short = route("short", &targets);
            short.max_attempts = Some(2);
            config.routes = vec![route("smart", &targets), short];
        })
        .await;

        let response = tollgate
            .post("/v1/chat/completions")
            .json(&chat("smart"))
            .send()
            .await
            .unwrap();
        // Anthropic-style 529 goes out as the 503 SDKs retry; the provider's status
        // rides in x-upstream-status.
        assert_eq!(response.status(), 503, "{}", backend.name);
        assert_eq!(response.headers()["x-upstream-status"], "529");
        assert_eq!(response.headers()["x-tollgate-attempts"], "3");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "third down", "the last error");

        // max_attempts bounds the calls, whatever the targets.
        let short = tollgate
            .post("/v1/chat/completions")
            .json(&chat("short"))
            .send()
            .await
            .unwrap();
        assert_eq!(short.status(), 502);
        let body: Value = short.json().await.unwrap();
        assert_eq!(body["error"]["message"], "second down");
        assert_eq!(
            [
                first.received().len(),
                second.received().len(),
                third.received().len()
            ],
            [2, 2, 1]
        );

        tollgate.flush().await;
        let store = backend.open().await;
        let rows = route_rows(&store).await;
        let smart: Vec<RouteRow> = rows
            .iter()
            .filter(|row| row.model_alias.as_deref() == Some("smart"))
            .cloned()
            .collect();
        assert_eq!(smart.len(), 3, "{smart:#?}");
        let base = &by_attempt(&smart, 3).id;
        for (attempt, upstream, status, id) in [
            (1, "openai", 500, format!("{base}.1")),
            (2, "second", 502, format!("{base}.2")),
            (3, "third", 529, base.clone()),
        ] {
            let row = by_attempt(&smart, attempt);
            assert_eq!(
                (
                    row.upstream.as_str(),
                    row.status,
                    row.outcome.as_str(),
                    &row.id
                ),
                (upstream, status, "upstream_error", &id)
            );
        }
        assert_eq!(by_attempt(&smart, 2).prompt_tokens, 100);
        assert_eq!(by_attempt(&smart, 2).cost_pico, Some(GPT_4O_100_20));
        assert_eq!(
            rows.len(),
            5,
            "two rows for the request bounded at two attempts"
        );
    }
}

#[tokio::test]
async fn a_stream_never_falls_back_after_its_first_byte() {
    let (first, tx) = MockUpstream::start_stream().await;
    let second = MockUpstream::start(|r| ok_as_asked(r, 1, 1)).await;
    let backup = second.base_url.clone();
    let tollgate = Harness::start_with(&first.base_url, move |config| {
        add_upstream(config, "backup", &backup);
        config.routes = vec![route(
            "smart",
            &[("gpt-4o-mini", "openai"), ("gpt-4o", "backup")],
        )];
    })
    .await;
    // One event, then the upstream breaks off.
    let chunk = &chat_chunks(&["Hel"], None)[0];
    tx.send(format!("data: {chunk}\n\n").into()).unwrap();
    drop(tx);
    let mut body = chat("smart");
    body["stream"] = json!(true);
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("Hel"), "{text}");
    assert!(
        text.contains("\"error\""),
        "the client is told the stream failed: {text}"
    );
    assert!(
        second.received().is_empty(),
        "no fallback after the first byte"
    );
    let row = tollgate.only_row().await;
    assert_eq!(row.outcome, "upstream_cut");
}

#[tokio::test]
async fn a_stream_falls_back_before_its_first_byte() {
    for backend in backends().await {
        let first = MockUpstream::start(|_| error(StatusCode::SERVICE_UNAVAILABLE, "busy")).await;
        let second = MockUpstream::start(|_| sse(&chat_chunks(&["Hi", "!"], Some((9, 2))))).await;
        let (url, backup) = (backend.url.clone(), second.base_url.clone());
        let tollgate = Harness::start_with(&first.base_url, move |config| {
            config.database.url = url;
            add_upstream(config, "backup", &backup);
            config.routes = vec![route(
                "smart",
                &[("gpt-4o", "openai"), ("gpt-4o-mini", "backup")],
            )];
        })
        .await;
        let mut body = chat("smart");
        body["stream"] = json!(true);
        let response = tollgate
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-tollgate-routed-model"], "gpt-4o-mini");
        let text = response.text().await.unwrap();
        assert!(text.contains("[DONE]") && !text.contains("busy"), "{text}");
        tollgate.flush().await;
        let rows = route_rows(&backend.open().await).await;
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert_eq!(by_attempt(&rows, 1).status, 503);
        let answered = by_attempt(&rows, 2);
        assert_eq!((answered.status, answered.prompt_tokens), (200, 9));
        assert_eq!(answered.outcome, "ok");
    }
}

#[tokio::test]
async fn a_refused_connection_and_a_first_byte_timeout_move_on() {
    let third = MockUpstream::start(|r| ok_as_asked(r, 1, 1)).await;
    let (down, slow, up) = (
        refused_url().await,
        silent_url().await,
        third.base_url.clone(),
    );
    let tollgate = Harness::start_with(&up, move |config| {
        add_upstream(config, "down", &down);
        add_upstream(config, "slow", &slow);
        config.upstreams[2].first_byte_timeout = Duration::from_millis(300);
        config.routes = vec![route(
            "smart",
            &[
                ("gpt-4.1", "down"),
                ("gpt-4o", "slow"),
                ("gpt-4o-mini", "openai"),
            ],
        )];
    })
    .await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&chat("smart"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-attempts"], "3");
    let rows = tollgate.rows().await;
    // The refused connection reached no upstream: no row. The timed-out one may have
    // been billed: it has its row (zero tokens, as for any request that timed out).
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(
        rows.iter()
            .filter(|r| r.outcome == "upstream_timeout")
            .count(),
        1
    );
    assert_eq!(rows.iter().filter(|r| r.outcome == "ok").count(), 1);
    let metrics = tollgate.metrics_text().await;
    for reason in ["connect", "timeout"] {
        let line =
            format!("tollgate_route_fallbacks_total{{alias=\"smart\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "missing {line}");
    }
}

#[tokio::test]
async fn every_target_cooling_down_is_a_429_with_the_soonest_retry_after() {
    let first = MockUpstream::start(|_| too_many("30")).await;
    let tollgate = Harness::start_with(&first.base_url, |config| {
        config.routes = vec![route("smart", &[("gpt-4.1", "openai")])];
    })
    .await;
    let refused = tollgate
        .post("/v1/chat/completions")
        .json(&chat("smart"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429, "the upstream's own 429 first");
    let again = tollgate
        .post("/v1/chat/completions")
        .json(&chat("smart"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429);
    let retry: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let body: Value = again.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(first.received().len(), 1, "tollgate answered itself");
    // A request for the model by its own name is not routed: it goes upstream.
    let direct = tollgate
        .post("/v1/chat/completions")
        .json(&chat("gpt-4.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 429);
    assert_eq!(first.received().len(), 2);
}

/// An upstream that answers as asked, with the usage the client scripts in
/// `x-mock-prompt` / `x-mock-completion` (tollgate forwards them).
async fn scripted_as_asked() -> MockUpstream {
    MockUpstream::start(|received| {
        let number = |name: &str| {
            received
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
        };
        let model = asked(received);
        json(
            StatusCode::OK,
            &answer(
                &model,
                number("x-mock-prompt"),
                number("x-mock-completion"),
                "ok",
            ),
        )
    })
    .await
}

#[tokio::test]
async fn past_its_threshold_a_budget_is_served_by_the_cheaper_model() {
    for backend in backends().await {
        let upstream = scripted_as_asked().await;
        let url = backend.url.clone();
        let tollgate = Harness::start_with(&upstream.base_url, move |config| {
            config.database.url = url;
            config.auth.mode = AuthMode::Keys;
            config.downgrades = vec![DowngradeConfig {
                budget: DowngradeScope::Team,
                threshold_percent: 80,
                models: [("gpt-4o".to_owned(), "gpt-4o-mini".to_owned())].into(),
                ..DowngradeConfig::default()
            }];
        })
        .await;
        let created = tollgate
            .admin(reqwest::Method::POST, "/admin/teams")
            .json(&json!({"name": "research", "budget_usd": "1", "budget_period": "total"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
        let key = tollgate.key("research", json!({"name": "notebook"})).await;
        let send = |completion: u64| {
            tollgate
                .chat(&key, &chat("gpt-4o"))
                .header("x-mock-completion", completion.to_string())
                .send()
        };
        // $0.79, then $0.02 more: spent crosses 80% only with the second.
        for completion in [79_000, 2_000] {
            let response = send(completion).await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(response.headers().get("x-tollgate-routed-model").is_none());
            assert_eq!(asked(&upstream.last()), "gpt-4o");
        }
        tollgate.flush().await;
        // Past 80%: gpt-4o-mini serves (and $0.24 of it takes the budget past $1).
        let downgraded = send(400_000).await.unwrap();
        assert_eq!(downgraded.status(), 200, "{}", backend.name);
        assert_eq!(
            downgraded.headers()["x-tollgate-routed-model"],
            "gpt-4o-mini"
        );
        assert_eq!(asked(&upstream.last()), "gpt-4o-mini");
        tollgate.flush().await;
        // Past the budget itself, the 429 stands.
        let refused = send(1).await.unwrap();
        assert_eq!(refused.status(), 429);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(assert_openai_error(&body)["code"], "insufficient_quota");
        assert_eq!(upstream.received().len(), 3);

        tollgate.flush().await;
        let store = backend.open().await;
        let rows = route_rows(&store).await;
        assert_eq!(rows.len(), 3);
        let last = &rows[2];
        assert_eq!(last.model_requested.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(last.downgraded_from.as_deref(), Some("gpt-4o"));
        assert_eq!(last.priced_model.as_deref(), Some("gpt-4o-mini"));
        // 1 in at $0.15, 400,000 out at $0.60 per 1M.
        assert_eq!(last.cost_pico, Some(240_000_150_000));
        assert!(rows[..2].iter().all(|row| row.downgraded_from.is_none()));
        assert_eq!(
            open_reservations(&store).await,
            0,
            "every reservation settled"
        );
        let metrics = tollgate.metrics_text().await;
        let line = "tollgate_route_downgrades_total{from=\"gpt-4o\",team=\"research\",to=\"gpt-4o-mini\"} 1";
        assert!(metrics.contains(line), "missing {line}");
    }
}
