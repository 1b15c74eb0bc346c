//! The proxy core end to end: a real tollgate in front of a scripted upstream on
//! loopback, spoken to over HTTP, with the ledger read back from its SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use bytes::Bytes;
use common::harness::{Harness, assert_openai_error, refused_url, say_hello, silent_url};
use common::mock_upstream::{MockUpstream, chat_chunk, chat_chunks, chat_completion, json, sse};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Reads an SSE body into its `data:` payloads.
async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn plain_chat_is_forwarded_with_the_upstream_key_and_recorded() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(12, 5))).await;
    let tollgate = Harness::start(&upstream.base_url).await;

    let response = tollgate
        .post("/v1/chat/completions")
        .header("x-request-id", "client-chosen-id")
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id");
    assert_eq!(
        response.headers()["x-upstream-request-id"],
        "req_upstream_1"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        chat_completion(12, 5),
        "the body is the upstream's, untouched"
    );

    let received = upstream.last();
    assert_eq!(received.path, "/v1/chat/completions");
    assert_eq!(
        received.headers["authorization"],
        "Bearer sk-upstream-secret"
    );
    assert_eq!(
        received.json(),
        say_hello(false),
        "a plain request is not rewritten"
    );

    let row = tollgate.only_row().await;
    assert_eq!(row.request_id, "client-chosen-id");
    assert_eq!(row.upstream_request_id.as_deref(), Some("req_upstream_1"));
    assert_eq!(row.endpoint, "chat.completions");
    assert_eq!(row.model_requested.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        row.model_answered.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!((row.prompt_tokens, row.completion_tokens), (12, 5));
    assert_eq!(
        (row.usage_source.as_str(), row.status, row.outcome.as_str()),
        ("upstream", 200, "ok")
    );
    assert!(!row.streamed);
    assert!(row.caller.starts_with("fp:") && !row.caller.contains("sk-client"));
}

#[tokio::test]
async fn h2c_clients_are_served_too() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(2, 3))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(format!("{}/v1/chat/completions", tollgate.url))
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let rows = tollgate.rows().await;
    assert_eq!(Harness::only(&rows).completion_tokens, 3);
}

#[tokio::test]
async fn a_request_id_is_minted_when_the_client_sends_none() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();
    let minted = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(minted.len(), 36, "a UUID: {minted}");
    let rows = tollgate.rows().await;
    assert_eq!(Harness::only(&rows).request_id, minted);
}

#[tokio::test]
async fn a_stream_hides_the_usage_chunk_it_asked_for() {
    let upstream = MockUpstream::start(|request| {
        assert_eq!(request.json()["stream_options"]["include_usage"], true);
        sse(&chat_chunks(&["Hel", "lo"], Some((9, 2))))
    })
    .await;
    let tollgate = Harness::start(&upstream.base_url).await;

    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    let data = sse_data(response).await;

    // Exactly what OpenAI would have sent a client that did not ask for usage.
    let expected: Vec<String> = chat_chunks(&["Hel", "lo"], None);
    assert_eq!(data, expected);

    let row = tollgate.only_row().await;
    assert!(row.streamed);
    assert_eq!((row.prompt_tokens, row.completion_tokens), (9, 2));
    assert_eq!(
        (row.usage_source.as_str(), row.outcome.as_str()),
        ("upstream", "ok")
    );
}

#[tokio::test]
async fn a_stream_keeps_the_usage_chunk_when_the_client_asked() {
    let upstream = MockUpstream::start(|_| sse(&chat_chunks(&["Hi"], Some((4, 1))))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let mut request = say_hello(true);
    request["stream_options"] = json!({"include_usage": true});

    let response = tollgate
        .post("/v1/chat/completions")
        .json(&request)
        .send()
        .await
        .unwrap();
    let data = sse_data(response).await;

    assert_eq!(
        data,
        chat_chunks(&["Hi"], Some((4, 1))),
        "passed through byte for byte"
    );
    assert_eq!(
        upstream.last().json(),
        request,
        "the request was not rewritten"
    );
}

#[tokio::test]
async fn chunks_reach_the_client_while_the_upstream_holds_the_stream_open() {
    let (upstream, tx) = MockUpstream::start_stream().await;
    let tollgate = Harness::start(&upstream.base_url).await;

    let client = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    let mut body = client.bytes_stream();
    let chunks = chat_chunks(&["one", "two"], Some((3, 2)));

    tx.send(Bytes::from(format!("data: {}\n\n", chunks[0])))
        .unwrap();
    // The upstream sends chunk 2 only after the client has seen chunk 1.
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("\"one\""));
    for chunk in &chunks[1..] {
        tx.send(Bytes::from(format!("data: {chunk}\n\n"))).unwrap();
    }
    drop(tx);
    let rest: Vec<Bytes> = body.map(Result::unwrap).collect().await;
    assert!(rest.iter().any(|b| b.windows(6).any(|w| w == b"[DONE]")));

    let rows = tollgate.rows().await;
    assert_eq!(Harness::only(&rows).completion_tokens, 2);
}

