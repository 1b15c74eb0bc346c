//! The spend ledger: one row per metered request, written by a background writer so the
//! request path never waits on the database. Knows no HTTP.

/// Binds one row's 40 columns to a query, in `INSERT_COLUMNS` order (statement.rs), for
/// either backend, and returns the query.
macro_rules! push_row {
    ($b:expr, $row:expr) => {{
        let row: &$crate::ledger::LedgerRow = $row;
        let to_i64 = $crate::ledger::to_i64;
        let price = row.price.as_ref();
        let rate = |pick: fn(&$crate::pricing::UnitRates) -> $crate::pricing::Rate| {
            price.map(|p| to_i64(pick(&p.rates).micros_per_million()))
        };
        $b.bind(&row.id)
            .bind(&row.request_id)
            .bind(&row.upstream_request_id)
            .bind(row.ts_ms)
            .bind(&row.caller)
            .bind(&row.upstream)
            .bind(&row.endpoint)
            .bind(&row.model_requested)
            .bind(&row.model_answered)
            .bind(row.streamed)
            .bind(to_i64(row.usage.prompt_tokens))
            .bind(to_i64(row.usage.cached_tokens))
            .bind(to_i64(row.usage.completion_tokens))
            .bind(to_i64(row.usage.reasoning_tokens))
            .bind(row.usage_source.as_str())
            .bind(i64::from(row.status))
            .bind(row.outcome.as_str())
            .bind(to_i64(row.latency_ms))
            .bind(row.ttfb_ms.map(to_i64))
            .bind(price.map(|p| i64::try_from(p.cost.as_pico()).unwrap_or(i64::MAX)))
            .bind(price.map(|p| p.model.clone()))
            .bind(price.map(|p| p.variant.as_str()))
            .bind(rate(|r| r.input))
            .bind(rate(|r| r.cached_input))
            .bind(rate(|r| r.output))
            .bind(&row.key_id)
            .bind(&row.team_id)
            .bind(row.kind.as_str())
            .bind(&row.service_tier_requested)
            .bind(&row.service_tier)
            .bind(&row.route.model_alias)
            .bind(i64::from(row.route.attempt))
            .bind(&row.route.downgraded_from)
            .bind(row.route.shadow.as_ref().map(|s| s.of.clone()))
            .bind(row.route.shadow.as_ref().and_then(|s| s.text_match))
            .bind(row.route.shadow.as_ref().and_then(|s| s.value_match))
            .bind(&row.provider)
            .bind(to_i64(row.usage.cache_write_tokens))
            .bind(rate(|r| r.cache_write()))
            .bind(&row.tokenizer)
    }};
}

/// Rows bound to a statement before the writer yields to the runtime. Binding a row's
/// 40 values costs ~15,000 instructions; the ~200 rows a 50 ms batch gathers at a few
/// thousand requests a second, bound in one poll, would hold the tokio worker (and
/// every request waiting on it) for about a millisecond.
pub(crate) const BIND_ROWS_PER_POLL: usize = 16;

/// Inserts `rows` in one transaction, in statements of power-of-two sizes, on either
/// backend; `$dialect` (statement.rs) has the texts, with its way of skipping a
/// replayed id. `$after` runs in the same transaction with the statements' results
/// (SQLite keeps its rollups there).
macro_rules! insert_rows {
    ($pool:expr, $rows:expr, $db:ty, $dialect:expr, $after:path, $then:expr) => {{
        let then: Option<&$crate::ledger::Then<'_>> = $then;
        let rows: &[$crate::ledger::LedgerRow] = $rows;
        let write_error = |source| $crate::ledger::LedgerError::Write {
            rows: rows.len(),
            source,
        };
        let mut tx = $pool.begin().await.map_err(write_error)?;
        let mut statements = Vec::new();
        for chunk in $crate::ledger::statement::power_of_two_chunks(rows) {
            let mut query = sqlx::query::<$db>($dialect.insert(chunk.len()));
            for (i, row) in chunk.iter().enumerate() {
                if i > 0 && i % $crate::ledger::BIND_ROWS_PER_POLL == 0 {
                    tokio::task::yield_now().await;
                }
                query = push_row!(query, row);
            }
            statements.push(query.execute(&mut *tx).await.map_err(write_error)?);
        }
        let chunks = $crate::ledger::statement::power_of_two_chunks(rows);
        $after(&mut *tx, chunks, &statements)
            .await
            .map_err(write_error)?;
        if let Some(then) = then {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(then.sql.to_owned()));
            for bind in then.binds {
                query = match bind {
                    $crate::ledger::Bind::Int(value) => query.bind(*value),
                    $crate::ledger::Bind::Text(value) => query.bind(value.as_str()),
                };
            }
            query.execute(&mut *tx).await.map_err(write_error)?;
        }
        tx.commit().await.map_err(write_error)
    }};
}

