//! Rate limits per key and model, as OpenAI's usage tiers: RPM, TPM, RPD and TPD,
//! optionally also across all models of a key and of a team, plus an optional cap on
//! requests in flight per key. TPM and TPD are charged before
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
mod refusal;
mod tiers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::Identity;
use crate::config::{LimitsConfig, RateFigures, StoreFailure};
use crate::metering::Endpoint;
use crate::metrics::Metrics;
use redis::{RedisBuckets, Spec};

pub use headers::{Line, Standing, go_duration};
pub use local::{Bucket, Buckets, Denied, LimitClock};
pub use refusal::{LimitsError, RateLimited};
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

/// Every limit on one request: its key's figures on the model, and the optional totals
/// across all models of its key and of its team. An empty set enforces nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub model: RateFigures,
    pub key_total: RateFigures,
    pub team_total: RateFigures,
}

impl Limits {
    /// The scopes that set any figure, with the id their buckets are kept under.
    fn scopes<'a>(
        &self,
        identity: &'a Identity,
    ) -> impl Iterator<Item = (Scope, &'a str, RateFigures)> {
        let team = identity.team_id.as_deref();
        [
            (Scope::Model, Some(identity.key_id.as_str()), self.model),
            (Scope::Key, Some(identity.key_id.as_str()), self.key_total),
            (Scope::Team, team, self.team_total),
        ]
        .into_iter()
        .filter_map(|(scope, id, figures)| Some((scope, id?, figures)))
        .filter(|(_, _, figures)| !figures.is_empty())
    }

    fn counts_tokens(&self) -> bool {
        [self.model, self.key_total, self.team_total]
            .iter()
            .any(|f| f.tpm.is_some() || f.tpd.is_some())
    }
}

/// Whose buckets a limit counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The key's, on the one model (OpenAI's own scope).
    Model,
    /// The key's, across all its models.
    Key,
    /// The team's, across all its keys and models.
    Team,
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

/// Admission against every limit of a key: resolves its figures, charges its buckets.
pub struct Limiter {
    enabled: bool,
    tiers: Tiers,
    /// Per key and model.
    buckets: Buckets,
    /// Per key, across its models (kept under model "").
    key_totals: Buckets,
    /// Per team, across its keys and models (kept under model "").
    team_totals: Buckets,
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
            buckets: Buckets::new(clock.clone()),
            key_totals: Buckets::new(clock.clone()),
            team_totals: Buckets::new(clock),
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

    /// The limits that apply to `identity` on `model`; `None` when limits are off.
    pub fn figures(&self, identity: &Identity, model: Option<&str>) -> Option<Limits> {
        self.enabled
            .then(|| self.tiers.limits(identity, model.unwrap_or_default()))
    }

