//! Batch and fine-tuning jobs through tollgate, against a mock of OpenAI's files,
//! batches and jobs, on SQLite and (with TOLLGATE_TEST_POSTGRES_URL) Postgres: owned by
//! the creating team, billed once at batch and training rates, exact across a restart
//! in the middle of an output file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use common::batch_upstream::{BatchUpstream, failed_line, input_line, output_line};
use common::db::{Backend, backends};
use common::harness::{Harness, assert_openai_error};
use serde_json::{Value, json};
use tollgate::config::{AuthMode, Config};

async fn server(
    upstream: &BatchUpstream,
    backend: &Backend,
    tweak: impl FnOnce(&mut Config),
) -> Harness {
    let url = backend.url.clone();
    Harness::start_with(&upstream.base_url, move |config| {
        config.auth.mode = AuthMode::Keys;
        config.database.url = url;
        tweak(config);
    })
    .await
}

async fn upload(tollgate: &Harness, key: &str, content: &str) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(content.as_bytes().to_vec()).file_name("input.jsonl"),
        );
    tollgate
        .client
        .post(format!("{}/v1/files", tollgate.url))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn upload_id(tollgate: &Harness, key: &str, content: &str) -> String {
    let response = upload(tollgate, key, content).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn create_batch(tollgate: &Harness, key: &str, file: &str) -> reqwest::Response {
    tollgate
        .client
        .post(format!("{}/v1/batches", tollgate.url))
        .bearer_auth(key)
        .json(&json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap()
}

async fn batch_id(tollgate: &Harness, key: &str, file: &str) -> String {
    let response = create_batch(tollgate, key, file).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn call(tollgate: &Harness, method: Method, key: &str, path: &str) -> reqwest::Response {
    tollgate
        .client
        .request(method, format!("{}{path}", tollgate.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn input(lines: usize) -> String {
    (0..lines)
        .map(|i| input_line(&format!("r{i}"), "Classify: the sky is blue.", 10))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (requests, cost) of the ledger's batch rows, read through the admin API.
async fn by_kind(tollgate: &Harness, kind: &str) -> (u64, String) {
    let spend = tollgate.spend("group_by=kind").await;
    spend.get(kind).map_or((0, "0".to_owned()), |line| {
        (
            line["requests"].as_u64().unwrap(),
            line["cost_usd"].as_str().unwrap().to_owned(),
        )
    })
}

#[tokio::test]
async fn a_batch_is_billed_once_at_batch_rates_to_its_creator() {
    for backend in backends().await {
        let upstream = BatchUpstream::start().await;
        let tollgate = server(&upstream, &backend, |_| {}).await;
        let key = tollgate.key("labelling", json!({"name": "k"})).await;
        let file = upload_id(&tollgate, &key, &input(4)).await;
        let batch = batch_id(&tollgate, &key, &file).await;
        // Still running: nothing to bill.
        assert_eq!(tollgate.poll_batches().await, 1);
        assert_eq!(by_kind(&tollgate, "batch").await.0, 0);
        upstream.finish_batch(
            &batch,
            "completed",
            &[
                // 1,000 prompt tokens (400 cached: no further discount) at $0.075/M
                // and 200 completion tokens at $0.30/M: $0.000075 + $0.00006.
                output_line("r0", 1000, 400, 200),
                // $0.00015 + $0.00003
                output_line("r1", 2000, 0, 100),
                failed_line("r2"),
                "{\"custom_id\": \"r3\", truncated".to_owned(),
            ],
        );
        tollgate.poll_batches().await;
        // Finished: a second pass finds nothing to poll and bills nothing again.
        assert_eq!(tollgate.poll_batches().await, 0, "{}", backend.name);
        assert_eq!(
            by_kind(&tollgate, "batch").await,
            (2, "0.000315".to_owned()),
            "{}",
            backend.name
        );
        let teams = tollgate.spend("group_by=team&kind=batch").await;
        assert_eq!(teams["labelling"]["cost_usd"], "0.000315", "{teams:?}");
        // The CLI splits spend by kind as well.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tollgate.toml");
        std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", backend.url)).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&config)
            .args(["spend", "--by", "kind", "--format", "json"])
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("TOLLGATE_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let spend: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(spend["data"][0]["group"], "batch", "{spend}");
        assert_eq!(spend["data"][0]["cost_usd"], "0.000315", "{spend}");
        let metrics = tollgate.metrics_text().await;
        for line in [
            "tollgate_batch_lines_total{result=\"billed\"} 2",
            "tollgate_batch_lines_total{result=\"failed\"} 1",
            "tollgate_batch_lines_total{result=\"malformed\"} 1",
        ] {
            assert!(metrics.contains(line), "{line} in {metrics}");
        }
        if backend.name == "sqlite" {
            let rows = tollgate.rows().await;
            assert_eq!(rows.len(), 2);
            for row in &rows {
                assert_eq!(row.price_variant.as_deref(), Some("batch"));
                // Batch rates, cached input at the batch input rate.
                assert_eq!(row.rates, (Some(75_000), Some(75_000), Some(300_000)));
                assert_eq!(row.endpoint, "chat.completions");
            }
            assert_eq!(rows[0].request_id, "r0");
            assert_eq!(rows[0].cached_tokens, 400);
        }
    }
}

/// The poller is cut off after its first committed chunk of a 600-line output file
/// (as a crash would); a new tollgate on the same database resumes at the cursor with a
/// range request and bills every line exactly once.
#[tokio::test]
async fn a_restart_in_the_middle_of_billing_bills_every_line_once() {
    for backend in backends().await {
        let upstream = BatchUpstream::start().await;
        let first = server(&upstream, &backend, |_| {}).await;
        let key = first.key("bulk", json!({"name": "k"})).await;
        let file = upload_id(&first, &key, &input(3)).await;
        let batch = batch_id(&first, &key, &file).await;
        let lines: Vec<String> = (0..600)
            .map(|i| output_line(&format!("r{i}"), 100, 0, 10))
            .collect();
        upstream.finish_batch(&batch, "completed", &lines);
        let output = upstream.batch(&batch)["output_file_id"]
            .as_str()
            .unwrap()
            .to_owned();
        // 300 lines and a bit, then the download hangs.
        let bytes = |n: usize| lines[..n].iter().map(|l| l.len() + 1).sum::<usize>();
        upstream.stall(&output, bytes(300) + 17);
        let tracker = first.batches();
        let polling = tokio::spawn(async move { tracker.poll_all().await });
        let deadline = Instant::now() + Duration::from_secs(30);
        while by_kind(&first, "batch").await.0 < 256 {
            assert!(
                Instant::now() < deadline,
                "the first chunk was never committed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        polling.abort();
        let _ = polling.await;
        let mut first = first;
        first.shutdown().await;
        // Only whole chunks were committed.
        upstream.unstall();

        let second = server(&upstream, &backend, |_| {}).await;
        second.poll_batches().await;
        second.poll_batches().await;
        // 600 × (100 × $0.075/M + 10 × $0.30/M) = 600 × $0.0000105
        assert_eq!(
            by_kind(&second, "batch").await,
            (600, "0.0063".to_owned()),
            "{}",
            backend.name
        );
        let ranges = upstream.ranges();
        let resumed = format!("bytes={}-", bytes(256));
        assert!(
            ranges.contains(&Some(resumed.clone())),
            "{}: expected {resumed} in {ranges:?}",
            backend.name
        );

        // Exactness does not rest on the cursor or on range support: an upstream that
        // sends the whole file again, then a cursor lost altogether, add nothing.
        upstream.ignore_ranges();
        for cursor in ["cursor_lines", "0"] {
            rewind(&backend, &batch, cursor).await;
            assert_eq!(second.poll_batches().await, 1);
            assert_eq!(
                by_kind(&second, "batch").await,
                (600, "0.0063".to_owned()),
                "{}",
                backend.name
            );
        }
    }
}

/// Puts a billed batch back to billing, its cursor at `cursor_lines` (an SQL
/// expression: where it was, or `0`).
async fn rewind(backend: &Backend, batch: &str, cursor_lines: &str) {
    let bytes = if cursor_lines == "0" {
        "0"
    } else {
        "cursor_bytes"
    };
    let sql = format!(
        "UPDATE upstream_objects SET billing = 'tracking', next_poll_ms = 0, \
         cursor_lines = {cursor_lines}, cursor_bytes = {bytes} WHERE id = '{batch}'"
    );
    let store = backend.open().await;
    let updated = match &store {
        tollgate::ledger::Store::Sqlite(l) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(l.pool())
            .await
            .unwrap()
            .rows_affected(),
        tollgate::ledger::Store::Postgres(l) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(l.pool())
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(updated, 1);
}

#[tokio::test]
async fn cancelled_and_expired_batches_bill_their_partial_output_and_failed_ones_nothing() {
    for backend in backends().await {
        let upstream = BatchUpstream::start().await;
        let tollgate = server(&upstream, &backend, |_| {}).await;
        let key = tollgate.key("t", json!({"name": "k"})).await;
        let file = upload_id(&tollgate, &key, &input(5)).await;
        let cancelled = batch_id(&tollgate, &key, &file).await;
        let expired = batch_id(&tollgate, &key, &file).await;
        let failed = batch_id(&tollgate, &key, &file).await;
        let cancel = call(
            &tollgate,
            Method::POST,
            &key,
            &format!("/v1/batches/{cancelled}/cancel"),
        )
        .await;
        assert_eq!(cancel.status(), 200);
        upstream.finish_batch(
            &cancelled,
            "cancelled",
            &[output_line("r0", 1000, 0, 0), output_line("r1", 1000, 0, 0)],
        );
        upstream.finish_batch(&expired, "expired", &[output_line("r0", 0, 0, 1000)]);
        upstream.set_batch_status(&failed, "failed");
        assert_eq!(tollgate.poll_batches().await, 3);
        assert_eq!(tollgate.poll_batches().await, 0, "all three are finished");
        // 2 × 1,000 × $0.075/M + 1,000 × $0.30/M
        assert_eq!(
            by_kind(&tollgate, "batch").await,
            (3, "0.00045".to_owned()),
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn another_team_cannot_see_download_or_cancel_a_batch() {
    let backend = backends().await.remove(0);
    let upstream = BatchUpstream::start().await;
    let tollgate = server(&upstream, &backend, |_| {}).await;
    let ours = tollgate.key("ours", json!({"name": "a"})).await;
    let teammate = tollgate.key("ours", json!({"name": "b"})).await;
    let theirs = tollgate.key("theirs", json!({"name": "c"})).await;
    let file = upload_id(&tollgate, &ours, &input(2)).await;
    let batch = batch_id(&tollgate, &ours, &file).await;
    upstream.finish_batch(&batch, "completed", &[output_line("r0", 10, 0, 1)]);
    // A file uploaded straight to the upstream, not through tollgate, is no one's.
    let foreign = upstream.add_file("{}\n");

    let retrieved = call(
        &tollgate,
        Method::GET,
        &ours,
        &format!("/v1/batches/{batch}"),
    )
    .await;
    assert_eq!(retrieved.status(), 200);
    let output = retrieved.json::<Value>().await.unwrap()["output_file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, path) in [
        (Method::GET, format!("/v1/batches/{batch}")),
        (Method::POST, format!("/v1/batches/{batch}/cancel")),
        (Method::GET, format!("/v1/files/{file}")),
        (Method::GET, format!("/v1/files/{file}/content")),
        (Method::GET, format!("/v1/files/{output}/content")),
        (Method::DELETE, format!("/v1/files/{file}")),
    ] {
        let refused = call(&tollgate, method.clone(), &theirs, &path).await;
        assert_eq!(refused.status(), 403, "{method} {path}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(assert_openai_error(&body)["code"], "forbidden");
        // The same team's other key may.
        let allowed = call(&tollgate, method.clone(), &teammate, &path).await;
        assert_ne!(allowed.status(), 403, "{method} {path}");
    }
    let content = call(
        &tollgate,
        Method::GET,
        &ours,
        &format!("/v1/files/{output}/content"),
    )
    .await;
    assert_eq!(content.status(), 200);
    assert!(content.text().await.unwrap().contains("batch_req_r0"));
    let foreign_read = call(
        &tollgate,
        Method::GET,
        &ours,
        &format!("/v1/files/{foreign}/content"),
    )
    .await;
    assert_eq!(foreign_read.status(), 403);
    // Their batch on our file is refused before it reaches the upstream.
    let creates = upstream.count(&Method::POST, "/batches");
    assert_eq!(create_batch(&tollgate, &theirs, &file).await.status(), 403);
    assert_eq!(upstream.count(&Method::POST, "/batches"), creates);
    // Lists hold only the team's own objects.
    for (key, batches, files) in [(&ours, 1, 2), (&theirs, 0, 0)] {
        let list: Value = call(&tollgate, Method::GET, key, "/v1/batches")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), batches, "{list}");
        let list: Value = call(&tollgate, Method::GET, key, "/v1/files")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), files, "{list}");
    }
}

#[tokio::test]
async fn passthrough_callers_own_what_their_own_key_created() {
    let backend = backends().await.remove(0);
    let upstream = BatchUpstream::start().await;
    let tollgate = server(&upstream, &backend, |config| {
        config.auth.mode = AuthMode::Passthrough
    })
    .await;
    let file = upload_id(&tollgate, "sk-alice", &input(1)).await;
    assert_eq!(
        call(
            &tollgate,
            Method::GET,
            "sk-alice",
            &format!("/v1/files/{file}")
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        call(
            &tollgate,
            Method::GET,
            "sk-bob",
            &format!("/v1/files/{file}")
        )
        .await
        .status(),
        403
    );
}

#[tokio::test]
async fn a_batch_over_the_budget_is_refused_with_insufficient_quota() {
    for backend in backends().await {
        let upstream = BatchUpstream::start().await;
        let tollgate = server(&upstream, &backend, |_| {}).await;
        // $0.001 a day. Each line may cost up to 10,000 output tokens at $0.30/M = $0.003.
        let key = tollgate
            .key(
                "t",
                json!({"budget_usd": "0.001", "budget_period": "daily"}),
            )
            .await;
        let big: String = (0..3)
            .map(|i| input_line(&format!("r{i}"), "hi", 10_000))
            .collect::<Vec<_>>()
            .join("\n");
        let file = upload_id(&tollgate, &key, &big).await;
        let refused = create_batch(&tollgate, &key, &file).await;
        assert_eq!(refused.status(), 429, "{}", backend.name);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(assert_openai_error(&body)["code"], "insufficient_quota");
        assert_eq!(
            upstream.count(&Method::POST, "/batches"),
            0,
            "never forwarded"
        );
        // A small batch fits, and holds its estimate until it is billed.
        let file = upload_id(&tollgate, &key, &input(2)).await;
        let batch = batch_id(&tollgate, &key, &file).await;
        let me: Value = call(&tollgate, Method::GET, &key, "/v1/tollgate/me")
            .await
            .json()
            .await
            .unwrap();
        assert_ne!(me["budgets"][0]["reserved_usd"], "0", "{me}");
        upstream.finish_batch(&batch, "completed", &[output_line("r0", 20, 0, 5)]);
        tollgate.poll_batches().await;
        tollgate.flush().await;
        let me: Value = call(&tollgate, Method::GET, &key, "/v1/tollgate/me")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me["budgets"][0]["reserved_usd"], "0", "{me}");
        // 20 × $0.075/M + 5 × $0.30/M
        assert_eq!(me["budgets"][0]["spent_usd"], "0.000003", "{me}");
    }
}

#[tokio::test]
async fn the_enqueued_token_limit_holds_a_batch_until_the_queue_drains() {
    let backend = backends().await.remove(0);
    let upstream = BatchUpstream::start().await;
    let tollgate = server(&upstream, &backend, |config| {
        config
            .batch
            .enqueued_token_limits
            .insert("gpt-4o-mini*".to_owned(), 100);
    })
    .await;
    let key = tollgate.key("t", json!({"name": "k"})).await;
    // About 14 prompt tokens a line: 5 lines fit under 100, 10 more do not.
    let file = upload_id(&tollgate, &key, &input(5)).await;
    let first = batch_id(&tollgate, &key, &file).await;
    let refused = create_batch(&tollgate, &key, &file).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["code"], "token_limit_exceeded");
    upstream.finish_batch(&first, "completed", &[output_line("r0", 10, 0, 1)]);
    tollgate.poll_batches().await;
    assert_eq!(create_batch(&tollgate, &key, &file).await.status(), 200);
}

#[tokio::test]
async fn a_fine_tuning_job_is_billed_its_trained_tokens_and_its_model_at_fine_tuned_rates() {
    for backend in backends().await {
        let upstream = BatchUpstream::start().await;
        let tollgate = server(&upstream, &backend, |_| {}).await;
        let key = tollgate.key("ml", json!({"name": "k"})).await;
        let other = tollgate.key("other", json!({"name": "k"})).await;
        let file = upload_id(&tollgate, &key, "{\"messages\": []}\n").await;
        let create = |key: String| {
            tollgate
                .client
                .post(format!("{}/v1/fine_tuning/jobs", tollgate.url))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-4o-mini-2024-07-18", "training_file": file}))
                .send()
        };
        assert_eq!(
            create(other.clone()).await.unwrap().status(),
            403,
            "not their file"
        );
        let job: Value = create(key.clone()).await.unwrap().json().await.unwrap();
        let job = job["id"].as_str().unwrap().to_owned();
        assert_eq!(
            call(
                &tollgate,
                Method::GET,
                &other,
                &format!("/v1/fine_tuning/jobs/{job}")
            )
            .await
            .status(),
            403
        );
        tollgate.poll_batches().await;
        assert_eq!(by_kind(&tollgate, "training").await.0, 0, "still running");
        upstream.finish_job(&job, "succeeded", 10_000_000);
        tollgate.poll_batches().await;
        tollgate.poll_batches().await;
        // 10M trained tokens at $0.30/M.
        assert_eq!(
            by_kind(&tollgate, "training").await,
            (1, "3".to_owned()),
            "{}",
            backend.name
        );
        let teams = tollgate.spend("group_by=team&kind=training").await;
        assert_eq!(teams["ml"]["cost_usd"], "3");
        // The resulting model is priced at gpt-4o-mini's fine-tuned rates:
        // 1,000 × $0.30/M + 100 × $1.20/M.
        let model = upstream.job(&job)["fine_tuned_model"]
            .as_str()
            .unwrap()
            .to_owned();
        let chat = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            tollgate.chat(&key, &chat).send().await.unwrap().status(),
            200
        );
        assert_eq!(
            by_kind(&tollgate, "realtime").await,
            (1, "0.00042".to_owned())
        );
    }
}

#[tokio::test]
async fn a_batch_the_upstream_loses_is_retried_then_reported_lost() {
    let backend = backends().await.remove(0);
    let upstream = BatchUpstream::start().await;
    let tollgate = server(&upstream, &backend, |config| {
        config.batch.lost_after_attempts = 3
    })
    .await;
    let key = tollgate.key("t", json!({"name": "k"})).await;
    let file = upload_id(&tollgate, &key, &input(1)).await;
    let batch = batch_id(&tollgate, &key, &file).await;
    upstream.lose(&batch);
    for _ in 0..3 {
        assert_eq!(
            tollgate.poll_batches().await,
            1,
            "still tracked while retrying"
        );
    }
    assert_eq!(
        tollgate.poll_batches().await,
        0,
        "reported lost: no longer polled"
    );
    assert_eq!(
        upstream.count(&Method::GET, &format!("/batches/{batch}")),
        3
    );
    let tracked = tollgate::batch::store::get(tollgate.batches().store(), &batch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tracked.billing, "lost");
    let metrics = tollgate.metrics_text().await;
    assert!(
        metrics.contains("tollgate_batch_lost_total{object=\"batch\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_batch_poll_errors_total{reason=\"not_found\"} 3"),
        "{metrics}"
    );
}

/// Passthrough mode with no upstream key: tollgate has no credentials to poll with, so
/// the owner's own retrieve bills the finished batch, with the owner's key.
#[tokio::test]
async fn a_keyless_passthrough_batch_is_billed_when_its_owner_retrieves_it() {
    let backend = backends().await.remove(0);
    let upstream = BatchUpstream::start().await;
    let tollgate = server(&upstream, &backend, |config| {
        config.auth.mode = AuthMode::Passthrough;
        config.upstreams[0].api_key_env = None;
    })
    .await;
    let file = upload_id(&tollgate, "sk-alice", &input(1)).await;
    let batch = batch_id(&tollgate, "sk-alice", &file).await;
    upstream.finish_batch(&batch, "completed", &[output_line("r0", 1000, 0, 0)]);
    assert_eq!(
        tollgate.poll_batches().await,
        0,
        "the poller has no key to poll with"
    );
    let path = format!("/v1/batches/{batch}");
    assert_eq!(
        call(&tollgate, Method::GET, "sk-bob", &path).await.status(),
        403
    );
    assert_eq!(
        call(&tollgate, Method::GET, "sk-alice", &path)
            .await
            .status(),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while by_kind(&tollgate, "batch").await.0 == 0 {
        assert!(
            Instant::now() < deadline,
            "the retrieve never billed the batch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 1,000 × $0.075/M, to alice's fingerprint.
    assert_eq!(
        by_kind(&tollgate, "batch").await,
        (1, "0.000075".to_owned())
    );
    let rows = tollgate.rows().await;
    assert!(rows[0].caller.starts_with("fp:"), "{rows:?}");
}

/// Uploads stream under `server.max_upload_bytes`, not the metered routes' body cap.
#[tokio::test]
async fn uploads_stream_under_the_upload_cap_not_the_body_cap() {
    let backend = backends().await.remove(0);
    let upstream = BatchUpstream::start().await;
    let tollgate = server(&upstream, &backend, |config| {
        config.server.max_body_bytes = 1024;
        config.server.max_upload_bytes = 256 * 1024;
    })
    .await;
    let key = tollgate.key("t", json!({"name": "k"})).await;
    let big = input(500);
    assert!(big.len() > 64 * 1024 && big.len() < 200 * 1024);
    assert_eq!(upload(&tollgate, &key, &big).await.status(), 200);
    let too_big = input(2000);
    let refused = upload(&tollgate, &key, &too_big).await;
    assert_eq!(refused.status(), 413);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["code"], "request_too_large");
}