/// One backend's migrations, embedded: the same list for both backends, each file
/// read from `migrations/<backend>/`. A new migration is one line here.
macro_rules! embedded_migrations {
    ($backend:literal) => {{
        use sqlx::SqlSafeStr as _;
        let migration = |version, name: &'static str, sql: &'static str| {
            sqlx::migrate::Migration::new(
                version,
                std::borrow::Cow::Borrowed(name),
                sqlx::migrate::MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        };
        sqlx::migrate::Migrator::with_migrations(vec![
            migration(
                1,
                "requests",
                include_str!(concat!("../../migrations/", $backend, "/0001_requests.sql")),
            ),
            migration(
                2,
                "keys_teams_budgets",
                include_str!(concat!(
                    "../../migrations/",
                    $backend,
                    "/0002_keys_teams_budgets.sql"
                )),
            ),
            migration(
                3,
                "spend_daily",
                include_str!(concat!(
                    "../../migrations/",
                    $backend,
                    "/0003_spend_daily.sql"
                )),
            ),
            migration(
                4,
                "upstream_objects",
                include_str!(concat!(
                    "../../migrations/",
                    $backend,
                    "/0004_upstream_objects.sql"
                )),
            ),
            migration(
                5,
                "service_tiers",
                include_str!(concat!(
                    "../../migrations/",
                    $backend,
                    "/0005_service_tiers.sql"
                )),
            ),
            migration(
                6,
                "providers",
                include_str!(concat!(
                    "../../migrations/",
                    $backend,
                    "/0006_providers.sql"
                )),
            ),
            migration(
                7,
                "routing",
                include_str!(concat!("../../migrations/", $backend, "/0007_routing.sql")),
            ),
            migration(
                8,
                "batch_rollups",
                include_str!(concat!(
                    "../../migrations/",
                    $backend,
                    "/0008_batch_rollups.sql"
                )),
            ),
        ])
    }};
}

mod background;
mod pool;
mod postgres;
pub mod report;
pub mod rollup;
pub mod shadow;
mod spill;
mod sqlite;
mod sqlite_rollup;
mod statement;
mod writer;

use serde::{Deserialize, Serialize};

use crate::metering::{Usage, UsageSource};
use crate::pricing::{Cost, UnitRates, Variant};

pub use pool::{Health, PoolSettings};
pub use postgres::PostgresLedger;
pub use sqlite::SqliteLedger;

/// Token counts, rates and milliseconds never approach i64::MAX; saturate, never wrap.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
pub use spill::SpillError;
pub use writer::{LedgerWriter, PendingRow, WriteFailures};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("unsupported database URL `{url}`")]
    UnsupportedUrl { url: String },
    #[error("cannot open database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot read the ledger: {0}")]
    Read(#[source] sqlx::Error),
    #[error("cannot write {rows} ledger rows: {source}")]
    Write {
        rows: usize,
        #[source]
        source: sqlx::Error,
    },
}

/// How a metered exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream answered 2xx and the body arrived whole.
    Ok,
    /// The upstream answered with an error status, passed through to the client.
    UpstreamError,
    /// No connection to the upstream (502).
    UpstreamUnreachable,
    /// The upstream ran out of time, before or during the body (504 or a cut stream).
    UpstreamTimeout,
    /// The upstream's body broke off before its end.
    UpstreamCut,
    /// The client went away before the body was delivered.
    ClientDisconnected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamCut => "upstream_cut",
            Self::ClientDisconnected => "client_disconnected",
        }
    }
}

