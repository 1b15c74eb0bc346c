//! Batch and fine-tuning jobs: who created each file, batch and job (only that team may
//! see, download or cancel it through tollgate), and billing when they finish.
//!
//! - [`api`]: the `/v1/files`, `/v1/batches` and `/v1/fine_tuning/jobs` routes: ownership
//!   checks, list filtering, and the batch admission check.
//! - [`admit`](admit): a batch's input file counted with the real tokenizer, priced at
//!   batch rates, checked against budgets and the enqueued-token limit.
//! - [`poller`](poller): the background task polling unfinished batches and jobs.
//! - [`bill`](bill): a finished batch's output file streamed line by line into ledger rows.
//! - [`lines`]: the bounded line splitter that keeps that in constant memory.
//! - [`store`]: the `upstream_objects` table, where all of it survives restarts.

mod admit;
pub mod api;
mod bill;
pub mod lines;
mod poller;
pub mod store;

use std::sync::Arc;

use tokio::sync::{Mutex, Notify};

use crate::config::{AuthMode, BatchConfig};
use crate::ledger::{LedgerError, Store};
use crate::metrics::Metrics;
use crate::proxy::Pricer;
use crate::proxy::upstream::Upstreams;

pub use bill::{BillOutcome, bill_output};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch tracking store: {0}")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("no upstream is configured for batches")]
    NoUpstream,
    #[error("cannot reach the upstream for {path}: {source}")]
    Unreachable {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the upstream answered {status} for {path}")]
    Status { path: String, status: u16 },
    #[error("the upstream's answer for {path} is not the expected JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl BatchError {
    /// The upstream does not know the object (any more).
    fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }

    /// The variant's name, for metric labels.
    fn label(&self) -> &'static str {
        match self {
            Self::Store(_) => "store",
            Self::Ledger(_) => "ledger",
            Self::NoUpstream => "no_upstream",
            Self::Unreachable { .. } => "unreachable",
            Self::Status { status: 404, .. } => "not_found",
            Self::Status { .. } => "status",
            Self::Json { .. } => "json",
        }
    }
}

/// Tracks batches and jobs and bills them. Shared by the routes and the poller.
pub struct Tracker {
    store: Store,
    upstreams: Upstreams,
    pricer: Arc<Pricer>,
    metrics: Metrics,
    config: BatchConfig,
    mode: AuthMode,
    /// One poll pass at a time: the loop and an explicit `poll_all` never read the same
    /// output file at once (ids would keep the ledger exact; this keeps it cheap).
    pass: Mutex<()>,
    wake: Notify,
}

impl Tracker {
    pub fn new(
        store: Store,
        upstreams: Upstreams,
        pricer: Arc<Pricer>,
        metrics: Metrics,
        config: BatchConfig,
        mode: AuthMode,
    ) -> Self {
        Self {
            store,
            upstreams,
            pricer,
            metrics,
            config,
            mode,
            pass: Mutex::new(()),
            wake: Notify::new(),
        }
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Who may use an object: the team in keys mode, the caller's fingerprint (its own
/// upstream key) in passthrough mode, where there are no teams.
pub fn owner(identity: &crate::auth::Identity) -> String {
    identity
        .team_id
        .clone()
        .unwrap_or_else(|| identity.key_id.clone())
}
