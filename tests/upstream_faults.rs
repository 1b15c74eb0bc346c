//! Upstream faults the proxy tests do not cover: each ends with the client's status and
//! the one ledger row it leaves, with the `usage_source` that row must carry. (Refused
//! connections, 500s, a first byte that never comes and cut answers without a stream
//! are in `tests/proxy.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use common::harness::{Harness, assert_openai_error, refused_url, say_hello, silent_url};
use common::mock_upstream::{
    MockUpstream, StreamGauge, chat_chunk, chat_chunks, endless_sse, json, sse_response_raw,
};
use serde_json::{Value, json};
use tollgate::proxy::sse::MAX_EVENT_BYTES;

fn event(data: &str) -> String {
    format!("data: {data}\n\n")
}

#[tokio::test]
async fn a_refused_stream_is_a_502_and_a_zero_token_estimated_row() {
    let tollgate = Harness::start(&refused_url().await).await;
    tollgate
        .say_hello_refused(true, 502, "upstream_unreachable")
        .await;
    let row = tollgate.only_row().await;
    assert!(row.streamed);
    assert_eq!(
        (row.status, row.outcome.as_str(), row.usage_source.as_str()),
        (502, "upstream_unreachable", "estimated")
    );
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (0, 0),
        "nothing reached the upstream, nothing was billed"
    );
}

#[tokio::test]
async fn a_500_to_a_stream_request_passes_through_and_bills_nothing() {
    let error = json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}});
    let body = error.clone();
    let upstream = MockUpstream::start(move |_| json(StatusCode::SERVICE_UNAVAILABLE, &body)).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    for _ in 0..3 {
        let response = tollgate
            .post("/v1/chat/completions")
            .json(&say_hello(true))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.json::<Value>().await.unwrap(), error);
    }
    let rows = tollgate.rows().await;
    assert_eq!(rows.len(), 3, "one row per request, errors included");
    for row in &rows {
        assert_eq!(
            (row.status, row.outcome.as_str(), row.usage_source.as_str()),
            (503, "upstream_error", "upstream")
        );
        assert_eq!((row.prompt_tokens, row.completion_tokens), (0, 0));
    }
}

#[tokio::test]
async fn a_slow_first_byte_inside_the_timeout_is_served_and_billed_exactly() {
    let (upstream, answer) = MockUpstream::start_gated().await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.upstreams[0].first_byte_timeout = Duration::from_secs(30);
    })
    .await;
    let request = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send();
    let answer_late = async {
        // The upstream takes its time: the answer goes out once the request is there.
        while upstream.received().is_empty() {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        answer
            .send(common::mock_upstream::sse(&chat_chunks(
                &["late"],
                Some((9, 1)),
            )))
            .unwrap();
    };
    let (response, ()) = tokio::join!(request, answer_late);
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("late"));
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.outcome.as_str(), row.usage_source.as_str()),
        ("ok", "upstream")
    );
    assert_eq!((row.prompt_tokens, row.completion_tokens), (9, 1));
}

#[tokio::test]
async fn a_stream_whose_first_byte_never_comes_is_a_504() {
    let tollgate = Harness::start_with(&silent_url().await, |config| {
        config.upstreams[0].first_byte_timeout = Duration::from_millis(200);
    })
    .await;
    tollgate
        .say_hello_refused(true, 504, "upstream_timeout")
        .await;
    let row = tollgate.only_row().await;
    assert!(row.streamed);
    assert_eq!(
        (row.status, row.outcome.as_str(), row.usage_source.as_str()),
        (504, "upstream_timeout", "estimated")
    );
}

