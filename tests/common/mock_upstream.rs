//! A scripted OpenAI-compatible upstream on 127.0.0.1:0. Each test supplies the answer
//! as a closure; the mock records every request it receives.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    async fn read(request: Request) -> Self {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Self {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream received JSON")
    }
}

type Handler = Arc<dyn Fn(&Received) -> Response + Send + Sync>;

pub struct MockUpstream {
    pub base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl MockUpstream {
    pub async fn start(handler: impl Fn(&Received) -> Response + Send + Sync + 'static) -> Self {
        let handler: Handler = Arc::new(handler);
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (handler, log) = (handler.clone(), log.clone());
            async move {
                let received = Received::read(request).await;
                let response = handler(&received);
                log.lock().unwrap().push(received);
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base_url: format!("http://{addr}/v1"),
            received,
        }
    }

    /// An upstream whose single answer is an SSE stream the test writes by hand.
    pub async fn start_stream() -> (Self, mpsc::UnboundedSender<Bytes>) {
        let (tx, response) = sse_channel();
        let response = Mutex::new(Some(response));
        let upstream = Self::start(move |_| {
            response
                .lock()
                .unwrap()
                .take()
                .expect("a hand-written stream answers once")
        })
        .await;
        (upstream, tx)
    }

    /// An upstream that answers its first request only when the test sends the answer.
    pub async fn start_gated() -> (Self, tokio::sync::oneshot::Sender<Response>) {
        let (answer, answered) = tokio::sync::oneshot::channel::<Response>();
        let answered = Arc::new(tokio::sync::Mutex::new(Some(answered)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (answered, log) = (answered.clone(), log.clone());
            async move {
                let received = Received::read(request).await;
                log.lock().unwrap().push(received);
                let gate = answered
                    .lock()
                    .await
                    .take()
                    .expect("a gated upstream answers once");
                gate.await.expect("the test sends an answer")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let upstream = Self {
            base_url: format!("http://{addr}/v1"),
            received,
        };
        (upstream, answer)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received()
            .pop()
            .expect("the upstream received a request")
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "req_upstream_1")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A complete SSE answer: each item becomes `data: ITEM\n\n`.
pub fn sse(data: &[String]) -> Response {
    let mut body = String::new();
    for item in data {
        body.push_str("data: ");
        body.push_str(item);
        body.push_str("\n\n");
    }
    sse_response(Body::from(body))
}

/// An SSE answer the test writes by hand: send raw bytes, drop the sender to end it.
pub fn sse_channel() -> (mpsc::UnboundedSender<Bytes>, Response) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|item| item.map(Ok::<_, Infallible>))
    });
    (tx, sse_response(Body::from_stream(stream)))
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header("x-request-id", "req_upstream_1")
        .body(body)
        .unwrap()
}

pub fn chat_completion(prompt: u64, completion: u64) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_732_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
    })
}

/// Chat chunks as OpenAI writes them with `include_usage`: `"usage":null` on every
/// content chunk, then a usage-only chunk, then `[DONE]`.
pub fn chat_chunks(words: &[&str], usage: Option<(u64, u64)>) -> Vec<String> {
    let with_usage = usage.is_some();
    let mut chunks = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let delta = if i == 0 {
            serde_json::json!({"role": "assistant", "content": word})
        } else {
            serde_json::json!({"content": word})
        };
        chunks.push(chat_chunk(delta, None, with_usage));
    }
    chunks.push(chat_chunk(serde_json::json!({}), Some("stop"), with_usage));
    if let Some((prompt, completion)) = usage {
        chunks.push(
            serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_732_000_000,
                "model": "gpt-4o-mini-2024-07-18", "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            })
            .to_string(),
        );
    }
    chunks.push("[DONE]".to_owned());
    chunks
}

pub fn chat_chunk(delta: serde_json::Value, finish: Option<&str>, usage_null: bool) -> String {
    let mut chunk = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_732_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    if usage_null {
        chunk["usage"] = serde_json::Value::Null;
    }
    chunk.to_string()
}

/// An upstream whose usage the client scripts per request with `x-mock-prompt` and
/// `x-mock-completion` headers (tollgate forwards them), so a test knows each cost.
pub async fn scripted_usage() -> MockUpstream {
    MockUpstream::start(|received| {
        let number = |name: &str| {
            received
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
        };
        json(
            StatusCode::OK,
            &chat_completion(number("x-mock-prompt"), number("x-mock-completion")),
        )
    })
    .await
}

/// Counts what a streamed answer has handed to the mock's HTTP server and how many of
/// those answers are still alive, so a test can see backpressure reach the upstream and
/// abandoned streams let go of it.
#[derive(Debug, Default)]
pub struct StreamGauge {
    pub bytes_sent: std::sync::atomic::AtomicU64,
    pub live: std::sync::atomic::AtomicI64,
}

/// Decrements `live` when the answer's body is dropped (its connection closed).
struct LiveGuard(Arc<StreamGauge>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An SSE answer that sends `head` and then, if `filler` is non-empty, repeats it until
/// `total` bytes have gone out; after that it holds the stream open and never ends.
/// Every byte handed to the server is counted in `gauge`.
pub fn endless_sse(head: Bytes, filler: Bytes, total: u64, gauge: Arc<StreamGauge>) -> Response {
    use std::sync::atomic::Ordering;
    gauge.live.fetch_add(1, Ordering::SeqCst);
    let guard = LiveGuard(gauge.clone());
    let state = (Some(head), 0u64, guard);
    let stream = futures_util::stream::unfold(state, move |(head, sent, guard)| {
        let filler = filler.clone();
        async move {
            let chunk = match head {
                Some(head) => head,
                None if !filler.is_empty() && sent < total => filler,
                None => {
                    // Never ends: the guard lives until the connection is dropped.
                    futures_util::future::pending::<()>().await;
                    return None;
                }
            };
            let sent = sent + chunk.len() as u64;
            guard
                .0
                .bytes_sent
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, Infallible>(chunk), (None, sent, guard)))
        }
    });
    sse_response(Body::from_stream(stream))
}

/// An SSE answer whose body is exactly `body`, malformed or not.
pub fn sse_response_raw(body: Bytes) -> Response {
    sse_response(Body::from(body))
}
