//! Attacks on the edge, sent as raw bytes where an HTTP client would tidy them away:
//! request smuggling, encoded path tricks, oversized headers, and a tollgate key at
//! every admin route (walked from the admin module's own route list).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::harness::{ADMIN_KEY, Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, chat_completion, json};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as is and reads until the server closes the connection.
async fn raw(tollgate: &Harness, request: &[u8]) -> String {
    let addr = tollgate.url.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        socket.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status codes of every response in a raw HTTP/1 answer.
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| answer.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

async fn upstream() -> MockUpstream {
    MockUpstream::start(|request| match request.path.as_str() {
        "/v1/chat/completions" => json(StatusCode::OK, &chat_completion(3, 2)),
        _ => json(StatusCode::OK, &json!({"object": "list", "data": []})),
    })
    .await
}

const SMUGGLED: &str =
    "GET /admin/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-test-secret\r\n\r\n";

#[tokio::test]
async fn conflicting_lengths_never_let_a_second_request_through() {
    let upstream = upstream().await;
    let tollgate = Harness::start(&upstream.base_url).await;
    // CL.TE: Content-Length covers the smuggled request, chunked framing ends before it.
    // hyper follows RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is dropped,
    // and the connection is closed after the answer, so the bytes after the chunked
    // body are never read as a request.
    let body = format!("0\r\n\r\n{SMUGGLED}");
    for (path, order) in [
        ("/v1/files", "cl-te"),
        ("/v1/files", "te-cl"),
        ("/v1/chat/completions", "cl-te"),
    ] {
        let framing = if order == "cl-te" {
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            )
        } else {
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                body.len()
            )
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-client\r\n{framing}\r\n{body}"
        );
        let answer = raw(&tollgate, request.as_bytes()).await;
        let seen = statuses(&answer);
        assert_eq!(seen.len(), 1, "{path} {order}: one answer only: {answer}");
        assert!(
            !answer.contains("\"data\":[{") && !answer.contains("tg-"),
            "{answer}"
        );
    }
    // TE.CL the other way round: chunked framing that carries the smuggled request as
    // its payload; a short Content-Length would end the body early for a CL reader.
    let chunk = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let request = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
    );
    let answer = raw(&tollgate, request.as_bytes()).await;
    assert_eq!(statuses(&answer).len(), 1, "{answer}");
    // Whatever reached the upstream went as one request, re-framed by tollgate, and
    // no admin route answered.
    for received in upstream.received() {
        assert!(received.path.starts_with("/v1/"), "{}", received.path);
        assert!(
            received.headers.get_all("content-length").iter().count() <= 1,
            "{:?}",
            received.headers
        );
    }
}