#[tokio::test]
async fn a_stream_that_never_ends_is_cut_at_the_total_timeout() {
    let gauge = Arc::new(StreamGauge::default());
    let stream_gauge = gauge.clone();
    let upstream = MockUpstream::start(move |_| {
        let first = chat_chunk(
            json!({"role": "assistant", "content": "The quick brown fox"}),
            None,
            true,
        );
        endless_sse(
            Bytes::from(event(&first)),
            Bytes::new(),
            0,
            stream_gauge.clone(),
        )
    })
    .await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.upstreams[0].total_timeout = Duration::from_secs(1);
    })
    .await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the stream had started: its status was sent"
    );
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].contains("The quick brown fox"));
    let error: Value = serde_json::from_str(events[1]).unwrap();
    assert_eq!(assert_openai_error(&error)["code"], "upstream_timeout");

    let row = tollgate.only_row().await;
    assert_eq!(
        (row.status, row.outcome.as_str(), row.usage_source.as_str()),
        (200, "upstream_timeout", "estimated")
    );
    assert_eq!(row.completion_tokens, 4, "what was streamed is billed");
    assert!(row.prompt_tokens > 0);
    eventually("the upstream stream is let go", || {
        gauge.live.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn a_plain_answer_that_never_ends_is_a_504() {
    let upstream = MockUpstream::start(|_| {
        let gauge = Arc::new(StreamGauge::default());
        let mut response = endless_sse(
            Bytes::from_static(b"{\"id\":\"chatcmpl-1\",\"choices\":["),
            Bytes::new(),
            0,
            gauge,
        );
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        response
    })
    .await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.upstreams[0].total_timeout = Duration::from_secs(1);
    })
    .await;
    tollgate
        .say_hello_refused(false, 504, "upstream_timeout")
        .await;
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.status, row.outcome.as_str(), row.usage_source.as_str()),
        (504, "upstream_timeout", "estimated")
    );
    assert!(row.prompt_tokens > 0 && row.completion_tokens == 0);
}

/// Every way an event stream can be malformed short of breaking the connection.
fn malformed_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let content = chat_chunk(json!({"role": "assistant", "content": "Hi"}), None, false);
    out.extend_from_slice(event(&content).as_bytes());
    out.extend_from_slice(b"data: {not json at all\n\n");
    out.extend_from_slice(b"data: \xff\xfe\x00 invalid utf-8\n\n");
    out.extend_from_slice(b"data\n\n");
    out.extend_from_slice(b"event: only-an-event-line\n\n");
    out.extend_from_slice(b"\n\n\n\n");
    out.extend_from_slice(b"retry: 10\rid: 5\r\r");
    out.extend_from_slice(b"data: {\"choices\": 7, \"usage\": \"lots\"}\n\n");
    out.extend_from_slice(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":\"ten\"}}\n\n");
    out.extend_from_slice(b": ");
    out.extend_from_slice(&vec![b'x'; 1024 * 1024]);
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

#[tokio::test]
async fn malformed_sse_is_relayed_byte_for_byte_and_counted() {
    let upstream = MockUpstream::start(|_| sse_response_raw(Bytes::from(malformed_stream()))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let mut request = say_hello(true);
    // The client asked for usage itself, so nothing is filtered: every byte is the
    // upstream's.
    request["stream_options"] = json!({"include_usage": true});
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = response.bytes().await.unwrap();
    assert!(
        received[..] == malformed_stream()[..],
        "the stream reached the client unchanged ({} bytes of {})",
        received.len(),
        malformed_stream().len()
    );
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.outcome.as_str(), row.usage_source.as_str()),
        ("ok", "estimated"),
        "no usable usage object: counted locally"
    );
    assert_eq!(row.completion_tokens, 1, "\"Hi\"");
    let health = tollgate.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn malformed_sse_without_its_end_is_a_cut_stream() {
    let mut body = malformed_stream();
    body.truncate(body.len() - b"data: [DONE]\n\n".len());
    body.extend_from_slice(b"data: {\"half an event");
    let upstream = MockUpstream::start(move |_| sse_response_raw(Bytes::from(body.clone()))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
    assert!(
        text.contains("upstream_unreachable"),
        "the client is told: {}",
        &text[text.len().saturating_sub(300)..]
    );
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.outcome.as_str(), row.usage_source.as_str()),
        ("upstream_cut", "estimated")
    );
}

