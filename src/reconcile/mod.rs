//! Reconciliation: the ledger's requests, tokens and dollars against OpenAI's own
//! usage and cost export, per UTC day and model, so a drift between what tollgate
//! recorded and what OpenAI will invoice shows the day it starts. `tollgate
//! reconcile`, `GET /admin/reconcile`, the dashboard's panel and the `[reconcile]
//! schedule` all run [`Reconciler::run`].

pub mod command;
pub mod compare;
pub mod format;
pub mod ledger;
pub mod line_item;
pub mod openai;
pub mod schedule;
pub mod usd;

use std::collections::HashMap;
use std::time::Duration;

use crate::clock::{format_ms, parse_time};
use crate::config::{Config, ReconcileConfig, Secret};
use crate::ledger::{LedgerError, Store};
use crate::pricing::Catalog;

pub use compare::{Ask, Report};
pub use usd::{AmountError, Usd};

pub const DAY_S: i64 = 86_400;
const DAY_MS: i64 = DAY_S * 1000;
/// The longest range one report covers.
pub const MAX_DAYS: i64 = 366;

/// What went wrong, and on which side: OpenAI's export or tollgate's ledger.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(
        "OpenAI side: no admin key: set {var} (reconcile.admin_key_env) to an organization admin key"
    )]
    NoAdminKey { var: String },
    #[error(
        "OpenAI side: {var} holds a project key (sk-proj-…); the usage and costs export takes an organization admin key only"
    )]
    ProjectKey { var: String },
    #[error("OpenAI side: reconcile.base_url `{url}` is not a URL")]
    BadBaseUrl { url: String },
    #[error(
        "OpenAI side: the admin key was refused (401) by {endpoint}: check that {var} holds a current organization admin key"
    )]
    KeyRefused { endpoint: &'static str, var: String },
    #[error(
        "OpenAI side: the admin key may not read {endpoint} (403): it needs read access to usage"
    )]
    Forbidden { endpoint: &'static str },
    #[error("OpenAI side: {endpoint} answered {status}{}", status_detail(*.tries, .message.as_deref()))]
    Status {
        endpoint: &'static str,
        status: u16,
        tries: u32,
        message: Option<String>,
    },
    #[error("OpenAI side: cannot reach {endpoint}: {reason}")]
    Unreachable {
        endpoint: &'static str,
        reason: String,
    },
    #[error(
        "OpenAI side: {endpoint} did not answer within {}",
        humantime::format_duration(*.timeout)
    )]
    Timeout {
        endpoint: &'static str,
        timeout: Duration,
    },
    #[error("OpenAI side: {endpoint} did not answer with JSON (content-type `{content_type}`)")]
    NotJson {
        endpoint: &'static str,
        content_type: String,
    },
    #[error("OpenAI side: {endpoint} answered JSON that is not a usage or costs page: {reason}")]
    Unexpected {
        endpoint: &'static str,
        reason: String,
    },
    #[error(
        "OpenAI side: {endpoint} still had more after {pages} pages; stopped there (reconcile.max_pages)"
    )]
    EndlessPages { endpoint: &'static str, pages: u32 },
    #[error("OpenAI side: {endpoint} gave a page cursor it had given before; stopped there")]
    RepeatedCursor { endpoint: &'static str },
    #[error("OpenAI side: costs are in `{currency}`; tollgate compares USD only")]
    Currency { currency: String },
    #[error("OpenAI side: the cost amount `{text}` is not a number tollgate can hold: {reason}")]
    Amount { text: String, reason: AmountError },
    #[error("tollgate side: cannot read the ledger: {0}")]
    Ledger(#[source] LedgerError),
    #[error(
        "tollgate side: no upstream is on OpenAI's bill: name the ledger's upstreams with --upstream or reconcile.upstreams (configured: {configured})"
    )]
    NoUpstreams { configured: String },
    #[error("tollgate side: the totals are too large to compare")]
    Overflow,
}

fn status_detail(tries: u32, message: Option<&str>) -> String {
    let mut detail = String::new();
    if tries > 1 {
        detail.push_str(&format!(" {tries} times"));
    }
    if let Some(message) = message {
        detail.push_str(&format!(": {message}"));
    }
    detail
}

