//! Rate limits per key and model, as OpenAI's usage tiers: RPM, TPM, RPD and TPD, plus
//! an optional cap on requests in flight per key. TPM and TPD are charged before
//! forwarding with an estimate (the prompt counted with the tokenizer plus the output
//! cap) and reconciled with the real usage afterwards: tokens beyond the estimate are
//! charged (possibly into debt that later requests wait out); an unused estimate is not
//! refunded, so a request costs at least what it asked for, as at OpenAI.
//!
//! The buckets live in this process (`local`) or, shared by every replica, in Redis
//! (`redis`); the in-flight cap is always per process.

mod headers;
pub mod local;
pub mod redis;
mod tiers;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::Identity;
use crate::config::{LimitsConfig, RateFigures, StoreFailure};
use crate::error::ApiError;
use crate::metering::Endpoint;
use crate::metrics::Metrics;
use redis::{RedisBuckets, Spec};

pub use headers::{Line, Standing, go_duration};
pub use local::{Bucket, Buckets, Denied, LimitClock};
pub use tiers::Tiers;

/// The span a limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Minute,
    Day,
}

impl Window {
    pub fn length(self) -> Duration {
        match self {
            Self::Minute => Duration::from_secs(60),
            Self::Day => Duration::from_secs(86_400),
        }
    }
}

/// Which limit refused a request; also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rpm,
    Tpm,
    Rpd,
    Tpd,
    Concurrency,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Rpd => "rpd",
            Self::Tpd => "tpd",
            Self::Concurrency => "concurrency",
        }
    }

    /// The error `type` OpenAI gives: the kind of bucket exhausted.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::Tpm | Self::Tpd => "tokens",
            Self::Rpm | Self::Rpd | Self::Concurrency => "requests",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Rpm => "requests per min (RPM)",
            Self::Tpm => "tokens per min (TPM)",
            Self::Rpd => "requests per day (RPD)",
            Self::Tpd => "tokens per day (TPD)",
            Self::Concurrency => "requests in flight",
        }
    }
}

/// A request refused by a rate limit.
#[derive(Debug, Clone)]
pub struct RateLimited {
    pub kind: Kind,
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
        let (kind, model, limit) = (self.kind.description(), &self.model, self.limit);
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

/// Admission against every limit of a key: resolves its figures, charges its buckets.
pub struct Limiter {
    enabled: bool,
    tiers: Tiers,
    buckets: Buckets,
    default_max_tokens: u64,
    max_in_flight: Option<u32>,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    metrics: Metrics,
    /// The shared backend, when `limits.backend = "redis"`.
    shared: Option<Arc<RedisBuckets>>,
    on_shared_error: StoreFailure,
}

impl Limiter {
    pub fn new(config: &LimitsConfig, clock: LimitClock, metrics: Metrics) -> Self {
        Self {
            enabled: config.enabled,
            tiers: Tiers::new(config),
            buckets: Buckets::new(clock),
            default_max_tokens: config.default_max_tokens,
            max_in_flight: config.max_in_flight_per_key,
            in_flight: Arc::default(),
            metrics,
            shared: None,
            on_shared_error: config.on_redis_error,
        }
    }