    /// Whether admission needs the prompt's token count.
    pub fn needs_tokens(limits: Option<&Limits>) -> bool {
        limits.is_some_and(Limits::counts_tokens)
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
        limits: Limits,
        tokens: u64,
    ) -> Result<Admission, LimitsError> {
        let Some(shared) = &self.shared else {
            return self
                .admit_local(identity, model, limits, tokens)
                .map_err(LimitsError::RateLimited);
        };
        let model = model.unwrap_or_default();
        let permit = self
            .permit(identity, model, Standing::default)
            .map_err(LimitsError::RateLimited)?;
        let specs = Spec::all(identity, model, limits);
        // Boxed: the Redis round trip's state would otherwise sit inline in every
        // request handler's future, local limits or not.
        match Box::pin(shared.charge(&specs, tokens)).await {
            Ok(verdict) => {
                let standing = Standing::of_lines(&specs, &verdict.lines);
                if let Some((index, retry_after, used)) = verdict.refused {
                    let spec = &specs[index.min(specs.len().saturating_sub(1))];
                    let requested = spec.units(tokens);
                    return Err(LimitsError::RateLimited(self.refusal(
                        (spec.kind, spec.scope),
                        identity,
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
                        let sets = self.local_sets(identity, model, limits);
                        self.charge(identity, model, sets, tokens, permit)
                            .map_err(LimitsError::RateLimited)
                    }
                    StoreFailure::FailClosed => {
                        errors.with_label_values(&["refused"]).inc();
                        Err(LimitsError::Unavailable)
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
        limits: Limits,
        tokens: u64,
    ) -> Result<Admission, Box<RateLimited>> {
        let model = model.unwrap_or_default();
        let sets = self.local_sets(identity, model, limits);
        let permit = self.permit(identity, model, || Standing::of(&sets))?;
        self.charge(identity, model, sets, tokens, permit)
    }

    /// A place among the key's requests in flight, if they are capped.
    fn permit(
        &self,
        identity: &Identity,
        model: &str,
        standing: impl FnOnce() -> Standing,
    ) -> Result<Option<Permit>, Box<RateLimited>> {
        let Some(max) = self.max_in_flight else {
            return Ok(None);
        };
        let permit = Permit::take(&self.in_flight, &identity.key_id, max).ok_or_else(|| {
            let max = u64::from(max);
            let wait = Some(Duration::from_secs(1));
            let kind = (Kind::Concurrency, Scope::Key);
            self.refusal(kind, identity, model, max, max, 1, wait, standing())
        })?;
        Ok(Some(permit))
    }

    /// The local bucket sets of every scope that sets a figure, narrowest first.
    fn local_sets(&self, identity: &Identity, model: &str, limits: Limits) -> Sets {
        limits
            .scopes(identity)
            .map(|(scope, id, figures)| {
                let set = match scope {
                    Scope::Model => self.buckets.get(id, model, figures),
                    Scope::Key => self.key_totals.get(id, "", figures),
                    Scope::Team => self.team_totals.get(id, "", figures),
                };
                (scope, set)
            })
            .collect()
    }

    /// Charges every bucket of `sets`, or none.
    fn charge(
        &self,
        identity: &Identity,
        model: &str,
        sets: Sets,
        tokens: u64,
        permit: Option<Permit>,
    ) -> Result<Admission, Box<RateLimited>> {
        let charges = || {
            sets.iter().flat_map(move |(scope, set)| {
                [
                    (Kind::Rpm, &set.rpm, 1),
                    (Kind::Rpd, &set.rpd, 1),
                    (Kind::Tpm, &set.tpm, tokens),
                    (Kind::Tpd, &set.tpd, tokens),
                ]
                .into_iter()
                .filter_map(move |(kind, bucket, n)| Some((*scope, kind, bucket.as_ref()?, n)))
            })
        };
        for (i, (scope, kind, bucket, n)) in charges().enumerate() {
            let Err(denied) = bucket.charge(n) else {
                continue;
            };
            let used = bucket.used();
            for (_, _, taken, n) in charges().take(i) {
                taken.refund(n);
            }
            let retry_after = match denied {
                Denied::Wait(wait) => Some(wait),
                Denied::TooLarge => None,
            };
            let standing = Standing::of(&sets);
            return Err(self.refusal(
                (kind, scope),
                identity,
                model,
                bucket.limit(),
                used,
                n,
                retry_after,
                standing,
            ));
        }
        Ok(Admission {
            standing: Standing::of(&sets),
            charge: Charge::Local(sets),
            tokens,
            _permit: permit,
        })
    }

    /// A refusal (counted by the proxy, which knows the caller's team).
    #[expect(clippy::too_many_arguments, reason = "the fields of the refusal")]
    fn refusal(
        &self,
        (kind, scope): (Kind, Scope),
        identity: &Identity,
        model: &str,
        limit: u64,
        used: u64,
        requested: u64,
        retry_after: Option<Duration>,
        standing: Standing,
    ) -> Box<RateLimited> {
        let holder = match scope {
            Scope::Model => String::new(),
            Scope::Key => identity.display.clone(),
            Scope::Team => identity
                .key
                .as_ref()
                .map(|entry| entry.team.name.clone())
                .or_else(|| identity.team_id.clone())
                .unwrap_or_default(),
        };
        Box::new(RateLimited {
            kind,
            scope,
            holder,
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

/// A request's local bucket sets, one per scope that sets a figure.
type Sets = Vec<(Scope, Arc<local::ModelBuckets>)>;

/// Where an admission's charge was taken.
enum Charge {
    Local(Sets),
    Shared(Arc<RedisBuckets>, Vec<Spec>),
}

impl Admission {
    /// Charges the tokens used beyond the estimate (the unused rest is not refunded).
    pub fn settle(self, used: u64) {
        let total = used.max(self.tokens);
        self.settle_to(total);
    }

    /// Settles the token charge to `total`: charges what the estimate fell short of
    /// (possibly into debt), gives back what it took beyond. Requests are untouched.
    pub fn settle_to(self, total: u64) {
        let (more, back) = (
            total.saturating_sub(self.tokens),
            self.tokens.saturating_sub(total),
        );
        if more == 0 && back == 0 {
            return;
        }
        match self.charge {
            Charge::Local(sets) => {
                for (_, set) in &sets {
                    for bucket in [&set.tpm, &set.tpd].into_iter().flatten() {
                        if more > 0 {
                            bucket.force(more);
                        } else {
                            bucket.refund(back);
                        }
                    }
                }
            }
            Charge::Shared(shared, mut specs) => {
                specs.retain(|spec| matches!(spec.kind, Kind::Tpm | Kind::Tpd));
                if more > 0 {
                    shared.force(specs, more);
                } else {
                    shared.refund(specs, back);
                }
            }
        }
    }

    /// Gives everything back: the request was refused after admission (by its budget).
    pub fn cancel(self) {
        let sets = match self.charge {
            Charge::Local(sets) => sets,
            Charge::Shared(shared, specs) => return shared.refund(specs, self.tokens),
        };
        for (_, set) in &sets {
            for (bucket, n) in [
                (&set.rpm, 1),
                (&set.rpd, 1),
                (&set.tpm, self.tokens),
                (&set.tpd, self.tokens),
            ] {
                if let Some(bucket) = bucket {
                    bucket.refund(n);
                }
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
