//! In-process buckets: one governor GCRA limiter per (key, model, window), in a map
//! that drops buckets once they are full again (a full bucket and a fresh one decide
//! alike, so eviction never changes an answer).
//!
//! governor makes every admission decision (`check_n`). Its state store here is our
//! own atomic "theoretical arrival time" (TAT), shared with the bucket, so the bucket
//! can also read how full it is (for the `x-ratelimit-*` headers) and charge tokens
//! past the limit after the fact (the reconciliation debt), which governor alone
//! cannot do.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use super::Window;
use crate::config::RateFigures;

// === impl LimitClock ===

/// Monotonic time for the limiters, or a hand-set one in tests. The monotonic source
/// never runs backwards, so a wall-clock step grants no burst; a hand-set clock stepped
/// back only makes requests wait longer (GCRA refuses until its TAT is reached).
#[derive(Debug, Clone)]
pub enum LimitClock {
    Monotonic(Instant),
    Manual(Arc<AtomicU64>),
}

impl Default for LimitClock {
    fn default() -> Self {
        Self::Monotonic(Instant::now())
    }
}

impl LimitClock {
    /// A clock that moves only when told (`advance`, `set`).
    pub fn manual() -> Self {
        Self::Manual(Arc::new(AtomicU64::new(0)))
    }

    pub fn advance(&self, by: Duration) {
        if let Self::Manual(now) = self {
            now.fetch_add(nanos(by), Ordering::AcqRel);
        }
    }

    /// Sets a manual clock to `at` since its start, backwards included.
    pub fn set(&self, at: Duration) {
        if let Self::Manual(now) = self {
            now.store(nanos(at), Ordering::Release);
        }
    }
}

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::Monotonic(start) => Nanos::from(start.elapsed()),
            Self::Manual(now) => Nanos::new(now.load(Ordering::Acquire)),
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

// === impl Tat ===

/// GCRA state: the theoretical arrival time in nanoseconds since the limiter's start;
/// 0 means never used (a full bucket), as in governor's own `InMemoryState`.
#[derive(Debug, Clone, Default)]
struct Tat(Arc<AtomicU64>);

impl StateStore for Tat {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let (result, next) = f((prev != 0).then(|| Nanos::new(prev)))?;
            match self.0.compare_exchange_weak(
                prev,
                next.as_u64(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(result),
                Err(actual) => prev = actual,
            }
        }
    }
}

// === impl Bucket ===

/// Why a bucket refused a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Not enough room now; there will be after `wait`.
    Wait(Duration),
    /// More than the whole limit: no wait makes room (a limit of 0 refuses everything).
    TooLarge,
}

/// One limit: `limit` units per window.
pub struct Bucket {
    limit: u64,
    /// `None` for a limit of 0, which refuses everything.
    gcra: Option<RateLimiter<NotKeyed, Tat, LimitClock, NoOpMiddleware<Nanos>>>,
    tat: Tat,
    clock: LimitClock,
    /// The limiter's start by our reading; governor reads its own a few nanoseconds
    /// later, which can only make a peek look that much fuller.
    start: Nanos,
    /// Nanoseconds per unit.
    per_unit: u64,
}

