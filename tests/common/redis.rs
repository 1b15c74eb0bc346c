//! The Redis of the shared-limits tests, when `TOLLGATE_TEST_REDIS_URL` is set (CI
//! sets it). Tests keep apart by key: each sends a bearer of its own, so its buckets
//! have keys no other test uses.

/// The test Redis's URL, or `None` with a note (the test then returns early).
pub fn url() -> Option<String> {
    match std::env::var("TOLLGATE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("note: TOLLGATE_TEST_REDIS_URL unset; Redis test skipped");
            None
        }
    }
}

/// A Redis URL where nothing listens: the port was bound and released.
pub async fn down_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("redis://{addr}")
}

/// A bearer no other test sends: its passthrough identity is its own.
pub fn fresh_bearer() -> String {
    format!("sk-shared-{}", uuid::Uuid::new_v4().simple())
}
