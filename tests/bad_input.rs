//! Garbage, truncated and oversized requests at every route: never a panic, always a
//! well-formed OpenAI error, and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::harness::{Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, chat_completion, json};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/models",
    "/v1/files",
    "/v1",
    "/healthz",
    "/readyz",
    "/",
    "/admin",
    "/v1/../admin",
    "/v1/%2e%2e/admin",
    "/nope/v1/chat/completions",
];

fn bodies() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"{".to_vec(),
        b"not json at all".to_vec(),
        b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        b"[]".to_vec(),
        b"null".to_vec(),
        b"{\"model\":42}".to_vec(),
        b"{\"model\":\"gpt-4o-mini\",\"stream\":\"yes\",\"messages\":7}".to_vec(),
        // Deeper than serde_json's recursion limit.
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        vec![b'x'; 5000],
    ]
}

#[tokio::test]
async fn garbage_at_every_route_gets_a_well_formed_answer() {
    let upstream = MockUpstream::start(|request| match request.path.as_str() {
        "/v1/models" => json(StatusCode::OK, &serde_json::json!({"object": "list", "data": []})),
        path if path.ends_with("completions") || path.ends_with("embeddings") || path.ends_with("responses") => {
            json(StatusCode::OK, &chat_completion(1, 1))
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"message": "no", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
    })
    .await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.server.max_body_bytes = 4096;
    })
    .await;

    for route in ROUTES {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            for body in bodies() {
                let response = tollgate
                    .client
                    .request(method.parse().unwrap(), format!("{}{route}", tollgate.url))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                assert!(
                    response.headers().contains_key("x-request-id"),
                    "{method} {route}"
                );
                let bytes = response.bytes().await.unwrap();
                if status.is_success() {
                    continue;
                }
                let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    panic!(
                        "{method} {route} -> {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                assert_openai_error(&body);
                assert!(
                    status.is_client_error(),
                    "{method} {route} -> {status}: {body}"
                );
            }
        }
    }

    // Nothing malformed reached the upstream on a metered route (other methods on
    // those paths pass through, as OpenAI answers them itself).
    for received in upstream.received() {
        let metered = [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/responses",
        ];
        if received.method == "POST" && metered.contains(&received.path.as_str()) {
            let json: Value =
                serde_json::from_slice(&received.body).expect("only valid JSON is forwarded");
            assert!(json.is_object());
        }
        assert!(!received.path.contains(".."), "{}", received.path);
    }
    let health = tollgate.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn malformed_json_is_a_400_and_nothing_is_forwarded() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the JSON body")
    );
    assert!(upstream.received().is_empty());
    assert!(tollgate.rows().await.is_empty());
}

#[tokio::test]
async fn unknown_paths_outside_v1_are_openai_shaped_404s() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    for path in ["/", "/chat/completions", "/v2/models", "/admin/nope"] {
        let response = tollgate
            .client
            .get(format!("{}{path}", tollgate.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(assert_openai_error(&body)["code"], "unknown_url");
    }
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn raw_protocol_garbage_does_not_take_the_server_down() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let addr = tollgate.url.trim_start_matches("http://").to_owned();
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"trunc",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(garbage).await.unwrap();
        socket.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
    }
    let health = tollgate.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}
