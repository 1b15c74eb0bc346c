//! Client faults: a client that sends its headers slowly or not at all, one that never
//! reads its answer, and a thousand that open streams and hang up at once. Each ends
//! with what the server holds afterwards: sockets, memory, tasks and rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, StreamGauge, chat_chunk, chat_completion, endless_sse};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The memory test reads the whole test process's RSS, so the other heavy test of this
/// file (a thousand streams) must not run beside it.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;

fn addr(tollgate: &Harness) -> String {
    tollgate.url.trim_start_matches("http://").to_owned()
}

/// Whether the server closes `socket` (within a bound far above the timeout under test).
async fn closed_by_server(mut socket: TcpStream) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test]
async fn connections_that_send_no_request_in_time_are_closed() {
    let upstream = MockUpstream::start(|_| {
        common::mock_upstream::json(axum::http::StatusCode::OK, &chat_completion(1, 1))
    })
    .await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = addr(&tollgate);
    let partial: [&[u8]; 4] = [
        // Connects and says nothing.
        b"",
        // HTTP/1 headers that never finish.
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
        // Half the HTTP/2 preface: neither protocol is chosen yet.
        b"PRI * HTTP/2.0\r\n",
        // The whole preface, then no frames.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    let mut sockets = Vec::new();
    for bytes in partial {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(bytes).await.unwrap();
        sockets.push(socket);
    }
    for (socket, bytes) in sockets.into_iter().zip(partial) {
        assert!(
            closed_by_server(socket).await,
            "a connection that sent {:?} is still open",
            String::from_utf8_lossy(bytes)
        );
    }
    // A client that sends its request in time is served as usual.
    let response = tollgate.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_keep_alive_client_is_not_cut_between_requests() {
    let upstream = MockUpstream::start(|_| {
        common::mock_upstream::json(axum::http::StatusCode::OK, &chat_completion(1, 1))
    })
    .await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    // One connection, several requests in a row: the first-request deadline must not
    // close a connection that is in use.
    let mut socket = TcpStream::connect(addr(&tollgate)).await.unwrap();
    for _ in 0..3 {
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let mut read = 0;
        while !answer[..read]
            .windows(15)
            .any(|w| w == b"{\"status\":\"ok\"}")
        {
            let n = socket.read(&mut answer[read..]).await.unwrap();
            assert!(n > 0, "closed mid-conversation");
            read += n;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The process's resident set, on Linux.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Waits until `value` stops changing for a second, and returns it.
async fn plateau(value: impl Fn() -> u64) -> u64 {
    let mut last = value();
    let mut still = 0;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = value();
        if now == last {
            still += 1;
            if still == 10 {
                return now;
            }
        } else {
            (last, still) = (now, 0);
        }
    }
    panic!("never settled: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_bounded_memory() {
    let _alone = MEMORY.lock().await;
    const AVAILABLE: u64 = 512 * 1024 * 1024;
    const BOUND: u64 = 96 * 1024 * 1024;
    let gauge = Arc::new(StreamGauge::default());
    let stream_gauge = gauge.clone();
    let upstream = MockUpstream::start(move |_| {
        let first = chat_chunk(json!({"role": "assistant", "content": "Hi"}), None, true);
        // Keep-alive comments: cheap to relay, nothing for the meter to keep.
        let mut filler = b": ".to_vec();
        filler.extend_from_slice(&vec![b'k'; 64 * 1024]);
        filler.extend_from_slice(b"\n\n");
        endless_sse(
            Bytes::from(format!("data: {first}\n\n")),
            Bytes::from(filler),
            AVAILABLE,
            stream_gauge.clone(),
        )
    })
    .await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let before = rss_bytes();

    let mut client = TcpStream::connect(addr(&tollgate)).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-client\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // ...and never reads a byte. Backpressure must reach the upstream.
    let sent = plateau(|| gauge.bytes_sent.load(Ordering::SeqCst)).await;
    let grown = rss_bytes()
        .zip(before)
        .map(|(now, before)| now.saturating_sub(before));
    eprintln!(
        "never-reading client: upstream sent {} MiB of {} MiB; RSS grew {:?} MiB",
        sent >> 20,
        AVAILABLE >> 20,
        grown.map(|g| g >> 20)
    );
    assert!(sent > 0);
    assert!(
        sent < BOUND,
        "the upstream sent {sent} bytes to a client that reads nothing"
    );
    if let Some(grown) = grown {
        assert!(grown < BOUND, "RSS grew by {grown} bytes");
    }
    assert_eq!(tollgate.in_flight(), 1, "the relay waits for the client");

    // The client finally goes: the relay ends, the upstream is let go, the row is there.
    drop(client);
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.outcome.as_str(), row.usage_source.as_str()),
        ("client_disconnected", "estimated")
    );
    eventually("the relay task ends", || tollgate.in_flight() == 0).await;
    eventually("the upstream stream is dropped", || {
        gauge.live.load(Ordering::SeqCst) == 0
    })
    .await;
}

/// The open-file limit, where the platform says (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_abandoned_at_once_each_get_their_row_and_leave_no_task() {
    let _alone = MEMORY.lock().await;
    // Four sockets per stream live in this one process (client, tollgate's two, the
    // mock's); below that many descriptors the test scales down and says so.
    let limit = open_file_limit().unwrap_or(4096);
    let streams = 1000.min(usize::try_from(limit.saturating_sub(256) / 4).unwrap_or(1000));
    if streams < 1000 {
        eprintln!("open-file limit {limit}: abandoning {streams} streams instead of 1000");
    }
    let gauge = Arc::new(StreamGauge::default());
    let stream_gauge = gauge.clone();
    let upstream = MockUpstream::start(move |_| {
        let first = chat_chunk(json!({"role": "assistant", "content": "Hi"}), None, true);
        endless_sse(
            Bytes::from(format!("data: {first}\n\n")),
            Bytes::new(),
            0,
            stream_gauge.clone(),
        )
    })
    .await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.upstreams[0].pool_max_idle_per_host = 0;
    })
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let open = futures_util::stream::iter(0..streams)
        .map(|i| {
            let request = client
                .post(format!("{}/v1/chat/completions", tollgate.url))
                .bearer_auth(format!("sk-client-{}", i % 7))
                .header("content-type", "application/json")
                .body(CHAT)
                .send();
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), 200);
                let mut body = response.bytes_stream();
                // The first event has arrived: the stream is live end to end.
                body.next().await.unwrap().unwrap();
                body
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(open.len(), streams);
    assert_eq!(tollgate.in_flight(), streams);
    assert_eq!(gauge.live.load(Ordering::SeqCst), streams as i64);

    drop(open);
    eventually("every relay task ends", || tollgate.in_flight() == 0).await;
    let rows = tollgate.rows().await;
    assert_eq!(rows.len(), streams, "one row per abandoned stream");
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), streams, "no request recorded twice");
    for row in &rows {
        assert_eq!(
            (row.outcome.as_str(), row.usage_source.as_str()),
            ("client_disconnected", "estimated")
        );
        assert_eq!(
            row.completion_tokens, 1,
            "\"Hi\" was streamed and is billed"
        );
    }
    eventually("every upstream stream is dropped", || {
        gauge.live.load(Ordering::SeqCst) == 0
    })
    .await;
    let health = tollgate.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// Polls `check` until it holds, failing after 60 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
