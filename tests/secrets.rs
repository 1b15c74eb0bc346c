//! No secret reaches a log line at any level, nor a `/metrics` label: the real binary
//! runs with every target at `trace`, is driven through keys, bad keys, revocation, the
//! admin API, a failing upstream and a token-protected scrape, and its whole output and
//! its metrics are searched for the admin key, the upstream key, the metrics token and
//! every tollgate key secret; so are the bodies of its answers (errors above all) and
//! the bytes of its ledger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::mock_upstream::{MockUpstream, chat_completion, json};
use serde_json::{Value, json};

const ADMIN: &str = "admin-5ecret-never-logged";
const UPSTREAM: &str = "sk-upstream-5ecret-never-logged";
const SCRAPE: &str = "scrape-5ecret-never-logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_at_any_level() {
    let upstream = MockUpstream::start(|received| {
        if received.json()["model"] == "boom" {
            json(
                StatusCode::UNAUTHORIZED,
                &json!({"error": {"message": "bad key"}}),
            )
        } else {
            json(StatusCode::OK, &chat_completion(5, 5))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://{}\"\n\
             [log]\nfilter = \"trace\"\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{}\"\n\
             api_key_env = \"SECRET_UPSTREAM_KEY\"\n",
            dir.path().join("ledger.db").display(),
            upstream.base_url
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("TOLLGATE_CONFIG")
        .env("RUST_LOG", "trace")
        .env("TOLLGATE_ADMIN_KEY", ADMIN)
        .env("SECRET_UPSTREAM_KEY", UPSTREAM)
        .env("TOLLGATE_METRICS_TOKEN", SCRAPE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained as it is written: at trace level tollgate writes more than a pipe holds,
    // and a full pipe would block it (and this test, waiting for it to exit).
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let base = format!("http://127.0.0.1:{port}");
    // reqwest is built without a default TLS provider; tollgate installs one in-process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "tollgate did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let admin = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN)
    };
    admin(reqwest::Method::POST, "/admin/teams")
        .json(&json!({"name": "t"}))
        .send()
        .await
        .unwrap();
    let mut secrets = vec![ADMIN.to_owned(), UPSTREAM.to_owned()];
    for name in ["a", "b"] {
        let created: Value = admin(reqwest::Method::POST, "/admin/keys")
            .json(&json!({"team": "t", "name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        secrets.push(created["key"].as_str().unwrap().to_owned());
    }
    let chat = |key: &str, model: &str| {
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // Every answer's body, errors above all, is searched for secrets at the end.
    let mut bodies = Vec::new();
    let mut answered = async |response: reqwest::Response| {
        let status = response.status();
        bodies.push(response.text().await.unwrap());
        status
    };
    let ok = chat(&secrets[2], "gpt-4o-mini").await.unwrap();
    assert_eq!(answered(ok).await, 200);
    let boom = chat(&secrets[2], "boom").await.unwrap();
    assert_eq!(answered(boom).await, 401);
    let stream = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&secrets[3])
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    stream.bytes().await.unwrap();
    // Near misses: a mistyped key, the admin key on /v1, a key on /admin.
    let last = if secrets[2].ends_with('x') { 'y' } else { 'x' };
    let typo = format!("{}{last}", &secrets[2][..45]);
    let typo_answer = chat(&typo, "gpt-4o-mini").await.unwrap();
    assert_eq!(answered(typo_answer).await, 401);
    let admin_on_v1 = chat(ADMIN, "gpt-4o-mini").await.unwrap();
    assert_eq!(answered(admin_on_v1).await, 401);
    let tenant = client
        .get(format!("{base}/admin/keys"))
        .bearer_auth(&secrets[3])
        .send()
        .await
        .unwrap();
    assert_eq!(answered(tenant).await, 403);
    let wrong_admin = client
        .get(format!("{base}/admin/keys"))
        .bearer_auth(format!("{ADMIN}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered(wrong_admin).await, 401);
    admin(
        reqwest::Method::DELETE,
        &format!("/admin/keys/{}", &secrets[3][..11]),
    )
    .send()
    .await
    .unwrap();
    let revoked = chat(&secrets[3], "gpt-4o-mini").await.unwrap();
    assert_eq!(answered(revoked).await, 401);
    // A refused request and a bad body: error bodies that echo what they were sent.
    let bad_body = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&secrets[2])
        .body(format!("{{\"model\": \"{}\", ", &secrets[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(answered(bad_body).await, 400);
    let listed = admin(reqwest::Method::GET, "/admin/keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unscraped = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(unscraped.status(), 401, "the scrape token is required");
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(SCRAPE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Keys are labelled by their display prefix, and only by it.
    for key in &secrets[2..] {
        let label = format!("key=\"{}\"", &key[..11]);
        assert!(metrics.contains(&label), "{label} in\n{metrics}");
    }

    secrets.push(SCRAPE.to_owned());

    // SIGTERM, so the shutdown path logs too.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut logs = stderr.join().unwrap();
    logs.push_str(&stdout.join().unwrap());
    assert!(logs.contains("TRACE"), "trace level was on");
    assert!(logs.contains(&secrets[2][..11]), "key prefixes are logged");
    // The ledger (every table, index and the WAL), searched as raw bytes.
    let mut ledger = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("ledger.db") {
            ledger.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!ledger.is_empty(), "the ledger was found");
    let ledger = String::from_utf8_lossy(&ledger).into_owned();
    assert!(
        ledger.contains(&secrets[2][..11]),
        "the ledger holds key prefixes, so the search sees its text"
    );
    let bodies = bodies.join("\n");
    // The request line names the team and the exact cost (5 + 5 tokens of gpt-4o-mini).
    let line = logs
        .lines()
        .find(|line| line.contains(" request ") && line.contains("status=200"))
        .unwrap_or_else(|| panic!("no request line in\n{logs}"));
    for field in [
        format!("caller={}", &secrets[2][..11]),
        "team=t ".to_owned(),
        "cost_usd=0.00000375".to_owned(),
        "prompt_tokens=5".to_owned(),
        "latency_ms=".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
    for secret in &secrets {
        // The part after the display prefix is what must never leak.
        let hidden = &secret[secret.len().min(11)..];
        for (place, text) in [
            ("logs", &logs),
            ("key listing", &listed),
            ("metrics", &metrics),
            ("answer bodies", &bodies),
            ("ledger", &ledger),
        ] {
            assert!(!text.contains(hidden), "a secret appears in the {place}");
        }
    }
    assert!(
        !logs.contains(&typo[11..]),
        "a mistyped key is not logged either"
    );
}
