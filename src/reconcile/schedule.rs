//! `[reconcile] schedule`: once a day at a UTC time, the last `days` complete days are
//! reconciled by day and model in the background of `serve`, and the result goes to
//! the `tollgate_reconcile_*` metrics and the log. The loop is a task of the shutdown
//! path: it stops when draining starts, a run in progress with it (nothing it holds
//! needs finishing: a report is only read).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Ask, Days, Grouping, ReconcileError, Reconciler, Report};
use crate::clock::now_ms;
use crate::ledger::Store;
use crate::metrics::Metrics;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 1440 * MINUTE_MS;

pub struct Scheduler {
    reconciler: Arc<Reconciler>,
    store: Store,
    metrics: Metrics,
}

impl Scheduler {
    pub fn new(reconciler: Arc<Reconciler>, store: Store, metrics: Metrics) -> Self {
        Self {
            reconciler,
            store,
            metrics,
        }
    }

    /// What a scheduled run does, now: the configured days before today, by day and
    /// model, at the configured tolerance, and the metrics set from the result.
    pub async fn run_once(&self) -> Result<Report, ReconcileError> {
        let now = now_ms();
        let config = self.reconciler.config();
        let ask = Ask {
            days: Days::before(now, config.days),
            by: Grouping::DAY_AND_MODEL,
            tolerance: config.tolerance_percent,
            upstreams: self.reconciler.billed_upstreams(),
        };
        let outcome = self.reconciler.run(&self.store, &ask).await;
        match &outcome {
            Ok(report) => {
                let (usd, tokens) = report.drift();
                let out = report.lines_out_of_tolerance();
                self.metrics.reconcile.report(usd, tokens, out, now);
                let since = Days::label(ask.days.first);
                let until = Days::label(ask.days.last);
                if out == 0 {
                    tracing::info!(%since, %until, usd_drift = usd, token_drift = tokens,
                        "reconciled with OpenAI: every line within the tolerance");
                } else {
                    tracing::warn!(%since, %until, lines_out_of_tolerance = out,
                        usd_drift = usd, token_drift = tokens,
                        "reconciled with OpenAI: lines outside the tolerance (tollgate reconcile \
                         --since {since} --until {until} --by day,model shows them)");
                }
            }
            Err(error) => {
                self.metrics.reconcile.failed();
                tracing::error!(%error, "scheduled reconciliation failed");
            }
        }
        outcome
    }

    /// Runs daily at `minutes` after midnight UTC until `stop` is cancelled.
    pub fn spawn(self: Arc<Self>, minutes: u32, tasks: &TaskTracker, stop: CancellationToken) {
        tasks.spawn(async move {
            loop {
                let wait = until_next(now_ms(), minutes);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = self.run_once() => {}
                }
            }
        });
    }
}

/// From `now_ms` to the next `minutes` after a UTC midnight (a full day when it is
/// exactly now, so one time of day runs once).
pub fn until_next(now_ms: i64, minutes: u32) -> Duration {
    let into_day = now_ms.rem_euclid(DAY_MS);
    let at = i64::from(minutes) * MINUTE_MS;
    let wait = (at - into_day).rem_euclid(DAY_MS);
    let wait = if wait == 0 { DAY_MS } else { wait };
    Duration::from_millis(u64::try_from(wait).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_at_the_time_of_day_utc() {
        let midnight = 20_000 * DAY_MS;
        let hour = 60 * MINUTE_MS;
        let six = 360;
        assert_eq!(until_next(midnight, six), Duration::from_secs(6 * 3600));
        assert_eq!(
            until_next(midnight + 5 * hour + 59 * MINUTE_MS, six),
            Duration::from_secs(60)
        );
        assert_eq!(
            until_next(midnight + 6 * hour, six),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            until_next(midnight + 7 * hour, six),
            Duration::from_secs(23 * 3600)
        );
        assert_eq!(
            until_next(midnight + 1, 0),
            Duration::from_millis(86_399_999)
        );
    }
}
