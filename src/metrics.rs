//! Every metric tollgate exports, defined once, in Prometheus' text format at
//! `/metrics`. Names follow Prometheus conventions: `tollgate_` prefix, `_total` for
//! counters.

use prometheus::{CounterVec, Encoder, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests whose model no catalog prices, by model: what to add to the catalog.
    pub unpriced_requests: IntCounterVec,
    /// Budget thresholds crossed, by scope (key, team) and level (soft, exhausted).
    pub budget_alerts: IntCounterVec,
    /// Budget checks that could not reach the store, by what the policy did
    /// (admitted, refused).
    pub budget_check_errors: IntCounterVec,
    /// Requests refused by a rate limit, by kind (rpm, tpm, rpd, tpd, concurrency).
    pub rate_limited_requests: IntCounterVec,
    /// Rate-limit checks the shared backend (Redis) could not answer, by what the
    /// policy did (local: checked by this replica alone; refused: 503).
    pub rate_limit_backend_errors: IntCounterVec,
    /// Batch output lines read, by result (billed, failed, malformed), and input lines
    /// admission skipped (input_malformed).
    pub batch_lines: IntCounterVec,
    /// USD billed by batch and fine-tuning jobs, by kind (batch, training). Display
    /// only: a float; the ledger holds the exact figures.
    pub job_spend: CounterVec,
    /// Batches and jobs the upstream lost (404 poll after poll), by object.
    pub batch_lost: IntCounterVec,
    /// Failed polls of tracked batches and jobs, by reason.
    pub batch_poll_errors: IntCounterVec,
    /// Batch creates refused at admission, by reason (budget, enqueued_tokens).
    pub batch_admissions_refused: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let unpriced_requests = IntCounterVec::new(
            Opts::new(
                "tollgate_unpriced_requests_total",
                "Requests recorded with an unknown cost because no catalog prices their model.",
            ),
            &["model"],
        )?;
        registry.register(Box::new(unpriced_requests.clone()))?;
        let budget_alerts = IntCounterVec::new(
            Opts::new(
                "tollgate_budget_alerts_total",
                "Budget thresholds crossed (once per budget and period).",
            ),
            &["scope", "level"],
        )?;
        registry.register(Box::new(budget_alerts.clone()))?;
        let budget_check_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_budget_check_errors_total",
                "Budget checks that could not reach the database, by what was done.",
            ),
            &["action"],
        )?;
        registry.register(Box::new(budget_check_errors.clone()))?;
        let rate_limited_requests = IntCounterVec::new(
            Opts::new(
                "tollgate_rate_limited_requests_total",
                "Requests refused by a rate limit, by the limit that refused them.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(rate_limited_requests.clone()))?;
        let rate_limit_backend_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_rate_limit_backend_errors_total",
                "Rate-limit checks the shared backend could not answer, by what was done.",
            ),
            &["action"],
        )?;
        registry.register(Box::new(rate_limit_backend_errors.clone()))?;
        let batch_lines = IntCounterVec::new(
            Opts::new(
                "tollgate_batch_lines_total",
                "Batch lines, by result: output billed, failed (not billed) or malformed (skipped); input_malformed (skipped by admission).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(batch_lines.clone()))?;
        let job_spend = CounterVec::new(
            Opts::new(
                "tollgate_job_spend_usd_total",
                "USD billed by batch and fine-tuning jobs, by kind (display only; the ledger is exact).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(job_spend.clone()))?;
        let batch_lost = IntCounterVec::new(
            Opts::new(
                "tollgate_batch_lost_total",
                "Tracked batches and fine-tuning jobs the upstream lost, by object.",
            ),
            &["object"],
        )?;
        registry.register(Box::new(batch_lost.clone()))?;
        let batch_poll_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_batch_poll_errors_total",
                "Failed polls of tracked batches and fine-tuning jobs, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(batch_poll_errors.clone()))?;
        let batch_admissions_refused = IntCounterVec::new(
            Opts::new(
                "tollgate_batch_admissions_refused_total",
                "Batch creates refused at admission, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(batch_admissions_refused.clone()))?;
        Ok(Self {
            registry,
            unpriced_requests,
            budget_alerts,
            budget_check_errors,
            rate_limited_requests,
            rate_limit_backend_errors,
            batch_lines,
            job_spend,
            batch_lost,
            batch_poll_errors,
            batch_admissions_refused,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        let metrics = Metrics::new().unwrap();
        metrics
            .unpriced_requests
            .with_label_values(&["mystery"])
            .inc();
        let text = metrics.render().unwrap();
        assert!(
            text.contains("# TYPE tollgate_unpriced_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_unpriced_requests_total{model=\"mystery\"} 1"),
            "{text}"
        );
    }
}