/// One ledger row. Field meanings are in `migrations/sqlite/0001_requests.sql`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub id: String,
    /// The kind of upstream that served it (`openai`, `azure`, `anthropic`, …).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// On estimated rows: the tokenizer that counted them, `(approximation)` when it is
    /// not the provider's own.
    #[serde(default)]
    pub tokenizer: Option<String>,
    pub request_id: String,
    pub upstream_request_id: Option<String>,
    pub ts_ms: i64,
    pub caller: String,
    pub upstream: String,
    pub endpoint: String,
    pub model_requested: Option<String>,
    pub model_answered: Option<String>,
    /// `service_tier` as the request gave it; `None` when it named none.
    #[serde(default)]
    pub service_tier_requested: Option<String>,
    /// The tier that served it and priced it; `None` on batch and training rows, which
    /// bill at their own rates.
    #[serde(default)]
    pub service_tier: Option<String>,
    pub streamed: bool,
    pub usage: Usage,
    pub usage_source: UsageSource,
    pub status: u16,
    pub outcome: Outcome,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    /// `None`: the model is not in the catalog; the row is unpriced, not free.
    pub price: Option<RowPrice>,
    /// The tollgate key's id, or the caller's fingerprint in passthrough mode.
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub kind: Kind,
    /// How routing served it: alias, attempt, downgrade, shadow comparison.
    #[serde(default)]
    pub route: RowRoute,
}

fn default_provider() -> String {
    "openai".to_owned()
}

/// A row's routing columns. A request that fell back has one row per upstream call:
/// the answer the client got keeps the request's row id, each earlier attempt gets
/// `<row id>.<attempt>`, so a replay of any of them is skipped, never counted twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RowRoute {
    /// The alias the client sent, when one chose the model.
    pub model_alias: Option<String>,
    /// This upstream call's number within its request, from 1.
    pub attempt: u32,
    /// The model asked for before a budget downgrade replaced it.
    pub downgraded_from: Option<String>,
    /// Set on rows of kind `shadow`.
    pub shadow: Option<ShadowMark>,
}

impl Default for RowRoute {
    fn default() -> Self {
        Self {
            model_alias: None,
            attempt: 1,
            downgraded_from: None,
            shadow: None,
        }
    }
}

/// How a shadow answer compared with the answer the client got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowMark {
    /// The row id of the request that was mirrored.
    pub of: String,
    /// Whether the first choice's text (and tool calls) matched exactly; `None` when
    /// the candidate gave no answer to compare.
    pub text_match: Option<bool>,
    /// Whether the parsed value of a JSON or tool-call answer matched; `None` when the
    /// answer the client got was neither.
    pub value_match: Option<bool>,
}

/// A statement run in the transaction of an insert, after the rows.
pub struct Then<'a> {
    pub sql: &'a str,
    pub binds: &'a [Bind],
}

/// One bound value of a [`Then`] statement.
#[derive(Debug, Clone)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// What kind of spend a row is: billed at request time, by a batch job, training, or a
/// shadow comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Realtime,
    Batch,
    Training,
    /// A mirrored request to a candidate model: recorded and reported on its own, never
    /// counted in budgets, team spend or other reports.
    Shadow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Realtime => "realtime",
            Self::Batch => "batch",
            Self::Training => "training",
            Self::Shadow => "shadow",
        }
    }
}

/// What a row was charged and at which unit prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowPrice {
    pub cost: Cost,
    /// The catalog entry used (`gpt-4o-mini` for `ft:gpt-4o-mini-…:acme::x`).
    pub model: String,
    pub variant: Variant,
    pub rates: UnitRates,
}

/// The storage behind the writer. An enum rather than a trait object: the set of
/// backends is closed and known at compile time.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteLedger),
    Postgres(PostgresLedger),
}

impl Store {
    /// A store for `url` that connects on first use; call `migrate` before relying on
    /// its tables. Fails only on a malformed URL.
    pub fn lazy(url: &str) -> Result<Self, LedgerError> {
        Self::lazy_with(url, PoolSettings::default())
    }

