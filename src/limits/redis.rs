//! Shared buckets in Redis: every replica pointed at one server enforces one limit.
//! A request's buckets (RPM, RPD, TPM, TPD of its key and model) are checked and
//! charged by one atomic Lua script (`gcra.lua`) in one round trip, with the same
//! arithmetic as the local buckets, so decisions and `x-ratelimit-*` figures match.
//! Redis's own `TIME` is the clock, so replicas with skewed clocks agree.
//!
//! Every call is bounded by a short timeout; after a failure Redis is left alone for a
//! moment ([`BACKOFF`]) and the limiter applies its failure policy at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};
use tokio_util::task::TaskTracker;

use super::headers::Line;
use super::{Kind, Limits, Scope, Window};
use crate::auth::Identity;

/// Every key starts with this; `v1` is the script's state format.
pub const KEY_PREFIX: &str = "tollgate:rl:v1:";

/// How long Redis is skipped after a failed call.
pub const BACKOFF: Duration = Duration::from_secs(1);

/// Why Redis gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis failed less than {BACKOFF:?} ago; not retried yet")]
    BackingOff,
    #[error("redis answered with {0} figures, not the expected shape")]
    Malformed(usize),
}

/// One bucket of a request, as the script is given it.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub scope: Scope,
    pub limit: u64,
    window: Window,
    key: String,
}

impl Spec {
    /// The buckets `limits` set for `identity` on `model`, in the local check order.
    pub fn all(identity: &Identity, model: &str, limits: Limits) -> Vec<Spec> {
        // The hash tag keeps a request's buckets in one cluster slot, as one script
        // needs: the team's id when there is a team (its total is shared by its keys),
        // else the key's.
        let tag = identity.team_id.as_deref().unwrap_or(&identity.key_id);
        let key_id = &identity.key_id;
        let mut specs = Vec::new();
        for (scope, id, figures) in limits.scopes(identity) {
            // Each scope's keys start with a letter of their own, so none can collide
            // with another's whatever the ids and model names hold.
            let holder = match scope {
                Scope::Model => format!("m:{key_id}:{model}"),
                Scope::Key => format!("k:{id}"),
                Scope::Team => format!("t:{id}"),
            };
            for (kind, limit, window) in [
                (Kind::Rpm, figures.rpm, Window::Minute),
                (Kind::Rpd, figures.rpd, Window::Day),
                (Kind::Tpm, figures.tpm, Window::Minute),
                (Kind::Tpd, figures.tpd, Window::Day),
            ] {
                // As the local buckets: limits beyond u32 are capped there.
                let Some(limit) = limit.map(|l| l.min(u64::from(u32::MAX))) else {
                    continue;
                };
                // The limit is in the key so a changed figure starts afresh, as locally.
                let key = format!("{KEY_PREFIX}{{{tag}}}:{holder}:{}:{limit}", kind.label());
                specs.push(Spec {
                    kind,
                    scope,
                    limit,
                    window,
                    key,
                });
            }
        }
        specs
    }

    /// Units a request takes from this bucket.
    pub fn units(&self, tokens: u64) -> u64 {
        match self.kind {
            Kind::Rpm | Kind::Rpd | Kind::Concurrency => 1,
            Kind::Tpm | Kind::Tpd => tokens,
        }
    }
}

/// What the script decided for a request's buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The first bucket that refused (index into the specs), its wait (`None`: no wait
    /// makes room) and its units in use; `None` when all were charged.
    pub refused: Option<(usize, Option<Duration>, u64)>,
    /// Each bucket's standing after the call.
    pub lines: Vec<Line>,
}

/// The Redis connection and the script; cheap to share.
pub struct RedisBuckets {
    connection: ConnectionManager,
    script: Script,
    timeout: Duration,
    /// Reconciliations and refunds run here, off the request path.
    tasks: TaskTracker,
    started: Instant,
    /// Nanoseconds since `started` before which Redis is not tried again.
    retry_at: AtomicU64,
    /// Whether the current outage has been logged.
    down: AtomicBool,
}