impl Bucket {
    pub fn new(limit: u64, window: Window, clock: &LimitClock) -> Self {
        // governor counts bursts in u32; larger limits are capped there.
        let capped = u32::try_from(limit).unwrap_or(u32::MAX);
        let per_unit = (nanos(window.length()) / u64::from(capped.max(1))).max(1);
        let tat = Tat::default();
        let start = clock.now();
        let gcra = NonZeroU32::new(capped).and_then(|burst| {
            let quota = Quota::with_period(Duration::from_nanos(per_unit))?.allow_burst(burst);
            Some(RateLimiter::new(quota, tat.clone(), clock.clone()))
        });
        Self {
            limit: u64::from(capped),
            gcra,
            tat,
            clock: clock.clone(),
            start,
            per_unit,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes `n` units if they fit now.
    pub fn charge(&self, n: u64) -> Result<(), Denied> {
        let Some(gcra) = &self.gcra else {
            return Err(Denied::TooLarge);
        };
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return if n == 0 {
                Ok(())
            } else {
                Err(Denied::TooLarge)
            };
        };
        match gcra.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Denied::Wait(not_until.wait_time_from(self.clock.now()))),
            Err(_insufficient) => Err(Denied::TooLarge),
        }
    }

    /// Takes `n` units whether or not they fit: the bucket may go into debt, which
    /// later requests wait out.
    pub fn force(&self, n: u64) {
        let cost = n.saturating_mul(self.per_unit);
        if cost == 0 || self.gcra.is_none() {
            return;
        }
        let now = self.now();
        let _ = self
            .tat
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(cost))
            });
    }

    /// Gives back `n` units taken by `charge` (an admission refused by a later check).
    pub fn refund(&self, n: u64) {
        let cost = n.saturating_mul(self.per_unit);
        let now = self.now();
        let _ = self
            .tat
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat != 0).then(|| tat.saturating_sub(cost).max(now))
            });
    }

    /// Units in use now (more than the limit while in debt).
    pub fn used(&self) -> u64 {
        self.busy().div_ceil(self.per_unit)
    }

    /// Units that may be taken now.
    pub fn remaining(&self) -> u64 {
        let room = (self.limit * self.per_unit).saturating_sub(self.busy());
        room / self.per_unit
    }

    /// Time until the bucket is full again.
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.busy())
    }

    /// Whether the bucket is full, and so as good as a fresh one.
    fn idle(&self) -> bool {
        self.busy() == 0
    }

    fn busy(&self) -> u64 {
        self.tat
            .0
            .load(Ordering::Acquire)
            .saturating_sub(self.now())
    }

    fn now(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }
}

// === impl Buckets ===

/// A key's buckets for one model; `None` where that kind has no limit.
pub struct ModelBuckets {
    pub figures: RateFigures,
    pub rpm: Option<Bucket>,
    pub tpm: Option<Bucket>,
    pub rpd: Option<Bucket>,
    pub tpd: Option<Bucket>,
}

impl ModelBuckets {
    fn new(figures: RateFigures, clock: &LimitClock) -> Self {
        let bucket = |limit: Option<u64>, window| limit.map(|l| Bucket::new(l, window, clock));
        Self {
            figures,
            rpm: bucket(figures.rpm, Window::Minute),
            tpm: bucket(figures.tpm, Window::Minute),
            rpd: bucket(figures.rpd, Window::Day),
            tpd: bucket(figures.tpd, Window::Day),
        }
    }

    fn idle(&self) -> bool {
        [&self.rpm, &self.tpm, &self.rpd, &self.tpd]
            .into_iter()
            .flatten()
            .all(Bucket::idle)
    }
}

/// Every live bucket, by key id, then model.
pub struct Buckets {
    clock: LimitClock,
    map: Mutex<Map>,
}

#[derive(Default)]
struct Map {
    keys: HashMap<String, HashMap<String, Arc<ModelBuckets>>>,
    /// Entries at the last sweep; the next sweep runs when the map has doubled.
    swept_at: usize,
    len: usize,
}

/// Below this many entries the map is never swept.
const SWEEP_FLOOR: usize = 4096;

impl Buckets {
    pub fn new(clock: LimitClock) -> Self {
        Self {
            clock,
            map: Mutex::new(Map::default()),
        }
    }

    /// The buckets of `key` and `model`, made (or remade, if the figures changed) now.
    pub fn get(&self, key: &str, model: &str, figures: RateFigures) -> Arc<ModelBuckets> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = map.keys.get(key).and_then(|models| models.get(model)) {
            if found.figures == figures {
                return found.clone();
            }
        }
        let made = Arc::new(ModelBuckets::new(figures, &self.clock));
        let models = map.keys.entry(key.to_owned()).or_default();
        if models.insert(model.to_owned(), made.clone()).is_none() {
            map.len += 1;
        }
        if map.len >= SWEEP_FLOOR.max(map.swept_at * 2) {
            map.sweep();
        }
        made
    }

    /// How many (key, model) entries are held.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |map| map.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every full bucket set no request holds (a full bucket is a fresh one).
    pub fn sweep(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.sweep();
        }
    }
}

