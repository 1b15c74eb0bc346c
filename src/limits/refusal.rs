//! A rate limit's refusal: what it says, and how it becomes the 429 `ApiError`.

use std::fmt;
use std::time::Duration;

use super::{Kind, Scope, Standing, go_duration};
use crate::error::{ApiError, RateRefusal};

/// A request refused by a rate limit.
#[derive(Debug, Clone)]
pub struct RateLimited {
    pub kind: Kind,
    pub scope: Scope,
    /// The key's display prefix or the team's name, for the message; empty for
    /// `Scope::Model`.
    pub holder: String,
    pub model: String,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
    /// When a retry can succeed; `None` when none can (a limit of 0, or a request larger
    /// than the whole limit).
    pub retry_after: Option<Duration>,
    /// The key's per-minute standing on the model, for the `x-ratelimit-*` headers.
    pub standing: Standing,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, limit) = (self.kind.description(), self.limit);
        // OpenAI names the organisation whose limit it is ("gpt-4o in organization
        // org-…"); a total names the team or key it counts across.
        let model = match self.scope {
            Scope::Model => self.model.clone(),
            Scope::Key => format!("{} on key {} (all models)", self.model, self.holder),
            Scope::Team => format!("{} in team {} (all models)", self.model, self.holder),
        };
        let model = &model;
        match (self.kind, self.retry_after) {
            (Kind::Concurrency, _) => write!(
                f,
                "Too many requests in flight for this key: the limit is {limit} at once. \
                 Please try again when one of them has finished."
            ),
            (_, None) if limit == 0 => write!(
                f,
                "Rate limit reached for {model} on {kind}: Limit 0, Used 0, Requested {}. \
                 This key may not use {model}: ask your gateway's administrator.",
                self.requested
            ),
            (_, None) => write!(
                f,
                "Request too large for {model} on {kind}: Limit {limit}, Requested {}. \
                 The input or output tokens must be reduced in order to run successfully.",
                self.requested
            ),
            (_, Some(wait)) => write!(
                f,
                "Rate limit reached for {model} on {kind}: Limit {limit}, Used {}, \
                 Requested {}. Please try again in {}.",
                self.used,
                self.requested,
                go_duration(wait)
            ),
        }
    }
}

/// Why `admit` refused: a limit, or a shared store that cannot answer under
/// `on_redis_error = "fail_closed"`.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("{0}")]
    RateLimited(Box<RateLimited>),
    #[error("the shared rate-limit store is unreachable")]
    Unavailable,
}

impl From<LimitsError> for ApiError {
    fn from(error: LimitsError) -> Self {
        match error {
            LimitsError::RateLimited(limited) => ApiError::RateLimited(Box::new(limited.answer())),
            LimitsError::Unavailable => ApiError::RateLimitsUnavailable,
        }
    }
}

impl RateLimited {
    /// The refusal as the 429 carries it: message, `type`, and the headers the SDKs read.
    fn answer(&self) -> RateRefusal {
        let mut standing = axum::http::HeaderMap::new();
        self.standing.apply(&mut standing);
        RateRefusal {
            message: self.to_string(),
            error_type: self.kind.error_type(),
            limit: self.kind.label(),
            standing,
            retry_after: self.retry_after,
        }
    }
}
