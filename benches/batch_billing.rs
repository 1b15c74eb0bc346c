//! Bills a batch output file of 100,000 lines (about 45 MB) through the real poller,
//! biller and SQLite ledger, against an in-process upstream that generates the file as
//! it streams, and reports the peak resident memory before and after: billing must
//! run in constant memory, whatever the file's size.
//!
//! `cargo bench --bench batch_billing` (release). Linux only: reads /proc/self/status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a bench binary reports on stdout"
)]

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use serde_json::json;
use tollgate::auth::Identity;
use tollgate::batch::Tracker;
use tollgate::batch::store::{self, NewObject, Object, billing};
use tollgate::config::{AuthMode, Config};
use tollgate::ledger::Store;
use tollgate::metrics::Metrics;
use tollgate::proxy::Pricer;
use tollgate::proxy::upstream::Upstreams;

/// Lines generated per body chunk.
const LINES_PER_CHUNK: usize = 500;

fn line(n: usize) -> String {
    json!({"id": format!("batch_req_{n}"), "custom_id": format!("request-{n}"),
           "response": {"status_code": 200, "request_id": format!("req_{n:08}"),
                        "body": {"id": format!("chatcmpl-{n}"), "object": "chat.completion",
                                 "created": 1_732_000_000, "model": "gpt-4o-mini-2024-07-18",
                                 "choices": [{"index": 0, "message": {"role": "assistant",
                                              "content": "positive"}, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 120, "completion_tokens": 2,
                                           "total_tokens": 122,
                                           "prompt_tokens_details": {"cached_tokens": 0}}}},
           "error": null})
    .to_string()
}

/// An upstream whose every batch has completed, with an output file of `lines` lines
/// (named by the batch id: `batch_<lines>`), generated while it streams.
async fn upstream() -> String {
    let app = Router::new().fallback(|request: Request| async move {
        let path = request.uri().path().to_owned();
        let lines: usize = path
            .rsplit(['_', '-'])
            .next()
            .and_then(|n| n.trim_end_matches("/content").parse().ok())
            .unwrap_or(0);
        if path.starts_with("/v1/batches/") {
            let batch = json!({"id": format!("batch_{lines}"), "status": "completed",
                               "output_file_id": format!("file-{lines}"), "completed_at": 1_732_000_000});
            return Response::new(Body::from(batch.to_string()));
        }
        let chunks = futures_util::stream::iter((0..lines.div_ceil(LINES_PER_CHUNK)).map(move |c| {
            let mut text = String::new();
            for n in c * LINES_PER_CHUNK..((c + 1) * LINES_PER_CHUNK).min(lines) {
                text.push_str(&line(n));
                text.push('\n');
            }
            Ok::<_, std::convert::Infallible>(Bytes::from(text))
        }));
        Response::new(Body::from_stream(chunks))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// A field of /proc/self/status, in KiB.
fn status(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Peak and current resident set, in KiB.
fn memory() -> (u64, u64) {
    (status("VmHWM:"), status("VmRSS:"))
}

async fn bill(tracker: &Tracker, store: &Store, lines: usize) -> f64 {
    let identity = Identity {
        key_id: "key_bench".to_owned(),
        team_id: Some("team_bench".to_owned()),
        display: "tg-bench".to_owned(),
        key: None,
    };
    let new = NewObject {
        id: format!("batch_{lines}"),
        object: Object::Batch,
        owner: tollgate::batch::owner(&identity),
        key_id: identity.key_id,
        team_id: identity.team_id,
        caller: identity.display,
        created_ms: 0,
        billing: billing::TRACKING,
        endpoint: Some("/v1/chat/completions".to_owned()),
        model: Some("gpt-4o-mini".to_owned()),
        input_file_id: None,
        enqueued_tokens: 0,
        reservation_id: None,
    };
    store::insert(store, &new, 0).await.unwrap();
    let started = Instant::now();
    assert_eq!(tracker.poll_all().await, 1);
    let seconds = started.elapsed().as_secs_f64();
    let tracked = store::get(store, &new.id).await.unwrap().unwrap();
    assert_eq!(tracked.billing, billing::BILLED);
    assert_eq!(tracked.billed_lines, lines as u64, "every line billed");
    seconds
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.upstreams[0].base_url = upstream().await;
    config.upstreams[0].api_key_env = None;
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("ledger.db").display()
    ))
    .await
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let pricer = Pricer::new(
        config.pricing.catalog().unwrap(),
        &config.pricing,
        metrics.clone(),
    );
    let tracker = Tracker::new(
        store.clone(),
        Upstreams::new(&config.upstreams, &Default::default()).unwrap(),
        Arc::new(pricer),
        metrics,
        config.batch.clone(),
        AuthMode::Keys,
    );
    let bytes_100k: usize = (0..100_000).map(|n| line(n).len() + 1).sum();
    println!(
        "output file: 100,000 lines, {:.1} MB",
        bytes_100k as f64 / 1e6
    );
    // Warm-up: pools, prepared statements, the runtime's buffers.
    bill(&tracker, &store, 1_000).await;
    let (peak_before, _) = memory();
    println!(
        "after a 1,000-line batch: peak RSS {:.1} MiB",
        peak_before as f64 / 1024.0
    );
    // The same file size twice, then twice the size: a flat peak is constant memory.
    for lines in [10_000, 100_000, 100_001, 200_000] {
        let seconds = bill(&tracker, &store, lines).await;
        let (peak, rss) = memory();
        println!(
            "after a {lines}-line batch: peak RSS {:.1} MiB (+{:.1} MiB over the warm-up), RSS {:.1} MiB; {:.2} s, {:.0} lines/s",
            peak as f64 / 1024.0,
            (peak - peak_before) as f64 / 1024.0,
            rss as f64 / 1024.0,
            seconds,
            lines as f64 / seconds,
        );
        // Anonymous memory is the heap (the biller, SQLite's page caches, the runtime);
        // file pages are mostly the binary's own code.
        println!(
            "    RssAnon {:.1} MiB, RssFile {:.1} MiB, RssShmem {:.1} MiB",
            status("RssAnon:") as f64 / 1024.0,
            status("RssFile:") as f64 / 1024.0,
            status("RssShmem:") as f64 / 1024.0,
        );
    }
}