    /// Keeps the buckets in `shared` instead; the local ones serve only when it fails
    /// and the policy is `fail_open`.
    pub fn shared(mut self, shared: RedisBuckets) -> Self {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// Whether the shared backend answers, and whether requests are refused while it
    /// does not (`fail_closed`); `None` without a shared backend.
    pub async fn shared_health(&self) -> Option<(bool, bool)> {
        let shared = self.shared.as_ref()?;
        let refuses = self.on_shared_error == StoreFailure::FailClosed;
        Some((shared.ping().await, refuses))
    }

    /// The figures that apply to `identity` on `model`; `None` when limits are off.
    pub fn figures(&self, identity: &Identity, model: Option<&str>) -> Option<RateFigures> {
        self.enabled
            .then(|| self.tiers.figures(identity, model.unwrap_or_default()))
    }

    /// Whether admission needs the prompt's token count.
    pub fn needs_tokens(figures: Option<&RateFigures>) -> bool {
        figures.is_some_and(|f| f.tpm.is_some() || f.tpd.is_some())
    }

    /// The tokens charged up front: the prompt plus the output the request may produce.
    pub fn estimate(&self, endpoint: Endpoint, prompt: u64, max_output: Option<u64>) -> u64 {
        let output = match endpoint {
            Endpoint::Embeddings => 0,
            _ => max_output.unwrap_or(self.default_max_tokens),
        };
        prompt.saturating_add(output)
    }

    /// Takes one request and `tokens` from every limit of `identity` on `model`, or
    /// refuses (taking nothing): in the shared backend when there is one, applying
    /// `limits.on_redis_error` when it cannot answer.
    pub async fn admit(
        &self,
        identity: &Identity,
        model: Option<&str>,
        figures: RateFigures,
        tokens: u64,
    ) -> Result<Admission, ApiError> {
        let Some(shared) = &self.shared else {
            return self
                .admit_local(identity, model, figures, tokens)
                .map_err(ApiError::RateLimited);
        };
        let model = model.unwrap_or_default();
        let permit = self
            .permit(&identity.key_id, model, Standing::default())
            .map_err(ApiError::RateLimited)?;
        let specs = Spec::all(&identity.key_id, model, figures);
        match shared.charge(&specs, tokens).await {
            Ok(verdict) => {
                let standing = Standing::of_lines(&specs, &verdict.lines);
                if let Some((index, retry_after, used)) = verdict.refused {
                    let spec = &specs[index.min(specs.len().saturating_sub(1))];
                    let requested = spec.units(tokens);
                    return Err(ApiError::RateLimited(self.refusal(
                        spec.kind,
                        model,
                        spec.limit,
                        used,
                        requested,
                        retry_after,
                        standing,
                    )));
                }
                Ok(Admission {
                    standing,
                    charge: Charge::Shared(shared.clone(), specs),
                    tokens,
                    _permit: permit,
                })
            }
            Err(_error) => {
                // The outage is logged once by the backend; every request is counted.
                let errors = &self.metrics.rate_limit_backend_errors;
                match self.on_shared_error {
                    StoreFailure::FailOpen => {
                        errors.with_label_values(&["local"]).inc();
                        self.charge_local(identity, model, figures, tokens, permit)
                            .map_err(ApiError::RateLimited)
                    }
                    StoreFailure::FailClosed => {
                        errors.with_label_values(&["refused"]).inc();
                        Err(ApiError::RateLimitsUnavailable)
                    }
                }
            }
        }
    }

    /// `admit` on this process's buckets alone.
    pub fn admit_local(
        &self,
        identity: &Identity,
        model: Option<&str>,
        figures: RateFigures,
        tokens: u64,
    ) -> Result<Admission, Box<RateLimited>> {
        let model = model.unwrap_or_default();
        let buckets = self.buckets.get(&identity.key_id, model, figures);
        let permit = self.permit(&identity.key_id, model, Standing::of(&buckets))?;
        self.charge_local(identity, model, figures, tokens, permit)
    }

    /// A place among the key's requests in flight, if they are capped.
    fn permit(
        &self,
        key_id: &str,
        model: &str,
        standing: Standing,
    ) -> Result<Option<Permit>, Box<RateLimited>> {
        let Some(max) = self.max_in_flight else {
            return Ok(None);
        };
        let permit = Permit::take(&self.in_flight, key_id, max).ok_or_else(|| {
            let max = u64::from(max);
            let wait = Some(Duration::from_secs(1));
            self.refusal(Kind::Concurrency, model, max, max, 1, wait, standing)
        })?;
        Ok(Some(permit))
    }

    fn charge_local(
        &self,
        identity: &Identity,
        model: &str,
        figures: RateFigures,
        tokens: u64,
        permit: Option<Permit>,
    ) -> Result<Admission, Box<RateLimited>> {
        let buckets = self.buckets.get(&identity.key_id, model, figures);
        let charges = [
            (Kind::Rpm, &buckets.rpm, 1),
            (Kind::Rpd, &buckets.rpd, 1),
            (Kind::Tpm, &buckets.tpm, tokens),
            (Kind::Tpd, &buckets.tpd, tokens),
        ];
        for (i, (kind, bucket, n)) in charges.iter().enumerate() {
            let Some(bucket) = bucket else { continue };
            if let Err(denied) = bucket.charge(*n) {
                let used = bucket.used();
                for (_, taken, n) in &charges[..i] {
                    if let Some(taken) = taken {
                        taken.refund(*n);
                    }
                }
                let retry_after = match denied {
                    Denied::Wait(wait) => Some(wait),
                    Denied::TooLarge => None,
                };
                let standing = Standing::of(&buckets);
                let (limit, requested) = (bucket.limit(), *n);
                return Err(self.refusal(
                    *kind,
                    model,
                    limit,
                    used,
                    requested,
                    retry_after,
                    standing,
                ));
            }
        }
        Ok(Admission {
            standing: Standing::of(&buckets),
            charge: Charge::Local(buckets),
            tokens,
            _permit: permit,
        })
    }

    /// A refusal (counted by the proxy, which knows the caller's team).
    #[expect(clippy::too_many_arguments, reason = "the fields of the refusal")]
    fn refusal(
        &self,
        kind: Kind,
        model: &str,
        limit: u64,
        used: u64,
        requested: u64,
        retry_after: Option<Duration>,
        standing: Standing,
    ) -> Box<RateLimited> {
        Box::new(RateLimited {
            kind,
            model: model.to_owned(),
            limit,
            used,
            requested,
            retry_after,
            standing,
        })
    }
}

/// A request let through: what it was charged, settled when its usage is known.
pub struct Admission {
    pub standing: Standing,
    charge: Charge,
    tokens: u64,
    /// Holds the request's place among the key's requests in flight until dropped.
    _permit: Option<Permit>,
}

/// Where an admission's charge was taken.
enum Charge {
    Local(Arc<local::ModelBuckets>),
    Shared(Arc<RedisBuckets>, Vec<Spec>),
}

impl Admission {
    /// Charges the tokens used beyond the estimate (the unused rest is not refunded).
    pub fn settle(self, used: u64) {
        let extra = used.saturating_sub(self.tokens);
        if extra == 0 {
            return;
        }
        match self.charge {
            Charge::Local(buckets) => {
                for bucket in [&buckets.tpm, &buckets.tpd].into_iter().flatten() {
                    bucket.force(extra);
                }
            }
            Charge::Shared(shared, mut specs) => {
                specs.retain(|spec| matches!(spec.kind, Kind::Tpm | Kind::Tpd));
                shared.force(specs, extra);
            }
        }
    }

    /// Gives everything back: the request was refused after admission (by its budget).
    pub fn cancel(self) {
        let buckets = match self.charge {
            Charge::Local(buckets) => buckets,
            Charge::Shared(shared, specs) => return shared.refund(specs, self.tokens),
        };
        for (bucket, n) in [
            (&buckets.rpm, 1),
            (&buckets.rpd, 1),
            (&buckets.tpm, self.tokens),
            (&buckets.tpd, self.tokens),
        ] {
            if let Some(bucket) = bucket {
                bucket.refund(n);
            }
        }
    }
}

/// One request in flight for a key; released on drop, however the request ended.
struct Permit {
    counts: Arc<Mutex<HashMap<String, u32>>>,
    key: String,
}

impl Permit {
    fn take(counts: &Arc<Mutex<HashMap<String, u32>>>, key: &str, max: u32) -> Option<Self> {
        let mut map = counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = map.entry(key.to_owned()).or_default();
        if *count >= max {
            if *count == 0 {
                map.remove(key);
            }
            return None;
        }
        *count += 1;
        Some(Self {
            counts: counts.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = map.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
