//! Every metric tollgate exports, defined once, in Prometheus' text format at
//! `/metrics`. Names follow Prometheus conventions: `tollgate_` prefix, base units in
//! names, `_total` for counters.
//!
//! Cardinality is bounded on purpose: `model` is the price catalog's name for the model
//! (dated snapshots and fine-tuned names fold into their family; names the catalog does
//! not price become `other`), `team` is the team's name, `key` the key's prefix (or the
//! caller's fingerprint in passthrough mode) and disappears with
//! `metrics.per_key_labels = false`; `service_tier` (on spend) is one of OpenAI's tier
//! names or `other`; histograms carry only endpoint and model.

mod cost;
mod exporter;
mod ledger;
mod reconcile;
mod series;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, TextEncoder,
};

use crate::auth::Identity;
use crate::config::MetricsConfig;
use crate::ledger::LedgerWriter;
use crate::metering::Usage;
use crate::pricing::Cost;
use cost::CostCounter;
use exporter::Exporter;
pub use exporter::Family;
pub use reconcile::ReconcileMetrics;
use series::Series;

/// The `model` label of requests whose model the catalog does not price.
pub const OTHER_MODEL: &str = "other";

/// Whole requests, upstream included: LLM calls run from a fraction of a second to
/// minutes.
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// The upstream's first byte: tens of milliseconds (embeddings) to a minute (long
/// reasoning before the first token).
const TTFB_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];
/// tollgate's own time: sub-millisecond normally; milliseconds when a budget
/// reservation goes to the database or a large prompt is counted.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const TOKEN_TYPES: [&str; 4] = ["prompt", "cached", "completion", "reasoning"];

/// The metrics, cheap to clone: every request's exchange and axum's per-request state
/// carry a copy, and cloning twenty-odd metric handles one by one cost ~1.3 µs a
/// request (bench/README.md).
#[derive(Clone)]
pub struct Metrics(Arc<Families>);

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

/// The registry and its metric families.
pub struct Families {
    registry: Exporter,
    per_key: bool,
    /// Requests whose model no catalog prices, by model: what to add to the catalog.
    pub unpriced_requests: IntCounterVec,
    /// Requests served at a tier their model has no sheet for (priced at standard), by
    /// model (the catalog's name) and tier label.
    pub unpriced_tiers: IntCounterVec,
    /// Budget thresholds crossed, by scope (key, team) and level (soft, exhausted).
    pub budget_alerts: IntCounterVec,
    /// Budget checks that could not reach the store, by what the policy did
    /// (admitted, refused).
    pub budget_check_errors: IntCounterVec,
    /// Requests refused by a rate limit or a budget, by kind (rpm, tpm, rpd, tpd,
    /// concurrency, budget) and team.
    pub rate_limited_requests: IntCounterVec,
    /// Rate-limit checks the shared backend (Redis) could not answer, by what the
    /// policy did (local: checked by this replica alone; refused: 503).
    pub rate_limit_backend_errors: IntCounterVec,
    /// Batch lines, by result: output billed, failed (not billed) or malformed
    /// (skipped); input_malformed (skipped by admission).
    pub batch_lines: IntCounterVec,
    /// USD billed by batch and fine-tuning jobs, by kind (batch, training), summed
    /// exactly like `tollgate_cost_usd_total` (which counts realtime requests).
    pub job_spend: CostCounter,
    /// Batches and jobs the upstream lost (404 poll after poll), by object.
    pub batch_lost: IntCounterVec,
    /// Failed polls of tracked batches and jobs, by reason.
    pub batch_poll_errors: IntCounterVec,
    /// Batch creates refused at admission, by reason (budget, enqueued_tokens).
    pub batch_admissions_refused: IntCounterVec,
    /// What the last scheduled reconciliation with OpenAI's export found.
    pub reconcile: ReconcileMetrics,
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: CostCounter,
    request_duration: HistogramVec,
    upstream_ttfb: HistogramVec,
    overhead: HistogramVec,
    budget_used_ratio: GaugeVec,
    in_flight: IntGauge,
    /// Label handles by caller, model and endpoint: one map lookup per request instead
    /// of one per series it touches.
    series: Arc<RwLock<HashMap<String, Arc<Series>>>>,
}

/// Who a request is attributed to, as labels: never a secret.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The team's name; empty in passthrough mode.
    pub team: String,
    /// The key's prefix, or the caller's fingerprint in passthrough mode.
    pub key: String,
}

impl From<&Identity> for Caller {
    fn from(identity: &Identity) -> Self {
        Self {
            team: identity
                .key
                .as_ref()
                .map(|entry| entry.team.name.clone())
                .unwrap_or_default(),
            key: identity.display.clone(),
        }
    }
}

