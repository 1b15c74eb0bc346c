//! `tollgate-mock-upstream`: a fast, fixed-answer OpenAI upstream for the load bench
//! (`bench/load.sh`) and the SDK end-to-end check (`ci/sdk_e2e.py`).
//!
//! It is the bench's baseline, so it does as little as it can per request: every answer
//! is rendered once at startup, requests are never parsed as JSON (a byte search finds
//! `"stream":true` and `"include_usage":true`), and hyper serves it directly.
//!
//! Knobs, as request headers:
//! - `x-mock-chunks: N`: content chunks (or Responses text deltas) in a stream (default 20).
//! - `x-mock-chunk-delay-ms: D`: sleep D ms between stream events, so a stream stays
//!   open long enough to be abandoned halfway.
//! - `x-mock-delay-ms: D`: sleep D ms before answering at all (any POST endpoint), to
//!   hang up on, or time out, a request that has no answer yet.
//!
//! A chat request naming a `service_tier` other than `auto` or `default` is answered
//! at that tier (its `service_tier` echoed, as OpenAI does for a tier it served);
//! anything else is answered as `default`.
//!
//! `--kind azure|anthropic|gemini|openai_compatible` (default `openai`, which checks
//! nothing) makes it play that provider for tollgate's upstream kinds: requests must
//! come on that provider's path and carry `--key` in its auth header, else 401; any
//! header holding a `--refuse-key` is refused too, so one provider's key reaching
//! another is caught. Chat answers then name that provider's model and use its usage
//! shape (Anthropic: cache reads and writes). The default answers are unchanged.

// A test tool, not part of the proxy: panicking on a startup error and printing the
// listening address to stdout are what it is for.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Sleep;

const DEFAULT_CHUNKS: usize = 20;
/// Bounds `x-mock-chunks`, so one header cannot make the mock render gigabytes.
const MAX_CHUNKS: usize = 100_000;
const CREATED: u64 = 1_732_000_000;
const CHAT_MODEL: &str = "gpt-4o-mini-2024-07-18";
const COMPLETION_MODEL: &str = "gpt-3.5-turbo-instruct";
const EMBEDDING_MODEL: &str = "text-embedding-3-small";
const PROMPT_TOKENS: usize = 9;
/// Twenty common words, one token each in the OpenAI encodings; stream chunk `i`
/// carries word `i % 20`, so a stream's text has as many tokens as it has chunks.
const WORDS: [&str; 20] = [
    "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "then", "runs",
    "back", "home", "to", "rest", "in", "the", "warm", "sun",
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_MOCK_CHUNKS: HeaderName = HeaderName::from_static("x-mock-chunks");
const X_MOCK_CHUNK_DELAY: HeaderName = HeaderName::from_static("x-mock-chunk-delay-ms");
const X_MOCK_DELAY: HeaderName = HeaderName::from_static("x-mock-delay-ms");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const REQ_MOCK: HeaderValue = HeaderValue::from_static("req_mock");

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-mock-upstream",
    about = "Fast fixed-answer OpenAI upstream for benches and end-to-end checks"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on the first stdout line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The provider to play: its path, auth header and usage shape.
    #[arg(long, value_enum, default_value_t = Provider::Openai)]
    kind: Provider,
    /// The key the provider's auth header must carry (none: no auth header at all).
    #[arg(long)]
    key: Option<String>,
    /// Keys that must appear in no header (other providers' keys); repeatable.
    #[arg(long)]
    refuse_key: Vec<String>,
}

/// tollgate's upstream kinds, as played by the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Provider {
    Openai,
    Azure,
    Anthropic,
    Gemini,
    #[value(name = "openai_compatible")]
    OpenaiCompatible,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let gate = (args.kind != Provider::Openai || args.key.is_some() || !args.refuse_key.is_empty())
        .then_some(Gate {
            kind: args.kind,
            key: args.key,
            refused: args.refuse_key,
        });
    runtime.block_on(serve(args.listen, Answers::render(args.kind), gate));
}