#[tokio::test]
async fn an_event_past_the_cap_is_relayed_unparsed_and_the_stream_counted_as_cut() {
    let (upstream, upstream_tx) = MockUpstream::start_stream().await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let request = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send();
    // The upstream: a content event, then one that never ends its line, just past the
    // parser's cap (16 MiB).
    let first = chat_chunk(
        json!({"role": "assistant", "content": "The quick brown fox"}),
        None,
        false,
    );
    let mut sent = event(&first).into_bytes();
    sent.extend_from_slice(b"data: {\"choices\":[{\"delta\":{\"content\":\"");
    sent.resize(sent.len() + MAX_EVENT_BYTES + 64 * 1024, b'a');
    for piece in sent.chunks(1024 * 1024) {
        upstream_tx.send(Bytes::copy_from_slice(piece)).unwrap();
    }
    let mut response = request.await.unwrap();
    assert_eq!(response.status(), 200);
    // While the upstream holds the event open, the client gets every byte of it: past
    // the cap tollgate stops holding it and relays the stream as it comes.
    let mut received = Vec::new();
    let guard = Duration::from_secs(30);
    while received.len() < sent.len() {
        let chunk = tokio::time::timeout(guard, response.chunk())
            .await
            .expect("the overlong event reaches the client before the stream ends")
            .unwrap()
            .unwrap();
        received.extend_from_slice(&chunk);
    }
    // Then the event grows some more and the upstream closes the body.
    let rest = vec![b'a'; 4096];
    upstream_tx.send(Bytes::from(rest.clone())).unwrap();
    sent.extend_from_slice(&rest);
    drop(upstream_tx);
    let ended = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(
        received[..] == sent[..],
        "every byte reached the client, in order ({} of {})",
        received.len(),
        sent.len()
    );
    assert!(
        ended.is_err(),
        "the client is told the stream broke: its body is cut, not ended"
    );

    let row = tollgate.only_row().await;
    assert_eq!(
        (row.status, row.outcome.as_str(), row.usage_source.as_str()),
        (200, "upstream_cut", "estimated"),
        "the stream's end was never seen, and no usage came before the overlong event"
    );
    assert_eq!(
        row.completion_tokens, 4,
        "the text before the overlong event"
    );
    assert!(row.prompt_tokens > 0);
    let health = tollgate.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

const TEN_MB: usize = 10 * 1024 * 1024;

#[tokio::test]
async fn a_10_mb_answer_reaches_the_client_whole_and_is_billed_from_its_tail() {
    let content = "word ".repeat(TEN_MB / 5);
    let mut answer = common::mock_upstream::chat_completion(123_456, 2_097_152);
    answer["choices"][0]["message"]["content"] = json!(content);
    let expected = answer.to_string();
    assert!(expected.len() > TEN_MB);
    let upstream = MockUpstream::start(move |_| json(StatusCode::OK, &answer)).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), expected.len());
    assert!(body[..] == *expected.as_bytes(), "the body is intact");
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.outcome.as_str(), row.usage_source.as_str()),
        ("ok", "upstream")
    );
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (123_456, 2_097_152)
    );
    assert!(row.cost_pico.unwrap() > 0);
}

#[tokio::test]
async fn a_10_mb_stream_is_relayed_whole_and_billed_exactly() {
    let words: Vec<String> = (0..TEN_MB / 1024)
        .map(|i| format!("{i:08} {}", "y".repeat(1000)))
        .collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let chunks = chat_chunks(&refs, Some((77, 10_240)));
    let upstream = MockUpstream::start(move |_| common::mock_upstream::sse(&chunks)).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.len() > TEN_MB, "{}", text.len());
    let last = format!("{:08} ", words.len() - 1);
    assert!(text.contains(&last) && text.ends_with("data: [DONE]\n\n"));
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.outcome.as_str(), row.usage_source.as_str()),
        ("ok", "upstream")
    );
    assert_eq!((row.prompt_tokens, row.completion_tokens), (77, 10_240));
}

/// Polls `check` until it holds (the fault has been absorbed), failing after 30 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