/// Which side an error is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Provider,
    Tollgate,
}

impl ReconcileError {
    pub fn side(&self) -> Side {
        match self {
            Self::Ledger(_) | Self::NoUpstreams { .. } | Self::Overflow => Side::Tollgate,
            _ => Side::Provider,
        }
    }

    /// The same error, saying how often it was tried.
    fn after(self, tries: u32) -> Self {
        match self {
            Self::Status {
                endpoint,
                status,
                message,
                ..
            } => Self::Status {
                endpoint,
                status,
                tries,
                message,
            },
            other => other,
        }
    }
}

/// A range of whole UTC days, both ends included, as days since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub first: i64,
    pub last: i64,
}

impl Days {
    /// From a `since` and an optional `until` (the last day, included; default
    /// yesterday, the last day OpenAI's figures are complete for). Each is a day
    /// (`2026-11-01`) or anything `parse_time` reads, taken as the UTC day it falls on.
    pub fn parse(since: &str, until: Option<&str>, now_ms: i64) -> Result<Self, String> {
        let day = |text: &str| parse_time(text, now_ms).map(|ms| ms.div_euclid(DAY_MS));
        let first = day(since)?;
        let last = match until {
            Some(until) => day(until)?,
            None => now_ms.div_euclid(DAY_MS) - 1,
        };
        Self::new(first, last)
    }

    pub fn new(first: i64, last: i64) -> Result<Self, String> {
        if first > last {
            return Err(format!(
                "the range starts on {} after its last day {} (`until` is the last day \
                 compared, included; it defaults to yesterday)",
                Self::label(first),
                Self::label(last)
            ));
        }
        if last - first >= MAX_DAYS {
            return Err(format!("a report covers at most {MAX_DAYS} days"));
        }
        Ok(Self { first, last })
    }

    /// The `days` complete UTC days before the one `now_ms` falls on.
    pub fn before(now_ms: i64, days: u32) -> Self {
        let today = now_ms.div_euclid(DAY_MS);
        Self {
            first: today - i64::from(days.max(1)),
            last: today - 1,
        }
    }

    pub fn start_ms(self) -> i64 {
        self.first * DAY_MS
    }

    /// The end, excluded.
    pub fn end_ms(self) -> i64 {
        (self.last + 1) * DAY_MS
    }

    pub fn start_s(self) -> i64 {
        self.first * DAY_S
    }

    pub fn end_s(self) -> i64 {
        (self.last + 1) * DAY_S
    }

    /// Whether a bucket starting at `seconds` lies in the range.
    pub fn contains_s(self, seconds: i64) -> bool {
        (self.start_s()..self.end_s()).contains(&seconds)
    }

    /// `2026-11-01`.
    pub fn label(day: i64) -> String {
        format_ms(day * DAY_MS).chars().take(10).collect()
    }
}

/// How lines are cut: per day, per model, or per model on each day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    pub day: bool,
    pub model: bool,
}

impl Grouping {
    pub const DAY_AND_MODEL: Self = Self {
        day: true,
        model: true,
    };

    /// `day`, `model`, `day,model` (or `model,day`).
    pub fn parse(text: &str) -> Option<Self> {
        let mut grouping = Self {
            day: false,
            model: false,
        };
        for part in text.split(',') {
            let seen = match part.trim() {
                "day" => &mut grouping.day,
                "model" => &mut grouping.model,
                _ => return None,
            };
            if std::mem::replace(seen, true) {
                return None;
            }
        }
        Some(grouping)
    }

    pub fn name(self) -> &'static str {
        match (self.day, self.model) {
            (true, true) => "day,model",
            (true, false) => "day",
            _ => "model",
        }
    }
}

/// Everything a reconciliation needs but the ledger: the settings, the catalog both
/// sides' model names resolve through, and the admin key.
pub struct Reconciler {
    config: ReconcileConfig,
    catalog: Catalog,
    billed: Vec<String>,
    configured: Vec<String>,
    key: Option<Secret>,
}

