//! Idle connections: a client that made its requests and then sits on the connection
//! is closed after `server.idle_timeout`, HTTP/2 with GOAWAY, HTTP/1 by closing; a
//! stream that pauses longer than the timeout is in flight and runs to its end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, chat_chunks, chat_completion};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const IDLE: Duration = Duration::from_millis(300);

/// Far above `IDLE` and below the 30 s header read timeout, which also ends an HTTP/1
/// connection waiting for its next request: a close within it is the idle timeout's.
const CLOSE_BOUND: Duration = Duration::from_secs(20);

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;

async fn tollgate_idling_after(upstream: &MockUpstream) -> Harness {
    Harness::start_with(&upstream.base_url, |config| {
        config.server.idle_timeout = IDLE;
    })
    .await
}

fn addr(tollgate: &Harness) -> String {
    tollgate.url.trim_start_matches("http://").to_owned()
}

/// An h2c (prior knowledge) connection driven by hand, so a test sees the GOAWAY and
/// the moment the socket closes. Its task answers the server's PINGs, as a client does.
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    connection: JoinHandle<Result<(), h2::Error>>,
}

impl H2 {
    async fn connect(tollgate: &Harness) -> Self {
        let socket = TcpStream::connect(addr(tollgate)).await.unwrap();
        let (send, connection) = h2::client::handshake(socket).await.unwrap();
        Self {
            send,
            connection: tokio::spawn(connection),
        }
    }

    /// Sends a request and returns its status and the body stream.
    async fn send(
        &mut self,
        request: http::Request<()>,
        body: Option<&'static str>,
    ) -> (http::StatusCode, h2::RecvStream) {
        let mut send = self.send.clone().ready().await.unwrap();
        let (response, mut stream) = send.send_request(request, body.is_none()).unwrap();
        if let Some(body) = body {
            stream
                .send_data(Bytes::from_static(body.as_bytes()), true)
                .unwrap();
        }
        let response = response.await.unwrap();
        (response.status(), response.into_body())
    }

    async fn get(&mut self, tollgate: &Harness, path: &str) -> (http::StatusCode, Vec<u8>) {
        let request = http::Request::get(format!("{}{path}", tollgate.url))
            .body(())
            .unwrap();
        let (status, mut body) = self.send(request, None).await;
        let mut bytes = Vec::new();
        while let Some(chunk) = next_chunk(&mut body).await {
            bytes.extend_from_slice(&chunk);
        }
        (status, bytes)
    }
}

async fn next_chunk(body: &mut h2::RecvStream) -> Option<Bytes> {
    let chunk = body.data().await?.unwrap();
    body.flow_control().release_capacity(chunk.len()).unwrap();
    Some(chunk)
}

