//! What the fault scenarios are made of: the real `tollgate` binary as a child process,
//! private Postgres and Redis servers a test may stop and start, and an upstream with
//! scripted usage and slow streams. The clients and the ledger audit are in traffic.rs.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::json;

use crate::common::mock_upstream::{chat_chunks, chat_completion};

pub const ADMIN_KEY: &str = "admin-faults-secret";

/// The scenarios stop servers, kill processes and need root for the private Postgres:
/// they run where `.ci/run` sets `TOLLGATE_TEST_FAULTS=1`, and pass with a note elsewhere.
pub fn enabled(scenario: &str) -> bool {
    if std::env::var("TOLLGATE_TEST_FAULTS").is_ok_and(|v| v == "1") {
        true
    } else {
        eprintln!("note: TOLLGATE_TEST_FAULTS unset; fault scenario {scenario} skipped");
        false
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; tollgate installs one in-process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

pub async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed: {text}");
    text
}

// === the tollgate binary ===

/// One `tollgate serve` process on a fixed port, its stderr in a log file.
pub struct Tollgate {
    pub base: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub http: reqwest::Client,
}

/// `[limits]` for scenarios about storage and processes: on (every request is checked)
/// with figures no client reaches, so no refusal muddles the count.
pub const OPEN_LIMITS: &str = "[limits]\nenabled = true\ndefault_tier = \"faults\"\n\
                               [limits.tiers.faults]\nrpm = 10000000\ntpm = 10000000000\n";

/// A config file for `tollgate serve`: keys mode, one upstream, the ledger at `db_url`,
/// the spill in `spill_dir`, anything else in `extra` (TOML sections).
pub fn config(port: u16, db_url: &str, upstream: &str, spill_dir: &Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_timeout = \"30s\"\n\
         [database]\nurl = \"{db_url}\"\n\
         [ledger]\nspill_dir = \"{}\"\nspill_retry_interval = \"500ms\"\n\
         [log]\nfilter = \"warn,sqlx=error,tollgate::ledger=info\"\n\
         [[upstreams]]\nname = \"mock\"\nbase_url = \"{upstream}\"\nmodels = [\"*\"]\n\
         api_key_env = \"FAULTS_UPSTREAM_KEY\"\n{extra}",
        spill_dir.display()
    )
}

/// One tollgate on `db_url` with open limits, its spill in `dir/spill`, and 10 keys in 5
/// teams: where each single-process scenario starts. Returns the spill directory too.
pub async fn one_tollgate(dir: &Path, db_url: &str) -> (Tollgate, Vec<Key>, PathBuf) {
    let upstream = upstream().await;
    let spill = dir.join("spill");
    let port = free_port();
    let config = config(port, db_url, &upstream, &spill, OPEN_LIMITS);
    let tollgate = Tollgate::start(dir, "tollgate", port, &config).await;
    let keys = tollgate.keys(5, 2, |_| json!({})).await;
    (tollgate, keys, spill)
}

/// Replayed segments are deleted: nothing is left in the spill directory.
#[track_caller]
pub fn assert_spill_deleted(spill: &Path) {
    let left: Vec<_> = std::fs::read_dir(spill).unwrap().collect();
    assert!(left.is_empty(), "replayed segments are deleted: {left:?}");
}

impl Tollgate {
    /// Writes `toml` to `dir/NAME.toml` and starts tollgate on `port`.
    pub async fn start(dir: &Path, name: &str, port: u16, toml: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let mut tollgate = Self {
            base: format!("http://127.0.0.1:{port}"),
            config,
            log: dir.join(format!("{name}.log")),
            child: None,
            http: client(),
        };
        tollgate.spawn().await;
        tollgate
    }

