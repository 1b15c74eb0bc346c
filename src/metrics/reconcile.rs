//! What the last reconciliation with OpenAI's export found: the drift of its totals,
//! its lines outside the tolerance, when it last succeeded, and every run's result.
//! Set by scheduled runs (`[reconcile] schedule`) only: an on-demand report for some
//! other range would overwrite the day's figures with a different question's answer.

use prometheus::{Gauge, GaugeVec, IntCounterVec, IntGauge, Opts};

use super::Exporter;

/// The drift kinds: dollars, and input plus output tokens.
const KINDS: [&str; 2] = ["usd", "tokens"];
/// A run's results: all lines within the tolerance, some outside, or no report.
const RESULTS: [&str; 3] = ["ok", "drift", "failed"];

pub struct ReconcileMetrics {
    drift: GaugeVec,
    out_of_tolerance: IntGauge,
    last_success: Gauge,
    runs: IntCounterVec,
}

impl ReconcileMetrics {
    pub(super) fn register(registry: &Exporter) -> Result<Self, prometheus::Error> {
        let drift = GaugeVec::new(
            Opts::new(
                "tollgate_reconcile_drift_ratio",
                "|tollgate - OpenAI| / OpenAI over the last scheduled reconciliation's days, \
                 by kind (usd; tokens: input plus output). NaN until a run succeeds.",
            ),
            &["kind"],
        )?;
        let out_of_tolerance = IntGauge::new(
            "tollgate_reconcile_lines_out_of_tolerance",
            "Lines (day and model) of the last scheduled reconciliation outside \
             reconcile.tolerance_percent.",
        )?;
        let last_success = Gauge::new(
            "tollgate_reconcile_last_success_timestamp_seconds",
            "When a scheduled reconciliation last produced a report (Unix seconds; 0: never).",
        )?;
        let runs = IntCounterVec::new(
            Opts::new(
                "tollgate_reconcile_runs_total",
                "Scheduled reconciliations, by result: ok (every line within the tolerance), \
                 drift (some outside), failed (no report: OpenAI or the ledger could not be read).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(drift.clone()))?;
        registry.register(Box::new(out_of_tolerance.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        // Every series exists from the start, so rules and dashboards find them.
        for kind in KINDS {
            drift.with_label_values(&[kind]).set(f64::NAN);
        }
        for result in RESULTS {
            runs.with_label_values(&[result]);
        }
        Ok(Self {
            drift,
            out_of_tolerance,
            last_success,
            runs,
        })
    }

    /// A run that produced a report.
    pub fn report(&self, usd: f64, tokens: f64, out_of_tolerance: usize, now_ms: i64) {
        self.drift.with_label_values(&["usd"]).set(usd);
        self.drift.with_label_values(&["tokens"]).set(tokens);
        self.out_of_tolerance
            .set(i64::try_from(out_of_tolerance).unwrap_or(i64::MAX));
        #[expect(
            clippy::cast_precision_loss,
            reason = "Unix seconds fit an f64's 53 bits for millions of years"
        )]
        self.last_success.set((now_ms / 1000) as f64);
        let result = if out_of_tolerance == 0 { "ok" } else { "drift" };
        self.runs.with_label_values(&[result]).inc();
    }

    /// A run that could not produce a report; the last figures stay as they were.
    pub fn failed(&self) {
        self.runs.with_label_values(&["failed"]).inc();
    }
}
