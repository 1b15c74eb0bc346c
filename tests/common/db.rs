//! The ledger backends a storage test runs on: always a temp SQLite file, and Postgres
//! when `TOLLGATE_TEST_POSTGRES_URL` is set (CI sets it), each test in a fresh schema.

use tollgate::ledger::Store;

pub struct Backend {
    pub name: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![Backend {
        name: "sqlite",
        url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
        _dir: Some(dir),
    }];
    match std::env::var("TOLLGATE_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => all.push(postgres(&base).await),
        _ => {
            eprintln!("note: TOLLGATE_TEST_POSTGRES_URL unset; Postgres half of this test skipped")
        }
    }
    all
}

/// A schema of its own, so tests never see each other's rows. Named `tg_<unix secs>_…`:
/// `.ci/run` drops only old ones, never those of a run still going.
async fn postgres(base: &str) -> Backend {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!("tg_{created}_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(base)
        .await
        .expect("Postgres at TOLLGATE_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    Backend {
        name: "postgres",
        url: format!("{base}{separator}options=-c%20search_path%3D{schema}"),
        _dir: None,
    }
}

impl Backend {
    pub async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }

    /// The server's `host:port`, for a network backend.
    pub fn server_addr(&self) -> Option<String> {
        let url = url::Url::parse(&self.url).ok()?;
        Some(format!(
            "{}:{}",
            url.host_str()?,
            url.port().unwrap_or(5432)
        ))
    }

    /// The same database reached through `addr` (a forwarder) instead.
    pub fn url_through(&self, addr: std::net::SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_host(Some(&addr.ip().to_string())).unwrap();
        url.set_port(Some(addr.port())).unwrap();
        url.into()
    }
}

/// `SELECT count(*), sum(completion_tokens)` on either backend.
pub async fn count_and_completion(store: &Store) -> (i64, i64) {
    let sql = "SELECT count(*), CAST(coalesce(sum(completion_tokens), 0) AS BIGINT) FROM requests";
    match store {
        Store::Sqlite(ledger) => sqlx::query_as(sql).fetch_one(ledger.pool()).await.unwrap(),
        Store::Postgres(ledger) => sqlx::query_as(sql).fetch_one(ledger.pool()).await.unwrap(),
    }
}

/// Totals straight from `requests` over `[from, to)` (Unix ms, `None` open) for one
/// team or all: requests, prompt, completion, cost in pico-USD, unpriced rows.
pub async fn direct_totals(
    store: &tollgate::ledger::Store,
    from: Option<i64>,
    to: Option<i64>,
    team: Option<&str>,
) -> (u64, u64, u64, u128, u64) {
    use tollgate::ledger::Store;
    let sql = store.sql(
        "SELECT count(*), CAST(coalesce(sum(prompt_tokens), 0) AS BIGINT), \
         CAST(coalesce(sum(completion_tokens), 0) AS BIGINT), \
         CAST(coalesce(sum(cost_pico), 0) AS BIGINT), count(*) - count(cost_pico) \
         FROM requests WHERE ts_ms >= ? AND ts_ms < ? AND (? = '' OR team_id = ?)",
    );
    let team = team.unwrap_or("");
    let bounds = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
    let row: (i64, i64, i64, i64, i64) = match store {
        Store::Sqlite(ledger) => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(bounds.0)
            .bind(bounds.1)
            .bind(team)
            .bind(team)
            .fetch_one(ledger.pool())
            .await
            .unwrap(),
        Store::Postgres(ledger) => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(bounds.0)
            .bind(bounds.1)
            .bind(team)
            .bind(team)
            .fetch_one(ledger.pool())
            .await
            .unwrap(),
    };
    let u = |v: i64| u64::try_from(v).unwrap();
    (u(row.0), u(row.1), u(row.2), u128::from(u(row.3)), u(row.4))
}