    /// As `lazy`, with the pool's figures.
    pub fn lazy_with(url: &str, settings: PoolSettings) -> Result<Self, LedgerError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteLedger::lazy_with(url, settings)?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres(PostgresLedger::lazy_with(url, settings)?))
        } else {
            Err(LedgerError::UnsupportedUrl {
                url: url.to_owned(),
            })
        }
    }

    /// Applies the backend's migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(ledger) => ledger.migrate().await,
            Self::Postgres(ledger) => ledger.migrate().await,
        }
    }

    /// Opens the database named by `url` and applies its migrations.
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        Self::open_with(url, PoolSettings::default()).await
    }

    /// As `open`, with the pool's figures.
    pub async fn open_with(url: &str, settings: PoolSettings) -> Result<Self, LedgerError> {
        let store = Self::lazy_with(url, settings)?;
        store.migrate().await?;
        Ok(store)
    }

    /// When the database last answered.
    pub fn health(&self) -> &Health {
        match self {
            Self::Sqlite(ledger) => ledger.health(),
            Self::Postgres(ledger) => ledger.health(),
        }
    }

    /// The pool's acquire timeout: also how long a budget check waits for its locks.
    pub fn acquire_timeout(&self) -> std::time::Duration {
        match self {
            Self::Sqlite(ledger) => ledger.pool().options().get_acquire_timeout(),
            Self::Postgres(ledger) => ledger.pool().options().get_acquire_timeout(),
        }
    }

    /// Inserts rows in one transaction; rows whose id is already stored are skipped.
    pub async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(ledger) => ledger.insert(rows).await,
            Self::Postgres(ledger) => ledger.insert(rows).await,
        }
    }

    /// This store with a connection of its own for the ledger writer, on a thread of the
    /// least priority (SQLite; Postgres does the work in its own server, and is as is).
    pub fn with_background_writer(self) -> Self {
        match self {
            Self::Sqlite(ledger) => Self::Sqlite(ledger.with_background_writer()),
            postgres @ Self::Postgres(_) => postgres,
        }
    }

    /// As `insert`, through the background connection when the store has one.
    pub async fn insert_in_background(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(ledger) => ledger.insert_in_background(rows).await,
            Self::Postgres(ledger) => ledger.insert(rows).await,
        }
    }

    /// Inserts rows and runs `then` (written with `?` placeholders) in one transaction:
    /// a batch biller advances its cursor with the rows it billed, so the two never
    /// disagree after a crash.
    pub async fn insert_then(
        &self,
        rows: &[LedgerRow],
        then: &Then<'_>,
    ) -> Result<(), LedgerError> {
        let sql = self.sql(then.sql);
        let then = Then {
            sql: &sql,
            binds: then.binds,
        };
        match self {
            Self::Sqlite(ledger) => ledger.insert_then(rows, Some(&then)).await,
            Self::Postgres(ledger) => ledger.insert_then(rows, Some(&then)).await,
        }
    }

    /// `sql` with its `?` placeholders in this backend's syntax (`$1, $2, …` on
    /// Postgres). Statements are written once, with `?`, for both backends.
    pub fn sql(&self, sql: &str) -> String {
        match self {
            Self::Sqlite(_) => sql.to_owned(),
            Self::Postgres(_) => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// Whether the database answers within a second (for readiness).
    pub async fn ping(&self) -> bool {
        let ping = async {
            match self {
                Self::Sqlite(ledger) => sqlx::query("SELECT 1")
                    .execute(ledger.pool())
                    .await
                    .map(drop),
                Self::Postgres(ledger) => sqlx::query("SELECT 1")
                    .execute(ledger.pool())
                    .await
                    .map(drop),
            }
        };
        let answered = matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), ping).await,
            Ok(Ok(_))
        );
        if answered {
            self.health().answered();
        }
        answered
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }
}

#[cfg(test)]
mod tests {
    use super::statement::power_of_two_chunks;
    use super::*;

    #[test]
    fn batches_split_into_power_of_two_statements() {
        let sizes = |n: usize| -> Vec<usize> {
            let rows: Vec<LedgerRow> = (0..n).map(|_| sample()).collect();
            power_of_two_chunks(&rows).map(<[LedgerRow]>::len).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(7), [4, 2, 1]);
        assert_eq!(sizes(600), [256, 256, 64, 16, 8]);
    }

    pub(super) fn sample() -> LedgerRow {
        LedgerRow {
            id: String::new(),
            request_id: String::new(),
            upstream_request_id: None,
            ts_ms: 0,
            caller: String::new(),
            upstream: String::new(),
            endpoint: String::new(),
            model_requested: None,
            model_answered: None,
            service_tier_requested: None,
            service_tier: None,
            streamed: false,
            usage: crate::metering::Usage::default(),
            usage_source: crate::metering::UsageSource::Upstream,
            status: 200,
            outcome: Outcome::Ok,
            latency_ms: 0,
            ttfb_ms: None,
            price: None,
            key_id: None,
            team_id: None,
            kind: Kind::Realtime,
            route: RowRoute::default(),
            provider: "openai".to_owned(),
            tokenizer: None,
        }
    }
}