impl Map {
    fn sweep(&mut self) {
        for models in self.keys.values_mut() {
            // A set still held by a request in flight stays: its settlement must land
            // in the buckets later requests see.
            models.retain(|_, buckets| Arc::strong_count(buckets) > 1 || !buckets.idle());
        }
        self.keys.retain(|_, models| !models.is_empty());
        self.len = self.keys.values().map(HashMap::len).sum();
        self.swept_at = self.len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_trips_at_its_limit_and_refills_with_time() {
        let clock = LimitClock::manual();
        let bucket = Bucket::new(3, Window::Minute, &clock);
        assert_eq!((bucket.remaining(), bucket.reset()), (3, Duration::ZERO));
        for left in [2, 1, 0] {
            bucket.charge(1).unwrap();
            assert_eq!(bucket.remaining(), left);
        }
        assert_eq!(bucket.charge(1), Err(Denied::Wait(Duration::from_secs(20))));
        assert_eq!(bucket.reset(), Duration::from_secs(60));
        clock.advance(Duration::from_secs(25));
        assert_eq!(bucket.remaining(), 1);
        assert_eq!(bucket.reset(), Duration::from_secs(35));
        bucket.charge(1).unwrap();
        assert_eq!(bucket.charge(4), Err(Denied::TooLarge));
    }

    #[test]
    fn forced_charges_put_the_bucket_in_debt() {
        let clock = LimitClock::manual();
        let bucket = Bucket::new(600, Window::Minute, &clock);
        bucket.charge(500).unwrap();
        bucket.force(300);
        assert_eq!((bucket.used(), bucket.remaining()), (800, 0));
        assert_eq!(bucket.reset(), Duration::from_secs(80));
        // Debt of 200 plus 10 more: 21 seconds until 10 fit.
        assert_eq!(
            bucket.charge(10),
            Err(Denied::Wait(Duration::from_secs(21)))
        );
        clock.advance(Duration::from_secs(21));
        bucket.charge(10).unwrap();
    }

    #[test]
    fn a_refund_returns_what_a_charge_took_and_no_more() {
        let clock = LimitClock::manual();
        let bucket = Bucket::new(100, Window::Minute, &clock);
        bucket.charge(40).unwrap();
        bucket.refund(40);
        assert_eq!(bucket.remaining(), 100);
        bucket.refund(40);
        assert_eq!(bucket.remaining(), 100);
    }

    #[test]
    fn a_limit_of_zero_refuses_everything() {
        let clock = LimitClock::manual();
        let bucket = Bucket::new(0, Window::Day, &clock);
        assert_eq!(bucket.charge(1), Err(Denied::TooLarge));
        assert_eq!((bucket.remaining(), bucket.limit()), (0, 0));
    }

    #[test]
    fn a_clock_stepped_back_grants_no_extra_burst() {
        let clock = LimitClock::manual();
        clock.set(Duration::from_secs(3600));
        let bucket = Bucket::new(2, Window::Minute, &clock);
        bucket.charge(2).unwrap();
        clock.set(Duration::from_secs(1800));
        assert!(matches!(bucket.charge(1), Err(Denied::Wait(_))));
        assert_eq!(bucket.remaining(), 0);
        // Back where it was and a refill later, exactly one fits again.
        clock.set(Duration::from_secs(3630));
        bucket.charge(1).unwrap();
        assert!(bucket.charge(1).is_err());
    }

    #[test]
    fn full_buckets_are_swept_and_busy_ones_kept() {
        let clock = LimitClock::manual();
        let buckets = Buckets::new(clock.clone());
        let figures = RateFigures {
            rpm: Some(10),
            ..RateFigures::default()
        };
        let busy = buckets.get("k1", "m", figures);
        busy.rpm.as_ref().unwrap().charge(1).unwrap();
        drop(busy);
        buckets.get("k2", "m", figures);
        let held = buckets.get("k3", "m", figures);
        assert_eq!(buckets.len(), 3);
        buckets.sweep();
        assert_eq!(buckets.len(), 2, "k1 is busy, k3 is held");
        clock.advance(Duration::from_secs(6));
        buckets.sweep();
        assert_eq!(buckets.len(), 1, "k3 is held");
        drop(held);
        buckets.sweep();
        assert!(buckets.is_empty());
    }
}