    /// Starts the process again with the same config (after it exited or was killed).
    pub async fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("RUST_LOG")
            .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
            .env("FAULTS_UPSTREAM_KEY", "sk-faults-upstream")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.base)).send().await
                && response.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "tollgate exited at start-up ({status}): {}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tollgate not ready: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (`TERM`, `KILL`) with kill(1): the crate forbids unsafe code.
    pub fn signal(&self, name: &str) {
        run(Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string()));
    }

    /// Waits for the process to exit and reaps it.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "tollgate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, a clean exit within 60 s (drain, flush, spill replay), no panic logged.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(60)).await;
        assert!(status.success(), "{status}: {}", self.log_text());
        self.assert_no_panic();
    }

    /// Rows in the spill, as `/readyz` reports them.
    pub async fn spilled(&self) -> u64 {
        self.ready().await["ledger_spilled"].as_u64().unwrap()
    }

    /// Waits (up to 10 s) until an outage has sent rows to the spill.
    pub async fn await_spilling(&self) {
        eventually(
            "rows to go to the spill",
            Duration::from_secs(10),
            async || self.spilled().await > 0,
        )
        .await;
    }

    /// Waits until the spill is empty again.
    pub async fn await_replayed(&self, within: Duration) {
        eventually("the spill to be replayed", within, async || {
            self.spilled().await == 0
        })
        .await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log never shows a panic.
    #[track_caller]
    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(!log.contains("panicked"), "tollgate panicked: {log}");
    }

    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    pub async fn ready(&self) -> serde_json::Value {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    fn admin(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY)
    }

    /// Creates `teams` teams of `per_team` keys each; `fields(i)` adds to key i's body.
    pub async fn keys(
        &self,
        teams: usize,
        per_team: usize,
        fields: impl Fn(usize) -> serde_json::Value,
    ) -> Vec<Key> {
        let mut keys = Vec::new();
        for team in 0..teams {
            let name = format!("team-{team}");
            let created = self
                .admin("/admin/teams")
                .json(&json!({ "name": name }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
            for k in 0..per_team {
                let index = keys.len();
                let mut body = fields(index);
                body["team"] = json!(name);
                body["name"] = json!(format!("k{k}"));
                let response = self.admin("/admin/keys").json(&body).send().await.unwrap();
                assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
                let body: serde_json::Value = response.json().await.unwrap();
                let secret = body["key"].as_str().unwrap().to_owned();
                keys.push(Key {
                    prefix: body["prefix"].as_str().unwrap().to_owned(),
                    secret,
                    team: name.clone(),
                    prompt_cap: None,
                });
            }
        }
        keys
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        // A failed scenario shows what tollgate said.
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- last lines of {} ---\n{tail}", self.log.display());
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Key {
    pub secret: String,
    pub prefix: String,
    pub team: String,
    /// Scripted prompts are at most this: set where tollgate's own prompt count must
    /// cover the real one (budget and TPM bounds are exact only then).
    pub prompt_cap: Option<u64>,
}

// === private servers ===

/// A Postgres cluster of its own in a temp dir, on a free port, that a test may stop
/// and start: the machine's shared Postgres is never touched. Postgres refuses to run
/// as root, so every command runs as the `postgres` user.
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = glob::glob("/usr/lib/postgresql/*/bin/pg_ctl")
            .unwrap()
            .filter_map(Result::ok)
            .max()
            .expect("PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix("tollgate-faults-pg")
            .tempdir()
            .unwrap();
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path()));
        let postgres = Self {
            port: free_port(),
            bin,
            dir,
        };
        run(postgres
            .as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(postgres.data()));
        postgres.up();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, tool: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool));
        command
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        run(self
            .as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("-D")
            .arg(self.data())
            .arg("start"));
    }

    /// Stops the server the hard way: every connection drops, no checkpoint.
    pub fn down(&self) {
        run(self
            .as_postgres("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop"));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }
}

/// A Redis of its own on a free port, keeping nothing on disk, that a test may kill.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.up().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    pub async fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: Redis vanishes mid-conversation.
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

// === the upstream ===

fn header_number(request: &Request, name: &str) -> u64 {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Rows waiting in a spill directory's segments (one JSON line each).
pub fn spilled_rows(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum()
}

/// An upstream whose usage each request scripts with `x-mock-prompt` and
/// `x-mock-completion`; `"stream":true` gets a stream of 4 chunks, each
/// `x-mock-chunk-delay-ms` apart, ending with that usage and `[DONE]`.
pub async fn upstream() -> String {
    let app = axum::Router::new().fallback(|request: Request| async move {
        let (prompt, completion) = (
            header_number(&request, "x-mock-prompt"),
            header_number(&request, "x-mock-completion"),
        );
        let delay = Duration::from_millis(header_number(&request, "x-mock-chunk-delay-ms"));
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if body["stream"] == true {
            let chunks = chat_chunks(&["one", "two", "three", "four"], Some((prompt, completion)));
            let events = futures_util::stream::unfold(
                (chunks.into_iter(), true),
                move |(mut rest, first)| async move {
                    let chunk = rest.next()?;
                    if !first {
                        tokio::time::sleep(delay).await;
                    }
                    let event = Bytes::from(format!("data: {chunk}\n\n"));
                    Some((Ok::<_, std::convert::Infallible>(event), (rest, false)))
                },
            );
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(events))
                .unwrap()
        } else {
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(chat_completion(prompt, completion).to_string()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

pub use crate::traffic::{Load, Shape, Told, audit, ledger_rows};
