//! Starts the real tollgate in-process on 127.0.0.1:0 with a temp SQLite ledger.

use std::collections::HashMap;
use std::path::PathBuf;

use sqlx::Row as _;
use tollgate::config::{AuthMode, Config};
use tollgate::server::Running;

pub const ADMIN_KEY: &str = "admin-test-secret";

pub struct Harness {
    pub url: String,
    pub client: reqwest::Client,
    pub db: PathBuf,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

/// One ledger row, as the tests read it back.
#[derive(Debug, Clone)]
pub struct Row {
    pub request_id: String,
    pub upstream_request_id: Option<String>,
    pub caller: String,
    pub endpoint: String,
    pub model_requested: Option<String>,
    pub model_answered: Option<String>,
    pub service_tier_requested: Option<String>,
    pub service_tier: Option<String>,
    pub streamed: bool,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub usage_source: String,
    pub status: i64,
    pub outcome: String,
    pub cost_pico: Option<i64>,
    pub priced_model: Option<String>,
    pub price_variant: Option<String>,
    /// input, cached input, output: micro-USD per 1M tokens.
    pub rates: (Option<i64>, Option<i64>, Option<i64>),
}

impl Harness {
    pub async fn start(upstream_url: &str) -> Self {
        Self::start_with(upstream_url, |_| {}).await
    }

    pub async fn start_with(upstream_url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_env(upstream_url, &[], tweak).await
    }