async fn serve(listen: SocketAddr, answers: Answers, gate: Option<Gate>) {
    let answers = Arc::new(Answers { gate, ..answers });
    let listener = TcpListener::bind(listen).await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {addr}").expect("stdout");
    stdout.flush().expect("stdout");

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors: back off rather than spin.
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let answers = answers.clone();
        let service = hyper::service::service_fn(move |request| {
            let answers = answers.clone();
            async move { Ok::<_, Infallible>(answers.answer(request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            // Clients hanging up mid-stream is expected; nothing to report.
            let _ = connection.await;
        });
    }
}

/// Which endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
    Embedding,
    Responses,
}

/// What the request asked for that changes the answer.
#[derive(Debug, Clone, Copy)]
struct Ask<'a> {
    stream: bool,
    include_usage: bool,
    chunks: usize,
    delay: Option<Duration>,
    /// A tier to answer at instead of `default` (chat only).
    tier: Option<&'a [u8]>,
}

/// Every answer body at the default chunk count, rendered once.
struct Answers {
    chat: Bytes,
    chat_stream: Bytes,
    chat_stream_usage: Bytes,
    completion: Bytes,
    completion_stream: Bytes,
    completion_stream_usage: Bytes,
    embedding: Bytes,
    responses: Bytes,
    responses_stream: Bytes,
    models: Bytes,
    /// The provider's checks, when it plays one; `None` on the bench's path.
    gate: Option<Gate>,
}

// === impl Answers ===

impl Answers {
    fn render(provider: Provider) -> Self {
        let joined = |events: Vec<Bytes>| -> Bytes { events.concat().into() };
        let chat = |usage| joined(events(provider, Kind::Chat, DEFAULT_CHUNKS, usage));
        let completion = |usage| joined(events(provider, Kind::Completion, DEFAULT_CHUNKS, usage));
        Self {
            chat: chat_completion(provider),
            chat_stream: chat(false),
            chat_stream_usage: chat(true),
            completion: text_completion(),
            completion_stream: completion(false),
            completion_stream_usage: completion(true),
            embedding: json_bytes(&embedding()),
            responses: json_bytes(&response_object(
                "completed",
                &words(DEFAULT_CHUNKS),
                Some(DEFAULT_CHUNKS),
            )),
            responses_stream: joined(events(provider, Kind::Responses, DEFAULT_CHUNKS, false)),
            models: json_bytes(&models()),
            gate: None,
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<MockBody> {
        let path = match &self.gate {
            None => std::borrow::Cow::Borrowed(request.uri().path()),
            Some(gate) => match gate.admit(&request) {
                Ok(path) => std::borrow::Cow::Owned(path),
                Err(StatusCode::UNAUTHORIZED) => {
                    return error(
                        StatusCode::UNAUTHORIZED,
                        &format!(
                            "mock {:?}: the request does not carry this provider's key the way it expects",
                            gate.kind
                        ),
                    );
                }
                Err(_) => return not_found(request.method(), request.uri().path()),
            },
        };
        let kind = match (request.method(), path.as_ref()) {
            (&Method::POST, "/v1/chat/completions") => Kind::Chat,
            (&Method::POST, "/v1/completions") => Kind::Completion,
            (&Method::POST, "/v1/embeddings") => Kind::Embedding,
            (&Method::POST, "/v1/responses") => Kind::Responses,
            (&Method::GET, "/v1/models") => {
                return respond(StatusCode::OK, JSON, MockBody::full(self.models.clone()));
            }
            (method, _) => return not_found(method, request.uri().path()),
        };
        let provider = self
            .gate
            .as_ref()
            .map_or(Provider::Openai, |gate| gate.kind);
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "The request body could not be read.",
            );
        };
        let ask = Ask {
            stream: kind != Kind::Embedding && flag(&body, b"\"stream\""),
            include_usage: flag(&body, b"\"include_usage\""),
            chunks: header_number(&parts.headers, &X_MOCK_CHUNKS)
                .map_or(DEFAULT_CHUNKS, |n| n.clamp(1, MAX_CHUNKS)),
            delay: millis(&parts.headers, &X_MOCK_CHUNK_DELAY),
            tier: (kind == Kind::Chat).then(|| served_tier(&body)).flatten(),
        };
        if let Some(delay) = millis(&parts.headers, &X_MOCK_DELAY) {
            tokio::time::sleep(delay).await;
        }
        if !ask.stream {
            let body = match kind {
                Kind::Chat => at_tier(&self.chat, ask.tier),
                Kind::Completion => self.completion.clone(),
                Kind::Embedding => self.embedding.clone(),
                Kind::Responses => self.responses.clone(),
            };
            return respond(StatusCode::OK, JSON, MockBody::full(body));
        }
        // Responses streams always carry usage; `include_usage` is a Chat/Completions option.
        let include_usage = ask.include_usage && kind != Kind::Responses;
        let body = match (ask.delay, ask.chunks == DEFAULT_CHUNKS) {
            (None, true) => MockBody::full(match (kind, include_usage) {
                (Kind::Chat, false) => at_tier(&self.chat_stream, ask.tier),
                (Kind::Chat, true) => at_tier(&self.chat_stream_usage, ask.tier),
                (Kind::Completion, false) => self.completion_stream.clone(),
                (Kind::Completion, true) => self.completion_stream_usage.clone(),
                _ => self.responses_stream.clone(),
            }),
            (None, false) => {
                let events: Bytes = events(provider, kind, ask.chunks, include_usage)
                    .concat()
                    .into();
                MockBody::full(at_tier(&events, ask.tier))
            }
            (Some(delay), _) => {
                let events = events(provider, kind, ask.chunks, include_usage);
                MockBody::paced(events.iter().map(|e| at_tier(e, ask.tier)).collect(), delay)
            }
        };
        respond(StatusCode::OK, EVENT_STREAM, body)
    }
}

