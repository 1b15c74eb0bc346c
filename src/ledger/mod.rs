//! The spend ledger: one row per metered request, written by a background writer so the
//! request path never waits on the database. Knows no HTTP.

pub mod report;
mod sqlite;
mod writer;

use serde::{Deserialize, Serialize};

use crate::metering::{Usage, UsageSource};
use crate::pricing::{Cost, UnitRates, Variant};

pub use sqlite::SqliteLedger;
pub use writer::{LedgerWriter, PendingRow};

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
    pub request_id: String,
    pub upstream_request_id: Option<String>,
    pub ts_ms: i64,
    pub caller: String,
    pub upstream: String,
    pub endpoint: String,
    pub model_requested: Option<String>,
    pub model_answered: Option<String>,
    pub streamed: bool,
    pub usage: Usage,
    pub usage_source: UsageSource,
    pub status: u16,
    pub outcome: Outcome,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    /// `None`: the model is not in the catalog; the row is unpriced, not free.
    pub price: Option<RowPrice>,
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
}

impl Store {
    /// Opens the database named by `url` and applies its migrations.
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteLedger::open(url).await?))
        } else {
            Err(LedgerError::UnsupportedUrl {
                url: url.to_owned(),
            })
        }
    }

    /// Inserts rows in one transaction; rows whose id is already stored are skipped.
    pub async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(ledger) => ledger.insert(rows).await,
        }
    }
}
