//! The label handles of one series: made on first use, then shared by every request to it.

use std::sync::{Arc, OnceLock};

use prometheus::{Histogram, IntCounter};

use super::cost::CostCell;
use super::{Metrics, STATUS_CLASSES, TOKEN_TYPES};
use crate::pricing::tier;

/// The label handles of one caller, model and endpoint, made as first used.
pub(super) struct Series {
    pub(super) team: String,
    pub(super) key: String,
    pub(super) model: String,
    pub(super) endpoint: &'static str,
    /// Labels spend (tokens, cost) only: the request count stays one series per
    /// caller, model and endpoint, whichever provider answered.
    pub(super) provider: &'static str,
    pub(super) requests: [OnceLock<IntCounter>; 5],
    pub(super) tokens: OnceLock<[IntCounter; 4]>,
    /// One cell per `service_tier` label, in the order of `tier::LABELS`.
    pub(super) cost: [OnceLock<Arc<CostCell>>; tier::LABELS.len()],
    pub(super) timings: OnceLock<Timings>,
}

pub(super) struct Timings {
    pub(super) duration: Histogram,
    pub(super) ttfb: Histogram,
    pub(super) overhead: Histogram,
}

// === impl Series ===

impl Series {
    /// Team, key (when labelled) and model, then `extra`.
    pub(super) fn values<'a>(&'a self, metrics: &Metrics, extra: &[&'a str]) -> Vec<&'a str> {
        let mut values = vec![self.team.as_str()];
        if metrics.per_key {
            values.push(&self.key);
        }
        values.push(&self.model);
        values.extend_from_slice(extra);
        values
    }

    pub(super) fn request(&self, metrics: &Metrics, status: u16) -> &IntCounter {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].get_or_init(|| {
            let values = self.values(metrics, &[self.endpoint, STATUS_CLASSES[class]]);
            metrics.requests.with_label_values(&values)
        })
    }

    pub(super) fn tokens(&self, metrics: &Metrics) -> &[IntCounter; 4] {
        self.tokens.get_or_init(|| {
            TOKEN_TYPES.map(|kind| {
                let values = self.values(metrics, &[self.provider, kind]);
                metrics.tokens.with_label_values(&values)
            })
        })
    }

    pub(super) fn cost(&self, metrics: &Metrics, service_tier: &'static str) -> &CostCell {
        // A label outside the list cannot come from `tier::label`; it would be `other`.
        let at = tier::LABELS
            .iter()
            .position(|label| *label == service_tier)
            .unwrap_or(tier::LABELS.len() - 1);
        self.cost[at].get_or_init(|| {
            metrics
                .cost
                .cell(&self.values(metrics, &[self.provider, tier::LABELS[at]]))
        })
    }

    pub(super) fn timings(&self, metrics: &Metrics) -> &Timings {
        self.timings.get_or_init(|| {
            let by_model = [self.endpoint, self.model.as_str()];
            Timings {
                duration: metrics.request_duration.with_label_values(&by_model),
                ttfb: metrics.upstream_ttfb.with_label_values(&by_model),
                overhead: metrics.overhead.with_label_values(&[self.endpoint]),
            }
        })
    }
}