/// Reads one HTTP/1 response to `GET /healthz` off `socket`.
async fn read_health(socket: &mut TcpStream) {
    let mut answer = vec![0u8; 4096];
    let mut read = 0;
    while !answer[..read]
        .windows(15)
        .any(|w| w == b"{\"status\":\"ok\"}")
    {
        let n = socket.read(&mut answer[read..]).await.unwrap();
        assert!(n > 0, "closed mid-answer");
        read += n;
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_sent_goaway_and_closed() {
    let upstream = MockUpstream::start(|_| {
        common::mock_upstream::json(axum::http::StatusCode::OK, &chat_completion(1, 1))
    })
    .await;
    let tollgate = tollgate_idling_after(&upstream).await;

    // One request, answered in full; then the client keeps the connection and sends
    // nothing.
    let mut client = H2::connect(&tollgate).await;
    let (status, _) = client.get(&tollgate, "/healthz").await;
    assert_eq!(status, 200);

    let ended = tokio::time::timeout(CLOSE_BOUND, &mut client.connection).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "an idle HTTP/2 connection was not closed cleanly: {ended:?}"
    );
    // Closed by a GOAWAY, so the client knows its connection is not to be reused.
    let error = client
        .send
        .ready()
        .await
        .expect_err("the connection is gone");
    assert!(
        error.is_go_away() && error.is_remote() && error.reason() == Some(h2::Reason::NO_ERROR),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_http2_client_that_ignores_goaway_is_dropped() {
    let upstream = MockUpstream::start(|_| {
        common::mock_upstream::json(axum::http::StatusCode::OK, &chat_completion(1, 1))
    })
    .await;
    let tollgate = tollgate_idling_after(&upstream).await;

    // Raw frames: the preface, empty SETTINGS, then GET /healthz as one HEADERS frame
    // (HPACK: :method GET, :scheme http, :path and :authority as literals). The client
    // never answers a PING, so the GOAWAY's round trip never completes.
    let path = b"/healthz";
    let mut block = vec![0x82, 0x86, 0x44, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x41, 0x01, b'x']);
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = block.len();
    // HEADERS on stream 1 with END_STREAM and END_HEADERS.
    bytes.extend_from_slice(&[0, 0, len as u8, 0x1, 0x5, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    let mut socket = TcpStream::connect(addr(&tollgate)).await.unwrap();
    socket.write_all(&bytes).await.unwrap();

    let mut received = Vec::new();
    let read = tokio::time::timeout(CLOSE_BOUND, socket.read_to_end(&mut received)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "still open, or not closed cleanly: {read:?}"
    );
    let frames = frame_types(&received);
    assert!(frames.contains(&0x1), "answered the request: {frames:?}");
    assert!(
        frames.contains(&0x7),
        "sent GOAWAY before closing: {frames:?}"
    );
}

/// The type of each HTTP/2 frame in `bytes`, in order.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed() {
    let upstream = MockUpstream::start(|_| {
        common::mock_upstream::json(axum::http::StatusCode::OK, &chat_completion(1, 1))
    })
    .await;
    let tollgate = tollgate_idling_after(&upstream).await;

    let mut socket = TcpStream::connect(addr(&tollgate)).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_health(&mut socket).await;

    let mut rest = Vec::new();
    let read = tokio::time::timeout(CLOSE_BOUND, socket.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "an idle keep-alive connection is still open, or sent more: {read:?}"
    );
}

/// A streamed chat answer, one SSE event a chunk.
fn events() -> Vec<Bytes> {
    chat_chunks(&["slow", "but", "steady"], Some((9, 3)))
        .iter()
        .map(|chunk| Bytes::from(format!("data: {chunk}\n\n")))
        .collect()
}

/// The upstream pauses for three idle timeouts before each of `events`, then ends its
/// stream.
async fn think_between(tx: tokio::sync::mpsc::UnboundedSender<Bytes>, events: &[Bytes]) {
    for event in events {
        tokio::time::sleep(IDLE * 3).await;
        tx.send(event.clone()).unwrap();
    }
}

/// The client got the whole stream and the row is whole.
async fn assert_ran_to_its_end(tollgate: &Harness, streamed: &[u8]) {
    assert!(
        streamed.windows(6).any(|w| w == b"[DONE]"),
        "the stream was cut: {}",
        String::from_utf8_lossy(streamed)
    );
    let row = tollgate.only_row().await;
    assert_eq!(
        (
            row.prompt_tokens,
            row.completion_tokens,
            row.outcome.as_str()
        ),
        (9, 3, "ok")
    );
}

#[tokio::test]
async fn an_http2_stream_pausing_longer_than_the_idle_timeout_runs_to_its_end() {
    let (upstream, tx) = MockUpstream::start_stream().await;
    let tollgate = tollgate_idling_after(&upstream).await;
    // tollgate answers once the first event is in.
    let events = events();
    tx.send(events[0].clone()).unwrap();

    let mut client = H2::connect(&tollgate).await;
    let request = http::Request::post(format!("{}/v1/chat/completions", tollgate.url))
        .header("authorization", "Bearer sk-client-key")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (status, mut body) = client.send(request, Some(CHAT)).await;
    assert_eq!(status, 200);
    let read = async {
        let mut streamed = Vec::new();
        while let Some(chunk) = next_chunk(&mut body).await {
            streamed.extend_from_slice(&chunk);
        }
        streamed
    };
    let ((), streamed) = tokio::join!(think_between(tx, &events[1..]), read);
    // Not even told to go away: the same connection takes the next request (asked
    // at once, before the connection could idle out).
    let (status, _) = client.get(&tollgate, "/healthz").await;
    assert_eq!(status, 200);
    assert_ran_to_its_end(&tollgate, &streamed).await;
}

#[tokio::test]
async fn an_http1_stream_pausing_longer_than_the_idle_timeout_runs_to_its_end() {
    let (upstream, tx) = MockUpstream::start_stream().await;
    let tollgate = tollgate_idling_after(&upstream).await;
    // tollgate answers once the first event is in.
    let events = events();
    tx.send(events[0].clone()).unwrap();

    let response = tollgate
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let read = async {
        let mut streamed = Vec::new();
        while let Some(chunk) = body.next().await {
            streamed.extend_from_slice(&chunk.unwrap());
        }
        streamed
    };
    let ((), streamed) = tokio::join!(think_between(tx, &events[1..]), read);
    assert_ran_to_its_end(&tollgate, &streamed).await;
}