impl Reconciler {
    /// `env` holds the admin key under `config.reconcile.admin_key_env`.
    pub fn new(config: &Config, catalog: Catalog, env: &HashMap<String, String>) -> Self {
        let reconcile = config.reconcile.clone();
        let key = env
            .get(&reconcile.admin_key_env)
            .filter(|key| !key.trim().is_empty())
            .map(|key| Secret::new(key.trim().to_owned()));
        Self {
            billed: reconcile.billed_upstreams(&config.upstreams),
            configured: config.upstreams.iter().map(|u| u.name.clone()).collect(),
            config: reconcile,
            catalog,
            key,
        }
    }

    pub fn config(&self) -> &ReconcileConfig {
        &self.config
    }

    /// Whether an admin key was found (its value is never shown).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The ledger upstreams compared when none are named.
    pub fn billed_upstreams(&self) -> &[String] {
        &self.billed
    }

    /// Fetches OpenAI's figures and reads the ledger's for the same days, then compares.
    pub async fn run(&self, store: &Store, ask: &Ask<'_>) -> Result<Report, ReconcileError> {
        let var = &self.config.admin_key_env;
        let key = self
            .key
            .clone()
            .ok_or_else(|| ReconcileError::NoAdminKey { var: var.clone() })?;
        if key.expose().starts_with("sk-proj-") {
            return Err(ReconcileError::ProjectKey { var: var.clone() });
        }
        if ask.upstreams.is_empty() {
            return Err(ReconcileError::NoUpstreams {
                configured: self.configured.join(", "),
            });
        }
        let client = openai::Client::new(&self.config, key)?;
        let (export, rows) = tokio::join!(
            client.export(ask.days),
            ledger::read(store, ask.days, ask.upstreams)
        );
        let export = export?;
        let rows = rows.map_err(ReconcileError::Ledger)?;
        compare::build(&self.catalog, ask, export, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_whole_utc_days() {
        // 2026-12-02T13:00:00Z
        let now = 1_796_216_400_000;
        let days = Days::parse("2026-11-01", None, now).unwrap();
        assert_eq!(Days::label(days.first), "2026-11-01");
        assert_eq!(Days::label(days.last), "2026-12-01", "yesterday by default");
        assert_eq!(days.end_ms() - days.start_ms(), 31 * DAY_MS);
        let one = Days::parse("2026-11-05T17:00:00Z", Some("2026-11-05"), now).unwrap();
        assert_eq!((one.first, one.last), (one.last, one.last));
        assert!(one.contains_s(one.start_s()) && !one.contains_s(one.end_s()));
        assert!(
            Days::parse("2026-12-02", None, now).is_err(),
            "today is not complete"
        );
        assert!(Days::parse("2026-12-02", Some("2026-12-02"), now).is_ok());
        assert!(Days::parse("2024-01-01", Some("2026-01-01"), now).is_err());
        assert!(Days::parse("soon", None, now).is_err());
        let before = Days::before(now, 3);
        assert_eq!(
            (Days::label(before.first), Days::label(before.last)),
            ("2026-11-29".to_owned(), "2026-12-01".to_owned())
        );
    }

    #[test]
    fn groupings_parse() {
        assert_eq!(Grouping::parse("day,model"), Some(Grouping::DAY_AND_MODEL));
        assert_eq!(Grouping::parse("model, day"), Some(Grouping::DAY_AND_MODEL));
        assert_eq!(Grouping::parse("day").map(Grouping::name), Some("day"));
        assert_eq!(Grouping::parse("model").map(Grouping::name), Some("model"));
        for bad in ["", "team", "day,day", "day,model,hour"] {
            assert_eq!(Grouping::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn errors_say_their_side_and_never_the_key() {
        let refused = ReconcileError::KeyRefused {
            endpoint: "organization/costs",
            var: "OPENAI_ADMIN_KEY".to_owned(),
        };
        assert_eq!(
            refused.to_string(),
            "OpenAI side: the admin key was refused (401) by organization/costs: check that \
             OPENAI_ADMIN_KEY holds a current organization admin key"
        );
        let status = ReconcileError::Status {
            endpoint: "organization/usage/completions",
            status: 500,
            tries: 4,
            message: None,
        };
        assert_eq!(
            status.to_string(),
            "OpenAI side: organization/usage/completions answered 500 4 times"
        );
        assert_eq!(status.side(), Side::Provider);
        assert_eq!(ReconcileError::Overflow.side(), Side::Tollgate);
    }
}