impl RedisBuckets {
    /// Connects lazily: a Redis down at start-up is an outage, not a start-up failure.
    pub fn new(url: &str, timeout: Duration, tasks: TaskTracker) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF);
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            script: Script::new(include_str!("gcra.lua")),
            timeout,
            tasks,
            started: Instant::now(),
            retry_at: AtomicU64::new(0),
            down: AtomicBool::new(false),
        })
    }

    /// Charges `tokens` (one request on the request kinds) to every bucket, or none.
    pub async fn charge(&self, specs: &[Spec], tokens: u64) -> Result<Verdict, RedisLimitError> {
        self.charge_at(specs, tokens, None).await
    }

    /// `charge`, at `at` microseconds instead of Redis's `TIME` (tests script time).
    async fn charge_at(
        &self,
        specs: &[Spec],
        tokens: u64,
        at: Option<u64>,
    ) -> Result<Verdict, RedisLimitError> {
        let figures: Vec<i64> = self.call("charge", specs, tokens, at).await?;
        let figure = |i: usize| figures.get(i).copied().unwrap_or_default();
        if figures.len() != 3 + 2 * specs.len() {
            return Err(self.failed(RedisLimitError::Malformed(figures.len())));
        }
        let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or_default());
        let refused = usize::try_from(figure(0)).ok().and_then(|i| {
            let wait = (figure(1) >= 0).then(|| micros(figure(1)));
            let used = u64::try_from(figure(2)).unwrap_or_default();
            i.checked_sub(1).map(|index| (index, wait, used))
        });
        let lines = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| Line {
                limit: spec.limit,
                remaining: u64::try_from(figure(3 + 2 * i)).unwrap_or_default(),
                reset: micros(figure(4 + 2 * i)),
            })
            .collect();
        Ok(Verdict { refused, lines })
    }

    /// Charges `units` past the limit (the reconciliation debt), off the request path.
    pub fn force(self: &Arc<Self>, specs: Vec<Spec>, units: u64) {
        self.spawn("force", specs, units);
    }

    /// Gives back what an admission took, off the request path.
    pub fn refund(self: &Arc<Self>, specs: Vec<Spec>, tokens: u64) {
        self.spawn("refund", specs, tokens);
    }

    fn spawn(self: &Arc<Self>, mode: &'static str, specs: Vec<Spec>, tokens: u64) {
        if specs.is_empty() {
            return;
        }
        let this = self.clone();
        self.tasks.spawn(async move {
            let done: Result<i64, _> = this.call(mode, &specs, tokens, None).await;
            if let Err(error) = done {
                tracing::debug!(mode, %error, "rate-limit adjustment not applied in redis");
            }
        });
    }

    async fn call<T: ::redis::FromRedisValue>(
        &self,
        mode: &str,
        specs: &[Spec],
        tokens: u64,
        at: Option<u64>,
    ) -> Result<T, RedisLimitError> {
        if self.elapsed() < self.retry_at.load(Ordering::Acquire) {
            return Err(RedisLimitError::BackingOff);
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(mode)
            .arg(at.map(|at| at.to_string()).unwrap_or_default());
        for spec in specs {
            let window = u64::try_from(spec.window.length().as_micros()).unwrap_or(u64::MAX);
            invocation
                .key(&spec.key)
                .arg(spec.limit)
                .arg(window)
                .arg(spec.units(tokens));
        }
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection));
        match answer.await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::AcqRel) {
                    tracing::info!("redis answers again: rate limits are shared again");
                }
                Ok(value)
            }
            Ok(Err(error)) => Err(self.failed(error.into())),
            Err(_elapsed) => Err(self.failed(RedisLimitError::Timeout(self.timeout))),
        }
    }

    /// Whether Redis answers a PING within the timeout (for `/readyz`). Ignores the
    /// back-off: a probe every few seconds costs nothing and notices recovery first.
    pub async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        let command = ::redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(_)))
    }

    /// Starts the back-off; logs the first failure of an outage.
    fn failed(&self, error: RedisLimitError) -> RedisLimitError {
        let backoff = u64::try_from(BACKOFF.as_nanos()).unwrap_or(u64::MAX);
        self.retry_at
            .store(self.elapsed().saturating_add(backoff), Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "redis unreachable: applying limits.on_redis_error");
        }
        error
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateFigures;
    use crate::limits::{Bucket, Denied, LimitClock};

    /// A key of no team, asking for `figures` on the model alone.
    fn model_specs(figures: RateFigures) -> Vec<Spec> {
        let key_id = format!("test-{}", uuid::Uuid::new_v4().simple());
        let caller = Identity {
            display: key_id.clone(),
            key_id,
            team_id: None,
            key: None,
        };
        let limits = Limits {
            model: figures,
            ..Limits::default()
        };
        Spec::all(&caller, "m", limits)
    }

    /// The Redis of `TOLLGATE_TEST_REDIS_URL`, or `None` (the test is skipped).
    fn redis() -> Option<Arc<RedisBuckets>> {
        match std::env::var("TOLLGATE_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(Arc::new(
                RedisBuckets::new(&url, Duration::from_secs(2), TaskTracker::new()).unwrap(),
            )),
            _ => {
                eprintln!("note: TOLLGATE_TEST_REDIS_URL unset; Redis test skipped");
                None
            }
        }
    }

    enum Step {
        Advance(u64),
        Back(u64),
        Charge(u64),
        Force(u64),
        Refund(u64),
    }

    /// Runs `steps` on a local bucket and on Redis (TPM, at scripted times) and
    /// asserts both decide alike and report the same figures.
    async fn same_as_local(redis: &RedisBuckets, limit: u64, steps: &[Step]) {
        let clock = LimitClock::manual();
        let local = Bucket::new(limit, Window::Minute, &clock);
        let figures = RateFigures {
            tpm: Some(limit),
            ..RateFigures::default()
        };
        let specs = model_specs(figures);
        // An epoch-sized base, as Redis's TIME gives.
        let mut now: u64 = 1_700_000_000_000_000;
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Advance(ms) | Step::Back(ms) => {
                    let forward = matches!(step, Step::Advance(_));
                    let by = Duration::from_millis(ms);
                    now = if forward {
                        now + ms * 1000
                    } else {
                        now - ms * 1000
                    };
                    let at = Duration::from_micros(now - 1_700_000_000_000_000);
                    if forward {
                        clock.advance(by);
                    } else {
                        clock.set(at);
                    }
                }
                Step::Charge(n) => {
                    let verdict = redis.charge_at(&specs, n, Some(now)).await.unwrap();
                    let expected = local.charge(n);
                    let (remaining, reset) = (local.remaining(), local.reset());
                    match (expected, verdict.refused) {
                        (Ok(()), None) => {}
                        (Err(Denied::TooLarge), Some((0, None, _))) => {}
                        (Err(Denied::Wait(wait)), Some((0, Some(got), used))) => {
                            assert_eq!(used, local.used(), "step {i}: used");
                            assert_eq!(
                                got.as_micros().div_ceil(1000),
                                wait.as_micros().div_ceil(1000),
                                "step {i}: wait"
                            );
                        }
                        (expected, got) => panic!("step {i}: local {expected:?}, redis {got:?}"),
                    }
                    let line = verdict.lines[0];
                    assert_eq!(line.remaining, remaining, "step {i}: remaining");
                    assert_eq!(
                        line.reset.as_micros().div_ceil(1000),
                        reset.as_micros().div_ceil(1000),
                        "step {i}: reset"
                    );
                }
                Step::Force(n) | Step::Refund(n) => {
                    let mode = if matches!(step, Step::Force(_)) {
                        local.force(n);
                        "force"
                    } else {
                        local.refund(n);
                        "refund"
                    };
                    let _: i64 = redis.call(mode, &specs, n, Some(now)).await.unwrap();
                }
            }
        }
    }

    #[tokio::test]
    async fn the_script_decides_as_the_local_bucket() {
        let Some(redis) = redis() else { return };
        use Step::*;
        // Trip, refill, too large.
        let steps = [
            Charge(1),
            Charge(1),
            Charge(1),
            Charge(1),
            Advance(25_000),
            Charge(1),
            Charge(1),
            Charge(4),
        ];
        same_as_local(&redis, 3, &steps).await;
        // Debt from reconciliation, waited out; a refund gives back no more than taken.
        let steps = [
            Charge(500),
            Force(300),
            Charge(10),
            Advance(21_000),
            Charge(10),
            Refund(10),
            Charge(10),
            Refund(5000),
            Charge(600),
        ];
        same_as_local(&redis, 600, &steps).await;
        // A limit that does not divide the minute.
        let steps = [
            Charge(3),
            Charge(4),
            Charge(1),
            Advance(8_000),
            Charge(1),
            Advance(600),
            Charge(1),
            Advance(59_000),
            Charge(7),
        ];
        same_as_local(&redis, 7, &steps).await;
        // A clock stepped back grants no extra burst.
        let steps = [
            Advance(3_600_000),
            Charge(2),
            Back(1_800_000),
            Charge(1),
            Advance(1_830_000),
            Charge(1),
            Charge(1),
        ];
        same_as_local(&redis, 2, &steps).await;
        // A limit of 0 refuses everything.
        same_as_local(&redis, 0, &[Charge(1), Charge(0)]).await;
    }

    #[tokio::test]
    async fn all_buckets_are_charged_or_none() {
        let Some(redis) = redis() else { return };
        let figures = RateFigures {
            rpm: Some(10),
            rpd: Some(100),
            tpm: Some(1000),
            tpd: Some(5000),
        };
        let specs = model_specs(figures);
        let kinds: Vec<Kind> = specs.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [Kind::Rpm, Kind::Rpd, Kind::Tpm, Kind::Tpd]);
        let verdict = redis.charge(&specs, 900).await.unwrap();
        assert_eq!(verdict.refused, None);
        let remaining: Vec<u64> = verdict.lines.iter().map(|l| l.remaining).collect();
        assert_eq!(remaining, [9, 99, 100, 4100]);
        // TPM refuses: nothing is taken, RPM included.
        let verdict = redis.charge(&specs, 200).await.unwrap();
        assert!(
            matches!(verdict.refused, Some((2, Some(_), 900))),
            "{verdict:?}"
        );
        let remaining: Vec<u64> = verdict.lines.iter().map(|l| l.remaining).collect();
        assert_eq!(remaining, [9, 99, 100, 4100]);
        // Keys expire about a window after the bucket is full again.
        let mut connection = redis.connection.clone();
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&specs[0].key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!((60_000..=66_000).contains(&ttl), "{ttl}");
    }

    #[tokio::test]
    async fn team_and_key_totals_are_shared_through_the_script() {
        let Some(redis) = redis() else { return };
        let team = format!("team-{}", uuid::Uuid::new_v4().simple());
        let member = |key: &str| Identity {
            display: key.to_owned(),
            key_id: format!("{team}-{key}"),
            team_id: Some(team.clone()),
            key: None,
        };
        let rpm = |n| RateFigures {
            rpm: Some(n),
            ..RateFigures::default()
        };
        let limits = Limits {
            model: rpm(10),
            key_total: rpm(2),
            team_total: rpm(3),
        };
        let (a, b) = (member("a"), member("b"));
        for (who, model) in [(&a, "m"), (&a, "n"), (&b, "m")] {
            let verdict = redis
                .charge(&Spec::all(who, model, limits), 1)
                .await
                .unwrap();
            assert_eq!(verdict.refused, None);
        }
        // a's third model: its key total (2) refuses.
        let specs = Spec::all(&a, "o", limits);
        let verdict = redis.charge(&specs, 1).await.unwrap();
        let (index, _, used) = verdict.refused.unwrap();
        assert_eq!((specs[index].scope, used), (Scope::Key, 2));
        // b's second request: the team's total (3) refuses, though b's own has room.
        let specs = Spec::all(&b, "n", limits);
        let verdict = redis.charge(&specs, 1).await.unwrap();
        let (index, _, used) = verdict.refused.unwrap();
        assert_eq!((specs[index].scope, used), (Scope::Team, 3));
        // Every bucket of a request shares the team's hash tag.
        assert!(specs.iter().all(|s| s.key.contains(&format!("{{{team}}}"))));
    }
}