/// A metered request that reached the upstream (or tried to), at its end.
#[derive(Debug)]
pub struct Observation<'a> {
    pub caller: &'a Caller,
    /// The model label (see [`OTHER_MODEL`]).
    pub model: &'a str,
    pub endpoint: &'static str,
    /// The served tier's label (see [`tier::label`]).
    pub service_tier: &'static str,
    /// The kind of upstream that answered (`openai`, `azure`, …): a fixed set.
    pub provider: &'static str,
    pub status: u16,
    pub usage: &'a Usage,
    /// `None` when unpriced.
    pub cost: Option<Cost>,
    pub duration: Duration,
    /// From sending upstream to the upstream's first body byte.
    pub upstream_ttfb: Option<Duration>,
    /// tollgate's own share of `duration`.
    pub overhead: Duration,
}

/// One request in flight; the gauge drops when this does, however the request ends.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn counter_vec(
    registry: &Exporter,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn histogram_vec(
    registry: &Exporter,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> Result<HistogramVec, prometheus::Error> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let vec = HistogramVec::new(opts, labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

/// `labels` without `key` when per-key labels are off.
fn keyed<'a>(per_key: bool, labels: &[&'a str]) -> Vec<&'a str> {
    labels
        .iter()
        .copied()
        .filter(|label| per_key || *label != "key")
        .collect()
}