/// What a provider checks before it answers.
struct Gate {
    kind: Provider,
    key: Option<String>,
    refused: Vec<String>,
}

impl Gate {
    /// The OpenAI path (`/v1/...`) a request on this provider's path stands for, or the
    /// provider's refusal: 401 for an auth header other than its own key or a refused
    /// key anywhere, 404 for another provider's path.
    fn admit<B>(&self, request: &Request<B>) -> Result<String, StatusCode> {
        let headers = request.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let foreign = headers.values().any(|value| {
            let text = String::from_utf8_lossy(value.as_bytes());
            self.refused.iter().any(|key| text.contains(key.as_str()))
        });
        let bearer = self.key.as_ref().map(|key| format!("Bearer {key}"));
        let key = self.key.as_deref();
        let authorized = match self.kind {
            // A bearer at Azure would be taken for an Entra token.
            Provider::Azure => header("api-key") == key && header("authorization").is_none(),
            Provider::Anthropic => {
                header("x-api-key") == key
                    && header("anthropic-version") == Some("2023-06-01")
                    && header("authorization").is_none_or(|a| Some(a) == bearer.as_deref())
            }
            Provider::Openai | Provider::Gemini | Provider::OpenaiCompatible => {
                header("authorization") == bearer.as_deref()
            }
        };
        if foreign || !authorized {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let path = request.uri().path();
        let rest = match self.kind {
            Provider::Azure => path.strip_prefix("/openai/v1").or_else(|| {
                // `/openai/deployments/<name>/...?api-version=`
                let deployed = path.strip_prefix("/openai/deployments/")?;
                let versioned = request
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p.starts_with("api-version=")));
                versioned.then(|| deployed.find('/').map(|at| &deployed[at..]))?
            }),
            Provider::Gemini => path.strip_prefix("/v1beta/openai"),
            Provider::Openai | Provider::Anthropic | Provider::OpenaiCompatible => {
                path.strip_prefix("/v1")
            }
        };
        match rest {
            Some(rest) => Ok(format!("/v1{rest}")),
            None => Err(StatusCode::NOT_FOUND),
        }
    }
}