/// The client reads the first chunk and hangs up while the upstream is mid-stream.
async fn abandon_mid_stream(policy: &str) -> (Harness, tokio::sync::mpsc::UnboundedSender<Bytes>) {
    let (upstream, tx) = MockUpstream::start_stream().await;
    let policy = policy.to_owned();
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.server.on_client_disconnect = serde_json::from_value(json!(policy)).unwrap();
    })
    .await;
    let client = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    let mut body = client.bytes_stream();
    let chunk = chat_chunk(
        json!({"role": "assistant", "content": "The quick brown fox"}),
        None,
        true,
    );
    tx.send(Bytes::from(format!("data: {chunk}\n\n"))).unwrap();
    body.next().await.unwrap().unwrap();
    drop(body);
    (tollgate, tx)
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_billed_an_estimate_on_abort() {
    let (tollgate, tx) = abandon_mid_stream("abort").await;
    // The relay stops reading once it sees the client gone; the upstream stays open.
    let row = tollgate.only_row().await;
    assert_eq!(row.usage_source, "estimated");
    assert_eq!(row.outcome, "client_disconnected");
    assert_eq!(
        row.completion_tokens, 4,
        "\"The quick brown fox\" is 4 tokens"
    );
    assert!(
        row.prompt_tokens > 0,
        "the prompt is counted from the request"
    );
    drop(tx);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_gets_exact_usage_on_drain() {
    let (tollgate, tx) = abandon_mid_stream("drain").await;
    let chunks = chat_chunks(&[" jumps"], Some((11, 7)));
    for chunk in &chunks {
        tx.send(Bytes::from(format!("data: {chunk}\n\n"))).unwrap();
    }
    drop(tx);
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.usage_source.as_str(), row.outcome.as_str()),
        ("upstream", "client_disconnected")
    );
    assert_eq!((row.prompt_tokens, row.completion_tokens), (11, 7));
}

#[tokio::test]
async fn a_client_that_closes_right_after_the_last_chunk_is_billed() {
    let upstream = MockUpstream::start(|_| sse(&chat_chunks(&["a", "b", "c"], Some((5, 3))))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = Vec::new();
    while !seen.windows(6).any(|w| w == b"[DONE]") {
        seen.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    drop(body);
    let row = tollgate.only_row().await;
    assert_eq!(
        (
            row.prompt_tokens,
            row.completion_tokens,
            row.usage_source.as_str()
        ),
        (5, 3, "upstream")
    );
}

#[tokio::test]
async fn a_stream_the_upstream_cuts_is_estimated_and_the_client_gets_an_error_event() {
    let (upstream, tx) = MockUpstream::start_stream().await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let chunk = chat_chunk(json!({"content": "Hello world"}), None, true);
    tx.send(Bytes::from(format!("data: {chunk}\n\n"))).unwrap();
    drop(tx); // ends without [DONE]

    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(true))
        .send()
        .await
        .unwrap();
    let data = sse_data(response).await;
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data[0].contains("Hello world") && !data[0].contains("usage"));
    let error: Value = serde_json::from_str(&data[1]).unwrap();
    assert_openai_error(&error);

    let row = tollgate.only_row().await;
    assert_eq!(
        (row.usage_source.as_str(), row.outcome.as_str()),
        ("estimated", "upstream_cut")
    );
    assert_eq!(row.completion_tokens, 2);
}

#[tokio::test]
async fn upstream_errors_pass_through_with_status_and_body() {
    let error = json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}});
    let body = error.clone();
    let upstream =
        MockUpstream::start(move |_| json(StatusCode::INTERNAL_SERVER_ERROR, &body)).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.json::<Value>().await.unwrap(), error);
    let row = tollgate.only_row().await;
    assert_eq!((row.status, row.outcome.as_str()), (500, "upstream_error"));
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (0, 0),
        "nothing was billed"
    );
}