#[tokio::test]
async fn ambiguous_framing_is_refused_with_400() {
    let upstream = upstream().await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let cases: [(&str, &str); 7] = [
        (
            "two different lengths",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
        ("a list of lengths", "Content-Length: 5, 6\r\n"),
        ("a signed length", "Content-Length: +5\r\n"),
        (
            "a coding other than chunked last",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        ("an unknown coding", "Transfer-Encoding: xchunked\r\n"),
        ("space before the colon", "Content-Length : 5\r\n"),
        (
            "a folded header",
            "Content-Length: 5\r\n Transfer-Encoding: chunked\r\n",
        ),
    ];
    for (what, framing) in cases {
        let request = format!("POST /v1/files HTTP/1.1\r\nHost: x\r\n{framing}\r\nhello{SMUGGLED}");
        let answer = raw(&tollgate, request.as_bytes()).await;
        assert_eq!(statuses(&answer), [400], "{what}: {answer}");
    }
    // HTTP/1.0 has no chunked coding: a Transfer-Encoding there is an attack.
    let answer = raw(
        &tollgate,
        b"POST /v1/files HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"),
        "{answer}"
    );
    assert!(upstream.received().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn repeated_equal_lengths_are_one_request() {
    let upstream = upstream().await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Length: {0}\r\nContent-Length: {0}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(&tollgate, request.as_bytes()).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(tollgate.rows().await.len(), 1);
}

/// Paths that try to climb out of `/v1` (to the admin API, or above the upstream's base
/// path), plain, percent-encoded, double-encoded, with backslashes and parameters.
const TRICKS: &[&str] = &[
    "/v1/../admin/keys",
    "/v1/./../admin/keys",
    "/v1/models/../../admin/keys",
    "/v1/%2e%2e/admin/keys",
    "/v1/%2E%2e/admin/keys",
    "/v1/.%2e/admin/keys",
    "/v1/%2e./admin/keys",
    "/v1/%2e/%2e%2e/admin/keys",
    "/v1/..%2fadmin%2fkeys",
    "/v1/%2e%2e%2fadmin%2fkeys",
    "/v1/%2F..%2Fadmin%2Fkeys",
    "/v1/%252e%252e/admin/keys",
    "/v1/%252e%252e%252fadmin%252fkeys",
    "/v1/%25252e%25252e/admin/keys",
    "/v1/..\\admin\\keys",
    "/v1/%5c..%5cadmin%5ckeys",
    "/v1/..;/admin/keys",
    "/v1/models;/../../admin/keys",
    "/v1/.../admin/keys",
    "/v1//admin/keys",
    "/v1///../admin/keys",
    "/v1/%00/../admin/keys",
    "/v1/models%00.json",
    "/v1/models?x=/../../admin/keys",
    "/v1/models#/../../admin/keys",
    "/v1/%c0%ae%c0%ae/admin/keys",
    "/v1/%u002e%u002e/admin/keys",
    "//admin/keys",
    "/admin/keys/../../v1/models",
    "/v1/..",
    "/v1/.",
    "http://x/v1/../admin/keys",
    "http://x/v1/%2e%2e/admin/keys",
];

/// Percent-decodes once (what an upstream's router would do).
fn decode_once(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(value) = path
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn encoded_path_tricks_never_reach_admin_nor_leave_the_base_path() {
    // The upstream sits under a deeper base path, so "leaving it" is visible.
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &json!({"ok": true}))).await;
    let base = format!("{}/deep/base", upstream.base_url);
    let tollgate = Harness::start(&base).await;
    for trick in TRICKS {
        // The admin key as bearer: if any trick reached an admin route, it would answer.
        let request = format!(
            "GET {trick} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(&tollgate, request.as_bytes()).await;
        let status = statuses(&answer).first().copied().unwrap_or(0);
        let from_upstream = answer
            .to_ascii_lowercase()
            .contains("x-upstream-request-id: req_upstream_1");
        match status {
            // Forwarded: the answer must be the upstream's, never an admin route's.
            200 => assert!(
                from_upstream,
                "{trick} answered by tollgate itself: {answer}"
            ),
            400 | 404 => {
                let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
                let body: Value = serde_json::from_str(body)
                    .unwrap_or_else(|_| panic!("{trick}: not JSON: {answer}"));
                assert_openai_error(&body);
            }
            _ => panic!("{trick} -> {status}: {answer}"),
        }
        assert!(
            !answer.contains("\"prefix\""),
            "{trick} listed keys: {answer}"
        );
    }
    for received in upstream.received() {
        let decoded = decode_once(&received.path);
        assert!(
            received.path.starts_with("/v1/deep/base/") || received.path == "/v1/deep/base",
            "left the base path: {}",
            received.path
        );
        assert!(
            !decoded.split(['/', '\\']).any(|s| s == ".." || s == "."),
            "a dot segment reached the upstream: {} ({decoded})",
            received.path
        );
    }
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let upstream = upstream().await;
    let tollgate = Harness::start(&upstream.base_url).await;
    // One enormous header (past hyper's 400 KiB read buffer).
    let big = format!(
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    // Or too many of them (past hyper's 100).
    let mut many = String::from("GET /v1/models HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for request in [big, many] {
        let addr = tollgate.url.trim_start_matches("http://").to_owned();
        let mut socket = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before the whole request is written.
        let _ = socket.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    // HTTP/2: the header list is capped at 16 KiB.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let refused = h2
        .get(format!("{}/v1/models", tollgate.url))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await;
    match refused {
        Ok(response) => assert_eq!(response.status(), 431),
        // Far over the cap, h2 closes the connection (GOAWAY, ENHANCE_YOUR_CALM).
        Err(error) => assert!(
            format!("{error:?}").contains("header_list_way_too_large"),
            "{error:?}"
        ),
    }
    assert!(upstream.received().is_empty(), "nothing was forwarded");
    let health = tollgate.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn every_admin_route_refuses_a_tollgate_key() {
    let upstream = upstream().await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.auth.mode = tollgate::config::AuthMode::Keys;
    })
    .await;
    let key = tollgate.key("tenants", json!({"name": "tenant"})).await;
    let prefix = &key[..11];
    let routes = tollgate::admin::routes();
    assert!(routes.len() >= 10, "the walk covers the whole admin API");
    for route in routes {
        let (method, path) = (route.method, route.path);
        // The tollgate key aimed at its own key and team: the most tempting target.
        let own = path.replace("{key}", prefix).replace("{team}", "tenants");
        let body = json!({"name": "x", "team": "tenants", "tier": "tier-5"});
        let as_tenant = tollgate
            .client
            .request(method.clone(), format!("{}{own}", tollgate.url))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(as_tenant.status(), 403, "{method} {path}");
        let error: Value = as_tenant.json().await.unwrap();
        assert_eq!(assert_openai_error(&error)["code"], "admin_only");
        let anonymous = tollgate
            .client
            .request(method.clone(), format!("{}{own}", tollgate.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{method} {path}");
        // The route exists: the admin key reaches a handler (a made-up id is the
        // handler's 404, not the router's).
        let elsewhere = path
            .replace("{key}", "tg-nonexist")
            .replace("{team}", "no-such-team");
        let as_admin = tollgate
            .admin(method.clone(), &elsewhere)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = as_admin.status();
        let answer: Value = as_admin.json().await.unwrap();
        assert!(
            ![401, 403, 405].contains(&status.as_u16()) && answer["error"]["code"] != "unknown_url",
            "{method} {path} -> {status}: {answer}"
        );
    }
    // The tenant's key is untouched by all that.
    let me = tollgate
        .get("/v1/tollgate/me")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}