fn respond(status: StatusCode, content_type: HeaderValue, body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(X_REQUEST_ID, REQ_MOCK);
    response
}

fn not_found(method: &Method, path: &str) -> Response<MockBody> {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "Unknown request URL: {method} {path}. Please check the URL for typos, \
             or see the docs at https://platform.openai.com/docs/api-reference/."
        ),
    )
}

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let code = if status == StatusCode::NOT_FOUND {
        Value::from("unknown_url")
    } else {
        Value::Null
    };
    let body = json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": code,
    }});
    respond(status, JSON, MockBody::full(json_bytes(&body)))
}

/// Whether `key` appears followed by `: true` (any spacing). Good enough for a mock: a
/// message text containing the literal key would fool it.
fn flag(body: &[u8], key: &[u8]) -> bool {
    let mut rest = body;
    while let Some(at) = find(rest, key) {
        rest = &rest[at + key.len()..];
        let value = rest.trim_ascii_start();
        if let Some(value) = value.strip_prefix(b":") {
            if value.trim_ascii_start().starts_with(b"true") {
                return true;
            }
        }
    }
    false
}

/// The tier a request asks to be served at, when it names one other than `auto` or
/// `default`: the string after `"service_tier":`, if it is plain lowercase letters (so it
/// can be written back into JSON as is). A byte search, like `flag`.
fn served_tier(body: &[u8]) -> Option<&[u8]> {
    let at = find(body, b"\"service_tier\"")?;
    let value = body[at + 14..].trim_ascii_start().strip_prefix(b":")?;
    let value = value.trim_ascii_start().strip_prefix(b"\"")?;
    let end = value
        .iter()
        .position(|&b| !(b.is_ascii_lowercase() || b == b'_'))?;
    let tier = &value[..end];
    let plain = value.get(end) == Some(&b'"') && !tier.is_empty();
    (plain && tier != b"auto" && tier != b"default").then_some(tier)
}

/// `body` with every `"service_tier":"default"` answering at `tier` instead.
fn at_tier(body: &Bytes, tier: Option<&[u8]>) -> Bytes {
    const DEFAULT: &[u8] = b"\"service_tier\":\"default\"";
    let Some(tier) = tier else {
        return body.clone();
    };
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut rest = &body[..];
    while let Some(at) = find(rest, DEFAULT) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"\"service_tier\":\"");
        out.extend_from_slice(tier);
        out.push(b'"');
        rest = &rest[at + DEFAULT.len()..];
    }
    out.extend_from_slice(rest);
    out.into()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn millis(headers: &hyper::HeaderMap, name: &HeaderName) -> Option<Duration> {
    header_number(headers, name)
        .filter(|&ms| ms > 0)
        .map(|ms| Duration::from_millis(ms as u64))
}

fn header_number(headers: &hyper::HeaderMap, name: &HeaderName) -> Option<usize> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

// === Answer bodies ===

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("JSON"))
}

/// Chunk `i`'s text: the first word bare, later ones with a leading space.
fn word(i: usize) -> String {
    let word = WORDS[i % WORDS.len()];
    if i == 0 {
        word.to_owned()
    } else {
        format!(" {word}")
    }
}

fn words(n: usize) -> String {
    (0..n).map(word).collect()
}

/// The chat model a provider answers with.
fn chat_model(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => CHAT_MODEL,
        Provider::Azure => "gpt-4o-2024-08-06",
        Provider::Anthropic => "claude-haiku-4-5-20251001",
        Provider::Gemini => "gemini-2.5-flash",
        Provider::OpenaiCompatible => "llama-3-8b",
    }
}

/// Anthropic's cache counts, on top of `PROMPT_TOKENS` uncached input.
const ANTHROPIC_CACHE_READ: usize = 200;
const ANTHROPIC_CACHE_WRITE: usize = 300;
/// Gemini's cached prompt tokens (on top of `PROMPT_TOKENS`) and thoughts.
const GEMINI_CACHED: usize = 400;
const GEMINI_REASONING: usize = 5;

