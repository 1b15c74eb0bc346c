//! Graceful shutdown: in-flight streams finish and their rows are flushed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, chat_chunks};
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test]
async fn shutdown_lets_an_open_stream_finish_and_flushes_its_row() {
    let (upstream, tx) = MockUpstream::start_stream().await;
    let mut tollgate = Harness::start(&upstream.base_url).await;

    let request = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&request)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let chunks = chat_chunks(&["still", "here"], Some((6, 2)));
    tx.send(Bytes::from(format!("data: {}\n\n", chunks[0])))
        .unwrap();
    body.next().await.unwrap().unwrap();

    // SIGTERM arrives mid-stream: stop accepting, let the stream run to its end.
    let url = tollgate.url.clone();
    let shutdown = async {
        tollgate.shutdown().await;
    };
    let finish_stream = async {
        for chunk in &chunks[1..] {
            tx.send(Bytes::from(format!("data: {chunk}\n\n"))).unwrap();
        }
        drop(tx); // the upstream closes its stream after [DONE]
        let rest: Vec<Bytes> = body.map(Result::unwrap).collect().await;
        rest.concat()
    };
    let ((), rest) = tokio::join!(shutdown, finish_stream);
    assert!(
        rest.windows(6).any(|w| w == b"[DONE]"),
        "the stream ran to its end"
    );

    let refused = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "no new connections after shutdown");

    let rows = tollgate.read_rows().await;
    let row = Harness::only(&rows);
    assert_eq!(
        (
            row.prompt_tokens,
            row.completion_tokens,
            row.outcome.as_str()
        ),
        (6, 2, "ok")
    );
}
