//! Routing's metrics, registered in the one registry `/metrics` renders. Labels are
//! bounded: upstreams and aliases come from the config, models are configured targets
//! (or, for headroom, the models an upstream reported limits for, capped in number),
//! teams are the database's teams.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::metrics::Metrics;

/// From a request's first wait for headroom to its admission or refusal.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone)]
pub struct RoutingMetrics {
    /// Upstream calls of routed requests, by upstream, model and result: `answered`
    /// (its answer went to the client), `fell_back` (a retryable failure, the next
    /// target was tried), `failed` (a failure the client got).
    pub attempts: IntCounterVec,
    /// Fallbacks, by alias and why: `status_429`, `status_5xx`, `timeout`, `connect`,
    /// `error`.
    pub fallbacks: IntCounterVec,
    /// Targets passed over, by upstream, model and reason: `cooling_down` (it asked to
    /// be left alone) or `headroom` (no room under the reserve for this team).
    pub skipped: IntCounterVec,
    /// Times an upstream asked (with `retry-after`) to be left alone, by upstream.
    pub cooldowns: IntCounterVec,
    /// Requests served by a cheaper model past a budget threshold, by team, from, to.
    pub downgrades: IntCounterVec,
    /// Remaining requests or tokens of the organisation's limit, as last reported.
    pub headroom: GaugeVec,
    /// Requests that waited for headroom (over their team's share), by upstream, team.
    pub queued: IntCounterVec,
    pub queue_wait: HistogramVec,
    /// Requests refused (429) after waiting out `queue_timeout`, by upstream, team.
    pub refused: IntCounterVec,
    /// Requests admitted while under the reserve, by upstream, team: each team's share.
    pub rationed: IntCounterVec,
    /// Shadow requests, by model, candidate and result: `answered`, `failed`,
    /// `skipped_busy` (too many in flight), `skipped_headroom` (under the reserve).
    pub shadow: IntCounterVec,
    /// Syncs with Redis that failed.
    pub sync_errors: IntCounterVec,
}

impl std::fmt::Debug for RoutingMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoutingMetrics")
    }
}

fn counter(
    metrics: &Metrics,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    metrics.register(Box::new(vec.clone()))?;
    Ok(vec)
}

impl RoutingMetrics {
    pub fn new(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let headroom = GaugeVec::new(
            Opts::new(
                "tollgate_upstream_headroom",
                "Remaining requests or tokens of an upstream's organisation-wide limit on a \
                 model, as its last answer reported (or another replica's, via Redis).",
            ),
            &["upstream", "model", "kind"],
        )?;
        metrics.register(Box::new(headroom.clone()))?;
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_headroom_queue_wait_seconds",
                "How long requests over their team's share waited for headroom.",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        metrics.register(Box::new(queue_wait.clone()))?;
        Ok(Self {
            attempts: counter(
                metrics,
                "tollgate_route_attempts_total",
                "Upstream calls of routed requests, by result.",
                &["upstream", "model", "result"],
            )?,
            fallbacks: counter(
                metrics,
                "tollgate_route_fallbacks_total",
                "Routed requests that moved on to their next target, by reason.",
                &["alias", "reason"],
            )?,
            skipped: counter(
                metrics,
                "tollgate_route_skipped_total",
                "Targets passed over, by reason (cooling_down, headroom).",
                &["upstream", "model", "reason"],
            )?,
            cooldowns: counter(
                metrics,
                "tollgate_route_cooldowns_total",
                "Times an upstream's retry-after set a target aside.",
                &["upstream"],
            )?,
            downgrades: counter(
                metrics,
                "tollgate_route_downgrades_total",
                "Requests served by a cheaper model past a budget threshold.",
                &["team", "from", "to"],
            )?,
            headroom,
            queued: counter(
                metrics,
                "tollgate_headroom_queued_total",
                "Requests over their team's share of an upstream's headroom that waited.",
                &["upstream", "team"],
            )?,
            queue_wait,
            refused: counter(
                metrics,
                "tollgate_headroom_refused_total",
                "Requests refused by their team's share of an upstream's headroom.",
                &["upstream", "team"],
            )?,
            rationed: counter(
                metrics,
                "tollgate_headroom_rationed_total",
                "Requests admitted while an upstream's headroom was under its reserve.",
                &["upstream", "team"],
            )?,
            shadow: counter(
                metrics,
                "tollgate_shadow_requests_total",
                "Shadow requests to candidate models, by result.",
                &["model", "candidate", "result"],
            )?,
            sync_errors: counter(
                metrics,
                "tollgate_route_sync_errors_total",
                "Failed syncs of routing state (cooldowns, headroom) with Redis.",
                &["state"],
            )?,
        })
    }
}