    /// As `start_with`, with more variables in tollgate's environment map.
    pub async fn start_with_env(
        upstream_url: &str,
        extra_env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.db");
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.database.url = format!("sqlite://{}", db.display());
        config.upstreams[0].base_url = upstream_url.to_owned();
        config.upstreams[0].api_key_env = Some("TEST_UPSTREAM_KEY".to_owned());
        // Most tests are about the proxy, not keys: callers are told apart by the
        // fingerprint of whatever bearer they send. Key tests switch to keys mode.
        config.auth.mode = AuthMode::Passthrough;
        // Nor are they about rate limits, and some send more than a tier allows in a
        // minute from one caller: limit tests switch them on.
        config.limits.enabled = false;
        // Its own spill directory: one tollgate per directory, and none in the repo.
        config.ledger.spill_dir = dir.path().join("spill");
        tweak(&mut config);
        config.validate().unwrap();
        // The tweak may have moved the ledger.
        let db = PathBuf::from(config.database.url.trim_start_matches("sqlite://"));
        let env: HashMap<String, String> = [
            (
                "TEST_UPSTREAM_KEY".to_owned(),
                "sk-upstream-secret".to_owned(),
            ),
            ("TOLLGATE_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ]
        .into_iter()
        .chain(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect();
        let running = tollgate::server::start(config, &env).await.unwrap();
        Self {
            url: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            db,
            running: Some(running),
            _dir: dir,
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth("sk-client-key")
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    /// A request to the admin API, with the admin key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_KEY)
    }

    /// Creates a team (if new) and a key in it through the admin API; returns the
    /// key's secret.
    pub async fn key(&self, team: &str, body: serde_json::Value) -> String {
        let created = self
            .admin(reqwest::Method::POST, "/admin/teams")
            .json(&serde_json::json!({ "name": team }))
            .send()
            .await
            .unwrap();
        assert!(
            created.status() == 201 || created.status() == 409,
            "{}",
            created.text().await.unwrap()
        );
        let mut body = body;
        body["team"] = serde_json::json!(team);
        let response = self
            .admin(reqwest::Method::POST, "/admin/keys")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let json: serde_json::Value = response.json().await.unwrap();
        json["key"].as_str().unwrap().to_owned()
    }

    /// Waits until every served request's row is committed. The writer's flush also
    /// returns once a row is spilled (an insert that took over its 2 s attempt, as on
    /// a CI machine running builds beside the tests): the spill is then offered to the
    /// database at once, so with the database up a report read next sees the row
    /// either way. With it down, the rows stay in the spill.
    pub async fn flush(&self) {
        if let Some(running) = &self.running {
            running.ledger.flush().await;
            running.ledger.replay_spill().await;
        }
    }

    /// A chat completion sent with `key` as the bearer.
    pub fn chat(&self, key: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .json(body)
    }

    /// `GET /admin/spend?{query}` as JSON lines keyed by group.
    pub async fn spend(
        &self,
        query: &str,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.flush().await;
        let response = self
            .admin(reqwest::Method::GET, &format!("/admin/spend?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| (line["group"].as_str().unwrap().to_owned(), line.clone()))
            .collect()
    }

    /// Every ledger row, after waiting for every served request to be recorded.
    pub async fn rows(&self) -> Vec<Row> {
        if let Some(running) = &self.running {
            running.ledger.flush().await;
        }
        self.read_rows().await
    }

    pub async fn read_rows(&self) -> Vec<Row> {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap();
        let rows = sqlx::query("SELECT * FROM requests ORDER BY ts_ms, rowid")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows.iter()
            .map(|r| Row {
                request_id: r.get("request_id"),
                upstream_request_id: r.get("upstream_request_id"),
                caller: r.get("caller"),
                endpoint: r.get("endpoint"),
                model_requested: r.get("model_requested"),
                model_answered: r.get("model_answered"),
                service_tier_requested: r.get("service_tier_requested"),
                service_tier: r.get("service_tier"),
                streamed: r.get("streamed"),
                prompt_tokens: r.get("prompt_tokens"),
                cached_tokens: r.get("cached_tokens"),
                completion_tokens: r.get("completion_tokens"),
                reasoning_tokens: r.get("reasoning_tokens"),
                usage_source: r.get("usage_source"),
                status: r.get("status"),
                outcome: r.get("outcome"),
                cost_pico: r.get("cost_pico"),
                priced_model: r.get("priced_model"),
                price_variant: r.get("price_variant"),
                rates: (
                    r.get("input_rate"),
                    r.get("cached_input_rate"),
                    r.get("output_rate"),
                ),
            })
            .collect()
    }

    /// Sends `say_hello(stream)` and asserts the answer is an OpenAI-shaped error with
    /// this status and code: the story of every upstream that fails before a byte.
    pub async fn say_hello_refused(&self, stream: bool, status: u16, code: &str) {
        let response = self
            .post("/v1/chat/completions")
            .json(&say_hello(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(assert_openai_error(&body)["code"], code, "{body}");
    }

    /// The one ledger row a test of one request expects, flushed and read back.
    pub async fn only_row(&self) -> Row {
        let rows = self.rows().await;
        Self::only(&rows).clone()
    }

    /// The single row the test expects.
    #[track_caller]
    pub fn only(rows: &[Row]) -> &Row {
        assert_eq!(rows.len(), 1, "expected one ledger row, got {rows:#?}");
        &rows[0]
    }

    /// The batch and fine-tuning tracker of the running server.
    pub fn batches(&self) -> std::sync::Arc<tollgate::batch::Tracker> {
        self.running.as_ref().unwrap().batches.clone()
    }

    /// Polls every tracked batch and job now, as the poller would on its interval.
    pub async fn poll_batches(&self) -> usize {
        self.batches().poll_all().await
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sends this server's routing state (cooldowns, headroom) to Redis and takes the
    /// other replicas', as its sync task does every `routing.sync_interval`.
    pub async fn sync_routing(&self) {
        if let Some(running) = &self.running {
            running.routing.sync_now().await;
        }
    }

    /// Runs the scheduled reconciliation now, as its daily timer would.
    pub async fn reconcile_now(
        &self,
    ) -> Result<tollgate::reconcile::Report, tollgate::reconcile::ReconcileError> {
        let running = self.running.as_ref().unwrap();
        let scheduler = running
            .reconcile
            .as_ref()
            .expect("[reconcile] schedule set");
        scheduler.run_once().await
    }

    /// Metered exchanges still relaying or recording.
    pub fn in_flight(&self) -> usize {
        self.running.as_ref().map_or(0, Running::in_flight)
    }

    /// Stops tollgate as SIGTERM would (drain, flush).
    pub async fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// A URL where nothing listens: the port was bound and released.
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

/// The chat completion most proxy tests send: gpt-4o-mini saying hello, plain or
/// streamed.
pub fn say_hello(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}],
    })
}

/// Asserts an OpenAI-shaped error body and returns it.
#[track_caller]
pub fn assert_openai_error(
    body: &serde_json::Value,
) -> &serde_json::Map<String, serde_json::Value> {
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not an OpenAI error: {body}"));
    for key in ["message", "type", "param", "code"] {
        assert!(error.contains_key(key), "error lacks {key}: {body}");
    }
    assert!(
        error["message"].is_string() && error["type"].is_string(),
        "{body}"
    );
    error
}

/// A URL whose server accepts connections and never answers.
pub async fn silent_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/v1")
}