impl Metrics {
    /// The metrics with the default settings (per-key labels on).
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::with_config(&MetricsConfig::default())
    }

    pub fn with_config(config: &MetricsConfig) -> Result<Self, prometheus::Error> {
        let registry = Exporter::default();
        let per_key = config.per_key_labels;
        let r = &registry;
        let unpriced_requests = counter_vec(
            r,
            "tollgate_unpriced_requests_total",
            "Requests recorded with an unknown cost because no catalog prices their model.",
            &["model"],
        )?;
        let unpriced_tiers = counter_vec(
            r,
            "tollgate_unpriced_tier_total",
            "Requests served at a service tier their model has no rates for, priced at \
             standard instead, by model and tier.",
            &["model", "tier"],
        )?;
        let budget_alerts = counter_vec(
            r,
            "tollgate_budget_alerts_total",
            "Budget thresholds crossed (once per budget and period).",
            &["scope", "level"],
        )?;
        let budget_check_errors = counter_vec(
            r,
            "tollgate_budget_check_errors_total",
            "Budget checks that could not reach the database, by what was done.",
            &["action"],
        )?;
        let rate_limited_requests = counter_vec(
            r,
            "tollgate_rate_limited_requests_total",
            "Requests refused by a rate limit or a budget, by the limit that refused them.",
            &["kind", "team"],
        )?;
        let rate_limit_backend_errors = counter_vec(
            r,
            "tollgate_rate_limit_backend_errors_total",
            "Rate-limit checks the shared backend could not answer, by what was done.",
            &["action"],
        )?;
        let batch_lines = counter_vec(
            r,
            "tollgate_batch_lines_total",
            "Batch lines, by result: output billed, failed (not billed) or malformed \
             (skipped); input_malformed (skipped by admission).",
            &["result"],
        )?;
        let job_spend = CostCounter::named(
            "tollgate_job_spend_usd_total",
            "USD billed by batch and fine-tuning jobs, by kind, summed exactly in pico-USD.",
            &["kind"],
        )?;
        registry.register(Box::new(job_spend.clone()))?;
        let batch_lost = counter_vec(
            r,
            "tollgate_batch_lost_total",
            "Tracked batches and fine-tuning jobs the upstream lost, by object.",
            &["object"],
        )?;
        let batch_poll_errors = counter_vec(
            r,
            "tollgate_batch_poll_errors_total",
            "Failed polls of tracked batches and fine-tuning jobs, by reason.",
            &["reason"],
        )?;
        let batch_admissions_refused = counter_vec(
            r,
            "tollgate_batch_admissions_refused_total",
            "Batch creates refused at admission, by reason.",
            &["reason"],
        )?;
        let requests = counter_vec(
            r,
            "tollgate_requests_total",
            "Metered requests answered, by caller, model, endpoint and status class.",
            &keyed(
                per_key,
                &["team", "key", "model", "endpoint", "status_class"],
            ),
        )?;
        let tokens = counter_vec(
            r,
            "tollgate_tokens_total",
            "Tokens used, by type: prompt (cached included), cached, completion \
             (reasoning included), reasoning.",
            &keyed(per_key, &["team", "key", "model", "provider", "type"]),
        )?;
        let cost = CostCounter::new(&keyed(
            per_key,
            &["team", "key", "model", "provider", "service_tier"],
        ))?;
        registry.register(Box::new(cost.clone()))?;
        let request_duration = histogram_vec(
            r,
            "tollgate_request_duration_seconds",
            "Metered requests from arrival to the end of the response, upstream included.",
            DURATION_BUCKETS,
            &["endpoint", "model"],
        )?;
        let upstream_ttfb = histogram_vec(
            r,
            "tollgate_upstream_time_to_first_byte_seconds",
            "From sending a request upstream to the first byte of the upstream's body.",
            TTFB_BUCKETS,
            &["endpoint", "model"],
        )?;
        let overhead = histogram_vec(
            r,
            "tollgate_overhead_seconds",
            "tollgate's own time per metered request: from arrival until it is sent \
             upstream (reading, counting, limits, budget), plus turning a buffered \
             answer into the response.",
            OVERHEAD_BUCKETS,
            &["endpoint"],
        )?;
        let budget_used_ratio = GaugeVec::new(
            Opts::new(
                "tollgate_budget_used_ratio",
                "Spent plus reserved over the limit, per budget, as of its last check on \
                 this replica.",
            ),
            &keyed(per_key, &["scope", "team", "key"]),
        )?;
        registry.register(Box::new(budget_used_ratio.clone()))?;
        let in_flight = IntGauge::new(
            "tollgate_in_flight_requests",
            "Requests on /v1 being served: metered ones until their row is queued, \
             pass-through ones until the upstream's response head.",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        let reconcile = ReconcileMetrics::register(r)?;
        Ok(Self(Arc::new(Families {
            registry,
            per_key,
            unpriced_requests,
            unpriced_tiers,
            budget_alerts,
            budget_check_errors,
            rate_limited_requests,
            rate_limit_backend_errors,
            batch_lines,
            job_spend,
            batch_lost,
            batch_poll_errors,
            batch_admissions_refused,
            reconcile,
            requests,
            tokens,
            cost,
            request_duration,
            upstream_ttfb,
            overhead,
            budget_used_ratio,
            in_flight,
            series: Arc::default(),
        })))
    }

    /// Exports the ledger writer's queue, spill and failure figures, read when scraped.
    pub fn watch_ledger(&self, writer: LedgerWriter) -> Result<(), prometheus::Error> {
        self.registry
            .register(Box::new(ledger::LedgerCollector::new(writer)?))
    }

    /// Adds metrics defined by another module (routing's) to the scrape.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Every family registered so far, with its label names, sorted by name: also
    /// those with no series yet, which a scrape leaves out.
    pub fn families(&self) -> Vec<Family> {
        self.registry.families()
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records a metered request at its end: its count, tokens, cost and timings.
    pub fn observe(&self, seen: &Observation<'_>) {
        let series = self.series(seen.caller, seen.model, seen.endpoint, seen.provider);
        series.request(self, seen.status).inc();
        let usage = seen.usage;
        let counts = [
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens,
            usage.reasoning_tokens,
        ];
        if counts.iter().any(|&n| n > 0) {
            for (counter, n) in series.tokens(self).iter().zip(counts) {
                counter.inc_by(n);
            }
        }
        if let Some(cost) = seen.cost {
            series.cost(self, seen.service_tier).add(cost);
        }
        let timings = series.timings(self);
        timings.duration.observe(seen.duration.as_secs_f64());
        timings.overhead.observe(seen.overhead.as_secs_f64());
        if let Some(ttfb) = seen.upstream_ttfb {
            timings.ttfb.observe(ttfb.as_secs_f64());
        }
    }

    /// Records a metered request answered by tollgate itself, before any upstream:
    /// `limit` names the rate limit or budget that refused it, if one did.
    pub fn refused(
        &self,
        caller: &Caller,
        model: &str,
        endpoint: &'static str,
        status: u16,
        limit: Option<&str>,
    ) {
        // Refused before any upstream: no provider, and only the request count, which
        // has no provider label, is touched.
        self.series(caller, model, endpoint, "")
            .request(self, status)
            .inc();
        if let Some(kind) = limit {
            self.rate_limited_requests
                .with_label_values(&[kind, &caller.team])
                .inc();
        }
    }

    /// Where a budget stands after a check: `used` (spent and reserved) over `limit`.
    /// Key budgets go unreported without per-key labels.
    pub fn budget_used(&self, scope: &str, caller: &Caller, used: Cost, limit: Cost) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a ratio, not money: 15 significant digits are plenty"
        )]
        let ratio = match limit.as_pico() {
            0 => 1.0,
            limit => used.as_pico() as f64 / limit as f64,
        };
        let key = if scope == "key" {
            caller.key.as_str()
        } else {
            ""
        };
        let gauge = if self.per_key {
            self.budget_used_ratio
                .with_label_values(&[scope, &caller.team, key])
        } else if scope == "key" {
            return;
        } else {
            self.budget_used_ratio
                .with_label_values(&[scope, &caller.team])
        };
        gauge.set(ratio);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn series(
        &self,
        caller: &Caller,
        model: &str,
        endpoint: &'static str,
        provider: &'static str,
    ) -> Arc<Series> {
        let key = if self.per_key {
            caller.key.as_str()
        } else {
            ""
        };
        // Unit separators: no label value a caller controls can forge another's key.
        // Pushed rather than `format!`ed: this runs on every request.
        let parts = [caller.team.as_str(), key, model, endpoint, provider];
        let mut id = String::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                id.push('\u{1f}');
            }
            id.push_str(part);
        }
        if let Some(series) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return series.clone();
        }
        let series = Arc::new(Series {
            team: caller.team.clone(),
            key: key.to_owned(),
            model: model.to_owned(),
            endpoint,
            provider,
            requests: Default::default(),
            tokens: OnceLock::new(),
            cost: Default::default(),
            timings: OnceLock::new(),
        });
        self.series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert(series)
            .clone()
    }
}

#[cfg(test)]
mod tests;