/// A chat answer's usage in the provider's shape; `streamed` for a stream's usage
/// chunk, where Anthropic writes its native fields.
fn provider_usage(provider: Provider, completion: usize, streamed: bool) -> String {
    match (provider, streamed) {
        (Provider::Openai | Provider::Azure | Provider::OpenaiCompatible, _) => {
            chat_usage(completion)
        }
        (Provider::Anthropic, false) => {
            let prompt = PROMPT_TOKENS + ANTHROPIC_CACHE_READ + ANTHROPIC_CACHE_WRITE;
            format!(
                r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{ANTHROPIC_CACHE_READ}}},"cache_creation_input_tokens":{ANTHROPIC_CACHE_WRITE}}}"#,
                prompt + completion
            )
        }
        // Native: input_tokens excludes both cache counts.
        (Provider::Anthropic, true) => format!(
            r#"{{"input_tokens":{PROMPT_TOKENS},"cache_read_input_tokens":{ANTHROPIC_CACHE_READ},"cache_creation_input_tokens":{ANTHROPIC_CACHE_WRITE},"output_tokens":{completion}}}"#
        ),
        (Provider::Gemini, _) => {
            let prompt = PROMPT_TOKENS + GEMINI_CACHED;
            format!(
                r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{GEMINI_CACHED}}},"completion_tokens_details":{{"reasoning_tokens":{GEMINI_REASONING}}}}}"#,
                prompt + completion
            )
        }
    }
}

/// OpenAI's usage object, keys in the order the API writes them.
fn chat_usage(completion: usize) -> String {
    format!(
        r#"{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{completion},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#,
        PROMPT_TOKENS + completion
    )
}

/// A JSON string literal.
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

// Chat and legacy completion answers are written as templates rather than through
// `json!` so their keys come in OpenAI's order (`serde_json::Value` sorts them).

fn chat_completion(provider: Provider) -> Bytes {
    format!(
        r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":{CREATED},"model":"{}","choices":[{{"index":0,"message":{{"role":"assistant","content":{},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{},"service_tier":"default","system_fingerprint":"fp_mock"}}"#,
        chat_model(provider),
        quoted(&words(DEFAULT_CHUNKS)),
        provider_usage(provider, DEFAULT_CHUNKS, false)
    )
    .into()
}

fn text_completion() -> Bytes {
    format!(
        r#"{{"id":"cmpl-mock","object":"text_completion","created":{CREATED},"model":"{COMPLETION_MODEL}","choices":[{{"text":{},"index":0,"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{DEFAULT_CHUNKS},"total_tokens":{}}}}}"#,
        quoted(&words(DEFAULT_CHUNKS)),
        PROMPT_TOKENS + DEFAULT_CHUNKS
    )
    .into()
}

fn embedding() -> Value {
    json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0,
                  "embedding": [0.0023064255, -0.009327292, 0.015797347, -0.0077780345]}],
        "model": EMBEDDING_MODEL,
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    })
}

fn models() -> Value {
    let model = |id: &str, owner: &str| json!({"id": id, "object": "model", "created": CREATED, "owned_by": owner});
    json!({
        "object": "list",
        "data": [
            model("gpt-4o-mini", "system"),
            model(CHAT_MODEL, "system"),
            model(COMPLETION_MODEL, "system"),
            model(EMBEDDING_MODEL, "system"),
        ],
    })
}

/// A Responses API object; `usage` is null until the response is complete.
fn response_object(status: &str, text: &str, output_tokens: Option<usize>) -> Value {
    let output = if text.is_empty() {
        json!([])
    } else {
        json!([message_item("completed", text)])
    };
    let usage = output_tokens.map(|output| {
        json!({
            "input_tokens": PROMPT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": PROMPT_TOKENS + output,
        })
    });
    json!({
        "id": "resp_mock",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "model": CHAT_MODEL,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    })
}