#[tokio::test]
async fn connection_refused_is_a_502_in_openai_shape() {
    let tollgate = Harness::start(&refused_url().await).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["type"], "server_error");
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.status, row.outcome.as_str()),
        (502, "upstream_unreachable")
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504() {
    let tollgate = Harness::start_with(&silent_url().await, |config| {
        config.upstreams[0].first_byte_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    tollgate
        .say_hello_refused(false, 504, "upstream_timeout")
        .await;
    let rows = tollgate.rows().await;
    assert_eq!(Harness::only(&rows).outcome, "upstream_timeout");
}

#[tokio::test]
async fn a_body_over_the_cap_is_a_413() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.server.max_body_bytes = 1024;
        config.server.max_upload_bytes = 2048;
    })
    .await;
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_openai_error(&response.json().await.unwrap());

    // Chunked, so no Content-Length warns in advance.
    let chunks = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(vec![b'{'; 1500])]);
    let response = tollgate
        .post("/v1/chat/completions")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    let upload = tollgate
        .post("/v1/files")
        .body(vec![0u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 413);
    assert!(upstream.received().is_empty(), "nothing was forwarded");
    assert!(tollgate.rows().await.is_empty());
}

#[tokio::test]
async fn models_and_multipart_files_pass_through_untouched() {
    let upstream = MockUpstream::start(|request| match request.path.as_str() {
        "/v1/models" => json(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": "gpt-4o-mini"}]}),
        ),
        _ => json(
            StatusCode::OK,
            &json!({"id": "file-abc", "object": "file", "purpose": "batch"}),
        ),
    })
    .await;
    let tollgate = Harness::start(&upstream.base_url).await;

    let models = tollgate
        .client
        .get(format!("{}/v1/models?limit=5", tollgate.url))
        .bearer_auth("sk-client-key")
        .header("openai-organization", "org-1")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(
        models.json::<Value>().await.unwrap()["data"][0]["id"],
        "gpt-4o-mini"
    );
    let received = upstream.last();
    assert_eq!(
        (received.path.as_str(), received.query.as_deref()),
        ("/v1/models", Some("limit=5"))
    );
    assert_eq!(received.headers["openai-organization"], "org-1");
    assert_eq!(
        received.headers["authorization"],
        "Bearer sk-upstream-secret"
    );

    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{\"custom_id\":\"1\"}\n".to_vec())
                .file_name("in.jsonl"),
        );
    let file = tollgate
        .post("/v1/files")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    let received = upstream.last();
    let content_type = received.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let body = String::from_utf8_lossy(&received.body);
    assert!(
        body.contains("name=\"purpose\"") && body.contains("{\"custom_id\":\"1\"}"),
        "{body}"
    );

    assert!(
        tollgate.rows().await.is_empty(),
        "pass-through routes carry no usage and no rows"
    );
}

#[tokio::test]
async fn embeddings_completions_and_responses_are_metered() {
    let upstream = MockUpstream::start(|request| match request.path.as_str() {
        "/v1/embeddings" => json(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"embedding": [0.1]}], "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}),
        ),
        "/v1/completions" => json(
            StatusCode::OK,
            &json!({"object": "text_completion", "model": "gpt-3.5-turbo-instruct", "choices": [{"text": "hi"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
        ),
        _ => {
            let events = [
                json!({"type": "response.created", "response": {"model": "gpt-4.1-2025-04-14", "usage": null}}),
                json!({"type": "response.output_text.delta", "delta": "Hi"}),
                json!({"type": "response.completed", "response": {"model": "gpt-4.1-2025-04-14", "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 18}}}),
            ];
            let body: String = events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
                .collect();
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::from(body))
                .unwrap()
        }
    })
    .await;
    let tollgate = Harness::start(&upstream.base_url).await;
    for (path, body) in [
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "hello"}),
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say"}),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4.1", "input": "Hi", "stream": true}),
        ),
    ] {
        let response = tollgate.post(path).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        if path == "/v1/responses" {
            assert!(
                text.contains("event: response.completed"),
                "responses stream relayed whole"
            );
        }
    }
    let rows = tollgate.rows().await;
    let by_endpoint = |endpoint: &str| {
        rows.iter()
            .find(|r| r.endpoint == endpoint)
            .unwrap()
            .clone()
    };
    let embeddings = by_endpoint("embeddings");
    assert_eq!(
        (embeddings.prompt_tokens, embeddings.completion_tokens),
        (8, 0)
    );
    let completions = by_endpoint("completions");
    assert_eq!(
        (completions.prompt_tokens, completions.completion_tokens),
        (3, 1)
    );
    let responses = by_endpoint("responses");
    assert_eq!(
        (
            responses.prompt_tokens,
            responses.cached_tokens,
            responses.completion_tokens,
            responses.reasoning_tokens
        ),
        (12, 4, 6, 2)
    );
    assert_eq!(
        responses.model_answered.as_deref(),
        Some("gpt-4.1-2025-04-14")
    );
    assert!(rows.iter().all(|r| r.usage_source == "upstream"));
}

