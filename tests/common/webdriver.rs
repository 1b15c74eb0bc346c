//! A small W3C WebDriver client over reqwest, for driving headless Chromium through
//! chromedriver: a session, navigation, typing, clicks, scripts, a screenshot. The
//! browser is the real one; only the protocol client is ours (a few HTTP calls), so no
//! browser-automation crate is needed.
//!
//! `TOLLGATE_TEST_CHROMEDRIVER` names the chromedriver binary (CI sets it after
//! installing Debian's chromium and chromium-driver); unset, `Driver::start` returns
//! `None` and browser tests return early with a note. `TOLLGATE_TEST_CHROMIUM` names the
//! browser (default `/usr/bin/chromium`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    process: Child,
    base: String,
    client: reqwest::Client,
}

/// A browser session; clones share it (the profile directory goes with the last).
#[derive(Clone)]
pub struct Session {
    client: reqwest::Client,
    url: String,
    _profile: std::sync::Arc<tempfile::TempDir>,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready.
    pub async fn start() -> Option<Self> {
        let binary = match std::env::var("TOLLGATE_TEST_CHROMEDRIVER") {
            Ok(path) if !path.is_empty() => path,
            _ => {
                eprintln!("note: TOLLGATE_TEST_CHROMEDRIVER unset; browser test skipped");
                return None;
            }
        };
        // reqwest is built without a TLS provider and panics without one (tollgate
        // installs it when it starts; this may run first). Plain HTTP only here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No call may hang the test: a browser that never starts fails it instead.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        // Its output goes nowhere: an inherited stderr would outlive a killed test
        // and hold the caller's pipe open. Failures come back as WebDriver errors.
        let process = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start chromedriver `{binary}`: {error}"));
        let driver = Self {
            process,
            base: format!("http://127.0.0.1:{port}"),
            client,
        };
        // chromedriver answers /status once it listens; poll it against a deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = driver
                .client
                .get(format!("{}/status", driver.base))
                .send()
                .await;
            if let Ok(response) = status {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return Some(driver);
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless Chromium with a fresh profile and a `width` x `height` window.
    pub async fn session(&self, width: u32, height: u32) -> Session {
        let profile = tempfile::tempdir().unwrap();
        let chromium =
            std::env::var("TOLLGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        // Background networking off: the machine (and a production cluster) has no
        // internet, and Chromium would otherwise keep trying to reach Google.
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let response = self
            .client
            .post(format!("{}/session", self.base))
            .json(&capabilities)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        let id = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {body}"));
        Session {
            client: self.client.clone(),
            url: format!("{}/session/{id}", self.base),
            _profile: std::sync::Arc::new(profile),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Session {
    /// One WebDriver command; a WebDriver error fails the test with its message.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {body}");
        body["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element for `{css}`: {found}"))
            .to_owned()
    }

    /// Types `text` into the element `css` selects, as keystrokes.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `body` as a function in the page and returns what it returns.
    pub async fn script(&self, body: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": body, "args": []})),
        )
        .await
    }

    /// Polls `condition` (a script returning a boolean) until it holds.
    pub async fn wait_until(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.script(condition).await != true {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible page as PNG bytes.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap()
    }

    /// Ends the session, which closes the browser.
    pub async fn close(self) {
        let _ = self.client.delete(&self.url).send().await;
    }
}