fn message_item(status: &str, text: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({"id": "msg_mock", "type": "message", "status": status, "role": "assistant", "content": content})
}

/// A stream's SSE events, one `Bytes` per event.
fn events(provider: Provider, kind: Kind, chunks: usize, include_usage: bool) -> Vec<Bytes> {
    match kind {
        Kind::Chat | Kind::Completion => data_events(provider, kind, chunks, include_usage),
        Kind::Responses | Kind::Embedding => responses_events(chunks),
    }
}

/// Chat or legacy completion chunks as OpenAI writes them: `chunks` content chunks (the
/// first chat delta carries the role), a finish chunk, then with `include_usage` a
/// usage-only chunk (`"choices":[]`; every other chunk says `"usage":null`), then `[DONE]`.
fn data_events(provider: Provider, kind: Kind, chunks: usize, include_usage: bool) -> Vec<Bytes> {
    let head = if kind == Kind::Chat {
        format!(
            r#"{{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":{CREATED},"model":"{}","service_tier":"default","system_fingerprint":"fp_mock","choices":"#,
            chat_model(provider)
        )
    } else {
        format!(
            r#"{{"id":"cmpl-mock","object":"text_completion","created":{CREATED},"model":"{COMPLETION_MODEL}","choices":"#
        )
    };
    let tail = if include_usage {
        r#","usage":null}"#
    } else {
        "}"
    };
    let event = |json: String| Bytes::from(format!("data: {json}\n\n"));
    // `None` is the finish chunk.
    let choice = |i: Option<usize>| {
        let finish = if i.is_some() { "null" } else { r#""stop""# };
        match (kind, i) {
            (Kind::Chat, Some(0)) => format!(
                r#"[{{"index":0,"delta":{{"role":"assistant","content":{},"refusal":null}},"logprobs":null,"finish_reason":null}}]"#,
                quoted(&word(0))
            ),
            (Kind::Chat, Some(i)) => format!(
                r#"[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}]"#,
                quoted(&word(i))
            ),
            (Kind::Chat, None) => {
                r#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#.to_owned()
            }
            (_, i) => format!(
                r#"[{{"text":{},"index":0,"logprobs":null,"finish_reason":{finish}}}]"#,
                quoted(&i.map(word).unwrap_or_default())
            ),
        }
    };
    let mut events: Vec<Bytes> = (0..chunks)
        .map(Some)
        .chain([None])
        .map(|i| event(format!("{head}{}{tail}", choice(i))))
        .collect();
    if include_usage {
        let usage = match kind {
            Kind::Chat => provider_usage(provider, chunks, true),
            _ => chat_usage(chunks),
        };
        events.push(event(format!(r#"{head}[],"usage":{usage}}}"#)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn data(value: &Value) -> Bytes {
    let mut event = b"data: ".to_vec();
    serde_json::to_writer(&mut event, value).expect("JSON");
    event.extend_from_slice(b"\n\n");
    event.into()
}

/// A Responses stream: typed events, `chunks` text deltas, usage on `response.completed`,
/// and no `[DONE]` (OpenAI sends none on Responses streams).
fn responses_events(chunks: usize) -> Vec<Bytes> {
    let text = words(chunks);
    let part = json!({"type": "output_text", "text": "", "annotations": []});
    let done_part = json!({"type": "output_text", "text": text, "annotations": []});
    let mut bodies = vec![
        json!({"type": "response.created", "response": response_object("in_progress", "", None)}),
        json!({"type": "response.in_progress", "response": response_object("in_progress", "", None)}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": message_item("in_progress", "")}),
        json!({"type": "response.content_part.added", "item_id": "msg_mock", "output_index": 0,
               "content_index": 0, "part": part}),
    ];
    bodies.extend((0..chunks).map(|i| {
        json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0,
               "content_index": 0, "delta": word(i)})
    }));
    bodies.extend([
        json!({"type": "response.output_text.done", "item_id": "msg_mock", "output_index": 0,
               "content_index": 0, "text": text}),
        json!({"type": "response.content_part.done", "item_id": "msg_mock", "output_index": 0,
               "content_index": 0, "part": done_part}),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": message_item("completed", &text)}),
        json!({"type": "response.completed",
               "response": response_object("completed", &text, Some(chunks))}),
    ]);
    bodies
        .into_iter()
        .enumerate()
        .map(|(sequence, mut body)| {
            body["sequence_number"] = json!(sequence);
            let kind = body["type"].as_str().unwrap_or_default().to_owned();
            let mut event = format!("event: {kind}\n").into_bytes();
            event.extend_from_slice(&data(&body));
            event.into()
        })
        .collect()
}

// === MockBody ===

/// A response body: whole (one frame, with a length) or paced (one frame per SSE
/// event, `delay` apart). Hyper drops it when the client hangs up, ending the pacing.
enum MockBody {
    Full(Option<Bytes>),
    Paced {
        events: std::vec::IntoIter<Bytes>,
        delay: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    },
}

impl MockBody {
    fn full(bytes: Bytes) -> Self {
        Self::Full(Some(bytes))
    }

    fn paced(events: Vec<Bytes>, delay: Duration) -> Self {
        Self::Paced {
            events: events.into_iter(),
            delay,
            sleep: None,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Paced {
                events,
                delay,
                sleep,
            } => {
                // The first event goes at once; each later one waits `delay` after it.
                if let Some(timer) = sleep.as_mut() {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                let Some(event) = events.next() else {
                    return Poll::Ready(None);
                };
                *sleep = Some(Box::pin(tokio::time::sleep(*delay)));
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Paced { events, .. } => events.len() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Paced { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_with_any_spacing() {
        assert!(flag(br#"{"stream":true}"#, b"\"stream\""));
        assert!(flag(br#"{"stream" : true}"#, b"\"stream\""));
        assert!(!flag(br#"{"stream":false}"#, b"\"stream\""));
        assert!(!flag(br#"{"streams":true}"#, b"\"stream\""));
        assert!(flag(
            br#"{"stream_options":{"include_usage": true},"stream":true}"#,
            b"\"include_usage\""
        ));
    }

    #[test]
    fn a_named_tier_is_answered_at() {
        let cases: [(&[u8], Option<&[u8]>); 6] = [
            (br#"{"service_tier":"flex"}"#, Some(b"flex")),
            (
                br#"{"service_tier" : "priority","model":"m"}"#,
                Some(b"priority"),
            ),
            (br#"{"service_tier":"auto"}"#, None),
            (br#"{"service_tier":"default"}"#, None),
            (br#"{"service_tier":"fl\"ex"}"#, None),
            (br#"{"service_tier":5}"#, None),
        ];
        for (body, want) in cases {
            assert_eq!(served_tier(body), want, "{}", String::from_utf8_lossy(body));
        }
        let answers = Answers::render(Provider::Openai);
        let flex: Value = serde_json::from_slice(&at_tier(&answers.chat, Some(b"flex"))).unwrap();
        assert_eq!(flex["service_tier"], "flex");
        let stream = at_tier(&answers.chat_stream_usage, Some(b"flex"));
        let text = std::str::from_utf8(&stream).unwrap();
        assert_eq!(
            text.matches(r#""service_tier":"flex""#).count(),
            DEFAULT_CHUNKS + 2
        );
        assert!(!text.contains(r#""service_tier":"default""#));
        assert_eq!(at_tier(&answers.chat, None), answers.chat);
    }

    #[test]
    fn a_provider_gate_checks_path_auth_and_foreign_keys() {
        let gate = |kind| Gate {
            kind,
            key: Some("own".to_owned()),
            refused: vec!["other".to_owned()],
        };
        let ask = |gate: &Gate, uri: &str, headers: &[(&str, &str)]| {
            let mut request = Request::post(uri);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            gate.admit(&request.body(()).unwrap())
        };
        let azure = gate(Provider::Azure);
        let key = [("api-key", "own")];
        assert_eq!(
            ask(&azure, "/openai/v1/chat/completions", &key),
            Ok("/v1/chat/completions".to_owned())
        );
        assert_eq!(
            ask(
                &azure,
                "/openai/deployments/d/chat/completions?api-version=1",
                &key
            ),
            Ok("/v1/chat/completions".to_owned())
        );
        assert_eq!(
            ask(&azure, "/openai/deployments/d/chat/completions", &key),
            Err(StatusCode::NOT_FOUND)
        );
        let bearer = [("api-key", "own"), ("authorization", "Bearer own")];
        assert_eq!(
            ask(&azure, "/openai/v1/chat/completions", &bearer),
            Err(StatusCode::UNAUTHORIZED)
        );
        let gemini = gate(Provider::Gemini);
        let own = [("authorization", "Bearer own")];
        assert_eq!(
            ask(&gemini, "/v1beta/openai/chat/completions", &own),
            Ok("/v1/chat/completions".to_owned())
        );
        assert_eq!(
            ask(&gemini, "/v1/chat/completions", &own),
            Err(StatusCode::NOT_FOUND)
        );
        let foreign = [("authorization", "Bearer own"), ("x-extra", "other")];
        assert_eq!(
            ask(&gemini, "/v1beta/openai/chat/completions", &foreign),
            Err(StatusCode::UNAUTHORIZED)
        );
        let anthropic = gate(Provider::Anthropic);
        assert_eq!(
            ask(&anthropic, "/v1/chat/completions", &[("x-api-key", "own")]),
            Err(StatusCode::UNAUTHORIZED),
            "anthropic-version is required"
        );
    }

    #[test]
    fn anthropic_streams_report_native_cache_fields() {
        let events = events(Provider::Anthropic, Kind::Chat, 3, true);
        let usage: Value = serde_json::from_slice(&events[4][6..events[4].len() - 2]).unwrap();
        assert_eq!(usage["usage"]["cache_creation_input_tokens"], 300);
        assert_eq!(usage["usage"]["cache_read_input_tokens"], 200);
        assert_eq!(usage["usage"]["output_tokens"], 3);
        let plain: Value = serde_json::from_slice(&chat_completion(Provider::Anthropic)).unwrap();
        assert_eq!(plain["usage"]["prompt_tokens"], 509);
        assert_eq!(plain["model"], "claude-haiku-4-5-20251001");
    }

    #[test]
    fn a_chat_stream_counts_its_chunks_in_usage() {
        let events = events(Provider::Openai, Kind::Chat, 3, true);
        // 3 content chunks, the finish chunk, the usage chunk, [DONE].
        assert_eq!(events.len(), 6);
        let usage: Value = serde_json::from_slice(&events[4][6..events[4].len() - 2]).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(&events[5][..], b"data: [DONE]\n\n");
    }

    #[test]
    fn every_answer_is_valid_json() {
        let answers = Answers::render(Provider::Openai);
        for body in [
            &answers.chat,
            &answers.completion,
            &answers.embedding,
            &answers.responses,
            &answers.models,
        ] {
            serde_json::from_slice::<Value>(body).unwrap();
        }
        for (kind, usage) in [
            (Kind::Chat, false),
            (Kind::Chat, true),
            (Kind::Completion, true),
            (Kind::Responses, false),
        ] {
            for event in events(Provider::Openai, kind, 4, usage) {
                let text = std::str::from_utf8(&event).unwrap();
                assert!(text.ends_with("\n\n"), "{text}");
                let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                if data != "[DONE]" {
                    serde_json::from_str::<Value>(data).unwrap();
                }
            }
        }
        let chat: Value = serde_json::from_slice(&answers.chat).unwrap();
        assert_eq!(chat["choices"][0]["message"]["content"], words(20));
        assert_eq!(chat["usage"]["completion_tokens"], 20);
    }
}