#[tokio::test]
async fn a_provider_that_reports_no_usage_is_counted_and_marked_estimated() {
    let upstream = MockUpstream::start(|_| {
        let mut body = chat_completion(0, 0);
        body.as_object_mut().unwrap().remove("usage");
        json(StatusCode::OK, &body)
    })
    .await;
    let tollgate = Harness::start(&upstream.base_url).await;
    tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();
    let row = tollgate.only_row().await;
    assert_eq!(row.usage_source, "estimated");
    // "Say hello" as one user message: 3 + 1 (role) + 2 (content) + 3 (priming).
    assert_eq!(row.prompt_tokens, 9);
    assert_eq!(row.completion_tokens, 3, "\"Hello there!\"");
}

#[tokio::test]
async fn requests_route_by_model_and_an_unserved_model_is_a_404() {
    let local = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let openai = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(2, 2))).await;
    let local_url = local.base_url.clone();
    let tollgate = Harness::start_with(&openai.base_url, move |config| {
        config.upstreams[0].models = vec!["gpt-*".to_owned(), "text-embedding-*".to_owned()];
        config.upstreams.insert(
            0,
            tollgate::config::UpstreamConfig {
                name: "local".to_owned(),
                base_url: local_url,
                models: vec!["qwen*".to_owned()],
                ..Default::default()
            },
        );
    })
    .await;
    let ask = |model: &'static str| {
        tollgate
            .post("/v1/chat/completions")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(ask("qwen2.5-7b").await.unwrap().status(), 200);
    assert_eq!(ask("gpt-4o-mini").await.unwrap().status(), 200);
    let refused = ask("claude-haiku-4.5").await.unwrap();
    assert_eq!(refused.status(), 404);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["code"], "model_not_found");

    assert_eq!(local.received().len(), 1);
    assert!(
        local
            .last()
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("sk-client-key"),
        "an upstream without a key gets the client's bearer, never another upstream's key"
    );
    assert_eq!(openai.received().len(), 1);
    assert_eq!(
        tollgate.rows().await.len(),
        2,
        "the refused request cost nothing and has no row"
    );
}

#[tokio::test]
async fn a_plain_answer_cut_midway_is_a_502_not_a_truncated_200() {
    let upstream = MockUpstream::start(|_| {
        // Headers and the first part go out (the pause makes hyper flush them), then
        // the connection breaks.
        let parts = futures_util::stream::unfold(0, |step| async move {
            match step {
                0 => Some((
                    Ok(Bytes::from_static(b"{\"id\":\"chatcmpl-1\",\"choices\":[")),
                    1,
                )),
                1 => {
                    tokio::task::yield_now().await;
                    Some((Err(std::io::Error::other("connection reset")), 2))
                }
                _ => None,
            }
        });
        axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from_stream(parts))
            .unwrap()
    })
    .await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_openai_error(&body);
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.status, row.outcome.as_str(), row.usage_source.as_str()),
        (502, "upstream_cut", "estimated")
    );
    assert!(row.prompt_tokens > 0 && row.completion_tokens == 0);
}

#[tokio::test]
async fn a_client_that_hangs_up_before_the_upstream_answers_is_still_billed() {
    let (upstream, answer) = MockUpstream::start_gated().await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let gone = tollgate
        .post("/v1/chat/completions")
        .json(&say_hello(false))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up before any answer");
    assert_eq!(
        upstream.received().len(),
        1,
        "the request had reached the upstream"
    );

    // The upstream answers (and bills) after the client has left.
    answer
        .send(json(StatusCode::OK, &chat_completion(21, 8)))
        .unwrap();
    let row = tollgate.only_row().await;
    assert_eq!((row.prompt_tokens, row.completion_tokens), (21, 8));
    assert_eq!(
        (row.usage_source.as_str(), row.outcome.as_str()),
        ("upstream", "client_disconnected")
    );
}
