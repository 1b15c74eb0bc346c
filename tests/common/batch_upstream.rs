//! A mock of OpenAI's files, batches and fine-tuning jobs on 127.0.0.1:0. The test
//! drives each batch's and job's status, writes output files, loses batches, and can
//! stall an output file mid-stream. File content honours `Range: bytes=N-` (206).

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Default)]
struct Files {
    content: BTreeMap<String, Bytes>,
    meta: BTreeMap<String, Value>,
}

#[derive(Default)]
struct Inner {
    files: Files,
    batches: BTreeMap<String, Value>,
    jobs: BTreeMap<String, Value>,
    lost: HashSet<String>,
    next: u64,
    /// A file served up to this many bytes, then held until the notify fires.
    stall: Option<(String, usize, Arc<Notify>)>,
    /// Range headers of content requests, in order (`None`: no range).
    ranges: Vec<Option<String>>,
    /// Method and path of every request.
    seen: Vec<(Method, String)>,
    /// Answer every content request whole (200), as a server without range support.
    ignore_ranges: bool,
}

#[derive(Clone, Default)]
pub struct BatchUpstream {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl BatchUpstream {
    pub async fn start() -> Self {
        let mut upstream = Self::default();
        let app = Router::new().fallback(handle).with_state(upstream.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        upstream.base_url = format!("http://{addr}/v1");
        upstream
    }

    fn id(&self, prefix: &str) -> String {
        let mut inner = self.inner.lock().unwrap();
        inner.next += 1;
        format!("{prefix}{}", inner.next)
    }

    /// Adds a file as if uploaded directly to the upstream (not through tollgate).
    pub fn add_file(&self, content: &str) -> String {
        let id = self.id("file-");
        let mut inner = self.inner.lock().unwrap();
        inner
            .files
            .content
            .insert(id.clone(), Bytes::from(content.to_owned()));
        inner.files.meta.insert(
            id.clone(),
            json!({"id": id, "object": "file", "bytes": content.len(), "purpose": "batch_output"}),
        );
        id
    }

    /// Ends a batch with `status`, its output file holding `lines`.
    pub fn finish_batch(&self, batch_id: &str, status: &str, lines: &[String]) {
        let mut content = lines.join("\n");
        content.push('\n');
        let file = self.add_file(&content);
        let mut inner = self.inner.lock().unwrap();
        let batch = inner
            .batches
            .get_mut(batch_id)
            .expect("a batch the test created");
        batch["status"] = json!(status);
        batch["output_file_id"] = json!(file);
        batch[format!("{status}_at")] = json!(now_secs());
    }

    pub fn set_batch_status(&self, batch_id: &str, status: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.batches.get_mut(batch_id).unwrap()["status"] = json!(status);
    }

    /// From now on the upstream answers 404 for this batch.
    pub fn lose(&self, batch_id: &str) {
        self.inner.lock().unwrap().lost.insert(batch_id.to_owned());
    }

    pub fn finish_job(&self, job_id: &str, status: &str, trained_tokens: u64) {
        let result = self.add_file("step,train_loss\n1,0.5\n");
        let mut inner = self.inner.lock().unwrap();
        let job = inner.jobs.get_mut(job_id).unwrap();
        job["status"] = json!(status);
        job["trained_tokens"] = json!(trained_tokens);
        job["finished_at"] = json!(now_secs());
        job["result_files"] = json!([result]);
        let model = job["model"].as_str().unwrap().to_owned();
        job["fine_tuned_model"] = json!(format!("ft:{model}:acme::{job_id}"));
    }

    /// Serves `file_id` up to `bytes`, then holds the rest until the returned notify
    /// fires (a stalled download, for a restart in the middle of billing).
    pub fn stall(&self, file_id: &str, bytes: usize) -> Arc<Notify> {
        let gate = Arc::new(Notify::new());
        self.inner.lock().unwrap().stall = Some((file_id.to_owned(), bytes, gate.clone()));
        gate
    }

    pub fn unstall(&self) {
        if let Some((_, _, gate)) = self.inner.lock().unwrap().stall.take() {
            gate.notify_waiters();
        }
    }

    pub fn ignore_ranges(&self) {
        self.inner.lock().unwrap().ignore_ranges = true;
    }

    pub fn batch(&self, id: &str) -> Value {
        self.inner.lock().unwrap().batches[id].clone()
    }

    pub fn job(&self, id: &str) -> Value {
        self.inner.lock().unwrap().jobs[id].clone()
    }

    pub fn ranges(&self) -> Vec<Option<String>> {
        self.inner.lock().unwrap().ranges.clone()
    }

    /// How many requests had this method and path.
    pub fn count(&self, method: &Method, path: &str) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .seen
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn respond(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn not_found(what: &str) -> Response {
    respond(
        StatusCode::NOT_FOUND,
        &json!({"error": {"message": format!("No such {what}"), "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

fn list(items: impl Iterator<Item = Value>) -> Response {
    let data: Vec<Value> = items.collect();
    respond(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "has_more": false}),
    )
}

async fn handle(State(upstream): State<BatchUpstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().trim_start_matches("/v1").to_owned();
    upstream
        .inner
        .lock()
        .unwrap()
        .seen
        .push((parts.method.clone(), path.clone()));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = body.collect().await.unwrap().to_bytes();
    let json_body = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    match (parts.method.clone(), segments.as_slice()) {
        (Method::POST, ["files"]) => {
            let content_type = parts.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            let content = multipart_file(&content_type, &body);
            let id = upstream.id("file-");
            let meta = json!({"id": id, "object": "file", "bytes": content.len(), "purpose": "batch", "filename": "input.jsonl"});
            let mut inner = upstream.inner.lock().unwrap();
            inner.files.content.insert(id.clone(), content);
            inner.files.meta.insert(id, meta.clone());
            respond(StatusCode::OK, &meta)
        }
        (Method::GET, ["files"]) => {
            let inner = upstream.inner.lock().unwrap();
            list(inner.files.meta.values().cloned())
        }
        (Method::GET, ["files", id]) => match upstream.inner.lock().unwrap().files.meta.get(*id) {
            Some(meta) => respond(StatusCode::OK, meta),
            None => not_found("file"),
        },
        (Method::GET, ["files", id, "content"]) => content(&upstream, id, &parts.headers),
        (Method::POST, ["batches"]) => {
            let request = json_body();
            let id = upstream.id("batch_");
            let batch = json!({
                "id": id, "object": "batch", "endpoint": request["endpoint"],
                "input_file_id": request["input_file_id"], "completion_window": "24h",
                "status": "validating", "output_file_id": null, "error_file_id": null,
                "created_at": 1_732_000_000,
            });
            upstream
                .inner
                .lock()
                .unwrap()
                .batches
                .insert(id, batch.clone());
            respond(StatusCode::OK, &batch)
        }
        (Method::GET, ["batches"]) => {
            let inner = upstream.inner.lock().unwrap();
            list(inner.batches.values().cloned())
        }
        (method, ["batches", id, rest @ ..]) => {
            let mut inner = upstream.inner.lock().unwrap();
            if inner.lost.contains(*id) {
                return not_found("batch");
            }
            let Some(batch) = inner.batches.get_mut(*id) else {
                return not_found("batch");
            };
            if method == Method::POST && rest == ["cancel"] {
                batch["status"] = json!("cancelling");
            }
            respond(StatusCode::OK, batch)
        }
        (Method::POST, ["fine_tuning", "jobs"]) => {
            let request = json_body();
            let id = upstream.id("ftjob-");
            let job = json!({
                "id": id, "object": "fine_tuning.job", "model": request["model"],
                "training_file": request["training_file"], "status": "validating_files",
                "trained_tokens": null, "fine_tuned_model": null, "result_files": [],
            });
            upstream.inner.lock().unwrap().jobs.insert(id, job.clone());
            respond(StatusCode::OK, &job)
        }
        (Method::GET, ["fine_tuning", "jobs"]) => {
            let inner = upstream.inner.lock().unwrap();
            list(inner.jobs.values().cloned())
        }
        (_, ["fine_tuning", "jobs", id, ..]) => {
            match upstream.inner.lock().unwrap().jobs.get(*id) {
                Some(job) => respond(StatusCode::OK, job),
                None => not_found("job"),
            }
        }
        (Method::POST, ["chat", "completions"]) => {
            // 1,000 prompt and 100 completion tokens, answered as the model asked for.
            let mut answer = super::mock_upstream::chat_completion(1000, 100);
            answer["model"] = json_body()["model"].clone();
            respond(StatusCode::OK, &answer)
        }
        _ => not_found("route"),
    }
}

/// A file's content, from a `bytes=N-` range if asked (206), stalled if the test says.
fn content(upstream: &BatchUpstream, id: &str, headers: &axum::http::HeaderMap) -> Response {
    let mut inner = upstream.inner.lock().unwrap();
    let range = headers
        .get(header::RANGE)
        .map(|v| v.to_str().unwrap().to_owned());
    inner.ranges.push(range.clone());
    let Some(content) = inner.files.content.get(id).cloned() else {
        return not_found("file");
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .map(|n| n.parse::<usize>().unwrap())
        .filter(|_| !inner.ignore_ranges);
    let (status, content) = match start {
        Some(start) => (StatusCode::PARTIAL_CONTENT, content.slice(start..)),
        None => (StatusCode::OK, content),
    };
    let body = match &inner.stall {
        Some((file, at, gate)) if file == id && *at < content.len() => {
            let (head, tail) = (content.slice(..*at), content.slice(*at..));
            let gate = gate.clone();
            let stream = futures_util::stream::unfold(0, move |step| {
                let (head, tail, gate) = (head.clone(), tail.clone(), gate.clone());
                async move {
                    match step {
                        0 => Some((Ok::<_, Infallible>(head), 1)),
                        1 => {
                            gate.notified().await;
                            Some((Ok(tail), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(stream)
        }
        _ => Body::from(content),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap()
}

/// The `file` part of a multipart/form-data body.
fn multipart_file(content_type: &str, body: &[u8]) -> Bytes {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap()
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    for part in text.split(&delimiter) {
        if part.contains("name=\"file\"") {
            let start = part.find("\r\n\r\n").unwrap() + 4;
            let content = part[start..].strip_suffix("\r\n").unwrap_or(&part[start..]);
            return Bytes::from(content.to_owned());
        }
    }
    panic!("no file part in the upload");
}

/// A Batch API input line.
pub fn input_line(custom_id: &str, content: &str, max_tokens: u64) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
                    "max_tokens": max_tokens}})
    .to_string()
}

/// A successful output line with this usage.
pub fn output_line(custom_id: &str, prompt: u64, cached: u64, completion: u64) -> String {
    json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id,
           "response": {"status_code": 200, "request_id": format!("req_{custom_id}"),
                        "body": {"object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                                 "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                           "total_tokens": prompt + completion,
                                           "prompt_tokens_details": {"cached_tokens": cached}}}},
           "error": null})
    .to_string()
}

/// A line whose request failed upstream (not billed).
pub fn failed_line(custom_id: &str) -> String {
    json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id,
           "response": {"status_code": 400, "request_id": "req_x",
                        "body": {"error": {"message": "bad", "type": "invalid_request_error"}}},
           "error": null})
    .to_string()
}
