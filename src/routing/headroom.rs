//! Organisation headroom. An upstream's limits (OpenAI's per organisation) are shared
//! by every team behind tollgate. Each answer's `x-ratelimit-*` headers give the
//! latest view per upstream and model, kept in memory (and, with sharing on, in Redis
//! for the other replicas); tollgate takes what it sends off that view until the next
//! answer corrects it.
//!
//! While a view is under its reserve, what is left is split by team weight: team `t`
//! with share `w_t` may send while its use in this window is under
//! `(used by all + remaining) · w_t / Σ w` of the teams active in the window, and
//! nothing is sent that the view says the upstream no longer has. A request over its
//! team's share waits for room (a fresher answer, another team's request ending, the
//! upstream's reset) up to `queue_timeout`, then gets a 429 before it ever reaches the
//! upstream. The window closes at the upstream's reset, when the limit is whole again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::metrics::RoutingMetrics;
use super::signals::{KINDS, REQUESTS, Reported, TOKENS};
use crate::clock::now_ms;
use crate::config::HeadroomConfig;

/// Models tracked per process at most: views are made only from answers that carry
/// limits, but a client inventing model names must not grow memory or the scrape.
const MAX_POOLS: usize = 1024;
/// A window whose upstream reported no reset time closes after this.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The headroom settings, with team shares by name.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rationing: bool,
    pub reserve: [Option<u64>; 2],
    pub percent: Option<u8>,
    pub queue_timeout: Duration,
    pub default_share: u32,
    pub shares: HashMap<String, u32>,
}

impl Settings {
    pub fn new(config: &HeadroomConfig, shares: HashMap<String, u32>) -> Self {
        Self {
            rationing: config.rationing(),
            reserve: [config.reserve_requests, config.reserve_tokens],
            percent: config.reserve_percent,
            queue_timeout: config.queue_timeout,
            default_share: config.default_share.max(1),
            shares,
        }
    }

    fn share(&self, team: &str) -> u32 {
        self.shares
            .get(team)
            .copied()
            .unwrap_or(self.default_share)
            .max(1)
    }
}

/// The organisation's standing on one upstream and model, as tollgate estimates it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct View {
    remaining: [Option<u64>; 2],
    limit: [Option<u64>; 2],
    reset_at: [Option<Instant>; 2],
    /// The same instants on the wall clock, for other replicas.
    reset_ms: [Option<i64>; 2],
    observed_ms: i64,
}

/// A view as replicas exchange it through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    pub remaining: [Option<u64>; 2],
    pub limit: [Option<u64>; 2],
    pub reset_ms: [Option<i64>; 2],
    pub observed_ms: i64,
}

impl Wire {
    /// When the view says nothing any more: its last reset (or a minute on).
    pub fn expires_ms(&self) -> i64 {
        self.reset_ms
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(self.observed_ms.saturating_add(60_000))
    }
}

/// Use per team since the view went under its reserve.
#[derive(Debug)]
struct Window {
    ends: Instant,
    teams: HashMap<Box<str>, [u64; 2]>,
    used: [u64; 2],
    shares: u64,
}

#[derive(Debug, Default)]
struct State {
    view: View,
    /// Admitted here and not yet answered: the next report may not count them yet.
    in_flight: [u64; 2],
    window: Option<Window>,
    /// Changed since last sent to Redis.
    dirty: bool,
}

/// Why a request may not go now: when things change by themselves, and which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wait {
    until: Instant,
    kind: usize,
}

impl State {
    /// Limits whose reset has passed are whole again (or unknown, if the upstream never
    /// said how large); a window ends with its reset.
    fn refresh(&mut self, now: Instant) {
        for d in [REQUESTS, TOKENS] {
            if self.view.reset_at[d].is_some_and(|at| at <= now) {
                self.view.remaining[d] = self.view.limit[d];
                self.view.reset_at[d] = None;
                self.view.reset_ms[d] = None;
            }
        }
        if self
            .window
            .as_ref()
            .is_some_and(|window| window.ends <= now)
        {
            self.window = None;
        }
    }

    fn reserve(&self, settings: &Settings, d: usize) -> Option<u64> {
        let percent = settings
            .percent
            .zip(self.view.limit[d])
            .map(|(percent, limit)| limit.saturating_mul(u64::from(percent)) / 100);
        match (settings.reserve[d], percent) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn constrained(&self, settings: &Settings) -> [bool; 2] {
        [REQUESTS, TOKENS].map(|d| {
            matches!(
                (self.view.remaining[d], self.reserve(settings, d)),
                (Some(remaining), Some(reserve)) if remaining < reserve
            )
        })
    }

    fn debit(&mut self, cost: [u64; 2]) {
        for d in [REQUESTS, TOKENS] {
            self.view.remaining[d] = self.view.remaining[d].map(|r| r.saturating_sub(cost[d]));
            self.in_flight[d] = self.in_flight[d].saturating_add(cost[d]);
        }
    }

    /// Admits `cost` for `team` now (`Ok(true)` when under the reserve), or says how
    /// long until the view changes by itself.
    fn try_admit(
        &mut self,
        settings: &Settings,
        team: &str,
        cost: [u64; 2],
        now: Instant,
    ) -> Result<bool, Wait> {
        self.refresh(now);
        let constrained = self.constrained(settings);
        if constrained == [false, false] {
            self.window = None;
            self.debit(cost);
            return Ok(false);
        }
        let resets = [REQUESTS, TOKENS]
            .into_iter()
            .filter(|&d| constrained[d])
            .filter_map(|d| self.view.reset_at[d])
            .min();
        let window = self.window.get_or_insert_with(|| Window {
            ends: resets.unwrap_or(now + DEFAULT_WINDOW),
            teams: HashMap::new(),
            used: [0, 0],
            shares: 0,
        });
        let share = settings.share(team);
        if !window.teams.contains_key(team) {
            window.teams.insert(Box::from(team), [0, 0]);
            window.shares += u64::from(share);
        }
        let used = window.teams.get(team).copied().unwrap_or_default();
        for d in [REQUESTS, TOKENS] {
            let Some(remaining) = self.view.remaining[d] else {
                continue;
            };
            let wait = Wait {
                until: self.view.reset_at[d].unwrap_or(window.ends),
                kind: d,
            };
            // Never past what the upstream has left, whatever the shares say.
            if remaining < cost[d] {
                return Err(wait);
            }
            // Under its share before this request (so the last one may overshoot it by
            // one request's cost, never starving a team whose requests are large).
            let capacity = u128::from(window.used[d]) + u128::from(remaining);
            if constrained[d]
                && u128::from(used[d]) * u128::from(window.shares) >= capacity * u128::from(share)
            {
                return Err(wait);
            }
        }
        for d in [REQUESTS, TOKENS] {
            window.used[d] = window.used[d].saturating_add(cost[d]);
        }
        if let Some(used) = window.teams.get_mut(team) {
            for d in [REQUESTS, TOKENS] {
                used[d] = used[d].saturating_add(cost[d]);
            }
        }
        self.debit(cost);
        Ok(true)
    }

    fn answered(&mut self, cost: [u64; 2]) {
        for d in [REQUESTS, TOKENS] {
            self.in_flight[d] = self.in_flight[d].saturating_sub(cost[d]);
        }
    }

    fn observe(&mut self, reported: &Reported, now: Instant, wall_ms: i64) {
        for d in [REQUESTS, TOKENS] {
            if let Some(remaining) = reported.remaining[d] {
                self.view.remaining[d] = Some(remaining.saturating_sub(self.in_flight[d]));
            }
            if reported.limit[d].is_some() {
                self.view.limit[d] = reported.limit[d];
            }
            if let Some(reset) = reported.reset[d] {
                self.view.reset_at[d] = Some(now + reset);
                let reset_ms = i64::try_from(reset.as_millis()).unwrap_or(i64::MAX);
                self.view.reset_ms[d] = Some(wall_ms.saturating_add(reset_ms));
            }
        }
        self.view.observed_ms = wall_ms;
        self.dirty = true;
    }

    fn merge(&mut self, wire: &Wire, now: Instant, wall_ms: i64) -> bool {
        if wire.observed_ms <= self.view.observed_ms {
            return false;
        }
        for d in [REQUESTS, TOKENS] {
            self.view.remaining[d] = wire.remaining[d].map(|r| r.saturating_sub(self.in_flight[d]));
            self.view.limit[d] = wire.limit[d].or(self.view.limit[d]);
            self.view.reset_ms[d] = wire.reset_ms[d];
            self.view.reset_at[d] = wire.reset_ms[d].map(|at| {
                let left = u64::try_from(at.saturating_sub(wall_ms)).unwrap_or(0);
                now + Duration::from_millis(left)
            });
        }
        self.view.observed_ms = wire.observed_ms;
        true
    }

    fn wire(&self) -> Wire {
        Wire {
            remaining: self.view.remaining,
            limit: self.view.limit,
            reset_ms: self.view.reset_ms,
            observed_ms: self.view.observed_ms,
        }
    }
}

/// One upstream and model.
#[derive(Debug)]
pub struct Pool {
    state: Mutex<State>,
    changed: Notify,
    /// Requests waiting for room: while none is, a change wakes no one.
    waiting: AtomicUsize,
    gauges: [Gauge; 2],
}

/// Counts a request among a pool's waiters while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn show(&self, view: &View) {
        for d in [REQUESTS, TOKENS] {
            if let Some(remaining) = view.remaining[d] {
                #[expect(clippy::cast_precision_loss, reason = "a gauge, not money")]
                self.gauges[d].set(remaining as f64);
            }
        }
    }
}

/// What an admitted request took from a view; given back when its answer (or failure)
/// comes, however that happens.
#[derive(Debug)]
pub struct Debit {
    pool: Arc<Pool>,
    cost: [u64; 2],
}

impl Drop for Debit {
    fn drop(&mut self) {
        if self.cost != [0, 0] {
            self.pool.lock().answered(self.cost);
            self.pool.wake();
        }
    }
}

/// A request refused for want of headroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `requests` or `tokens`: the limit that ran out.
    pub kind: &'static str,
    pub share: u32,
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct Headroom {
    settings: Settings,
    names: Vec<String>,
    pools: Vec<RwLock<HashMap<Box<str>, Arc<Pool>>>>,
    count: AtomicUsize,
    metrics: RoutingMetrics,
}

impl Headroom {
    /// `names`: the upstreams' names, by index.
    pub fn new(settings: Settings, names: Vec<String>, metrics: RoutingMetrics) -> Self {
        Self {
            pools: names.iter().map(|_| RwLock::default()).collect(),
            names,
            settings,
            count: AtomicUsize::new(0),
            metrics,
        }
    }

    pub fn rationing(&self) -> bool {
        self.settings.rationing
    }

    pub fn share(&self, team: &str) -> u32 {
        self.settings.share(team)
    }

    fn pool(&self, upstream: usize, model: &str) -> Option<Arc<Pool>> {
        let pools = self.pools.get(upstream)?;
        pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .cloned()
    }

    fn pool_or_new(&self, upstream: usize, model: &str) -> Option<Arc<Pool>> {
        if let Some(pool) = self.pool(upstream, model) {
            return Some(pool);
        }
        let pools = self.pools.get(upstream)?;
        let mut pools = pools.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(model) {
            return Some(pool.clone());
        }
        if self.count.load(Ordering::Relaxed) >= MAX_POOLS {
            return None;
        }
        let name = self.names.get(upstream).map_or("", String::as_str);
        let gauges = KINDS.map(|kind| {
            self.metrics
                .headroom
                .with_label_values(&[name, model, kind])
        });
        let pool = Arc::new(Pool {
            state: Mutex::default(),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            gauges,
        });
        pools.insert(Box::from(model), pool.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        Some(pool)
    }

    /// Whether a request to `model` at `upstream` needs its tokens counted: the
    /// upstream reports tokens left for it, and they are under (or within twice) the
    /// reserve. Far from it, a request's tokens change nothing and are not counted.
    pub fn needs_tokens(&self, upstream: usize, model: &str) -> bool {
        if !self.settings.rationing {
            return false;
        }
        let Some(pool) = self.pool(upstream, model) else {
            return false;
        };
        let state = pool.lock();
        match (
            state.view.remaining[TOKENS],
            state.reserve(&self.settings, TOKENS),
        ) {
            (Some(remaining), Some(reserve)) => remaining < reserve.saturating_mul(2),
            _ => false,
        }
    }

    /// Whether the view of `model` at `upstream` is under its reserve now.
    pub fn under_reserve(&self, upstream: usize, model: &str) -> bool {
        if !self.settings.rationing {
            return false;
        }
        let Some(pool) = self.pool(upstream, model) else {
            return false;
        };
        let mut state = pool.lock();
        state.refresh(Instant::now());
        state.constrained(&self.settings) != [false, false]
    }

    /// Admits one request of `tokens` for `team`, waiting up to `queue_timeout` when
    /// `wait` (the first target of a request; fallbacks are passed over instead).
    pub async fn admit(
        &self,
        upstream: usize,
        model: &str,
        team: &str,
        tokens: u64,
        wait: bool,
    ) -> Result<Option<Debit>, Refused> {
        if !self.settings.rationing {
            return Ok(None);
        }
        let Some(pool) = self.pool(upstream, model) else {
            return Ok(None);
        };
        let cost = [1, tokens];
        let started = Instant::now();
        let deadline = started + self.settings.queue_timeout;
        let name = self.names.get(upstream).map_or("", String::as_str);
        let mut queued: Option<Waiting<'_>> = None;
        loop {
            let changed = pool.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let verdict = pool.lock().try_admit(&self.settings, team, cost, now);
            let blocked = match verdict {
                Ok(rationed) => {
                    if queued.is_some() {
                        self.metrics
                            .queue_wait
                            .with_label_values(&[name])
                            .observe(started.elapsed().as_secs_f64());
                    }
                    if rationed {
                        self.metrics.rationed.with_label_values(&[name, team]).inc();
                    }
                    return Ok(Some(Debit {
                        pool: Arc::clone(&pool),
                        cost,
                    }));
                }
                Err(blocked) => blocked,
            };
            if !wait || now >= deadline {
                if queued.is_some() {
                    self.metrics
                        .queue_wait
                        .with_label_values(&[name])
                        .observe(started.elapsed().as_secs_f64());
                }
                let left = blocked.until.saturating_duration_since(now);
                return Err(Refused {
                    kind: KINDS[blocked.kind],
                    share: self.settings.share(team),
                    retry_after: left.max(Duration::from_secs(1)),
                });
            }
            if queued.is_none() {
                // Counted among the waiters before looking again, so no change made
                // after that look can pass without waking this request.
                pool.waiting.fetch_add(1, Ordering::SeqCst);
                queued = Some(Waiting(&pool.waiting));
                self.metrics.queued.with_label_values(&[name, team]).inc();
                continue;
            }
            let wake = blocked
                .until
                .min(deadline)
                .max(now + Duration::from_millis(1));
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Counts a refusal the client gets (a fallback passed over is not one).
    pub fn count_refused(&self, upstream: usize, team: &str) {
        let name = self.names.get(upstream).map_or("", String::as_str);
        self.metrics.refused.with_label_values(&[name, team]).inc();
    }

    /// An answer from `model` at `upstream`: its report (if any) becomes the view, less
    /// what is still in flight from here; `debit` is this request's own.
    pub fn observe(
        &self,
        upstream: usize,
        model: &str,
        reported: Option<&Reported>,
        debit: Option<Debit>,
    ) {
        let Some(reported) = reported else {
            drop(debit);
            return;
        };
        let pool = match &debit {
            Some(debit) => Some(debit.pool.clone()),
            None => self.pool_or_new(upstream, model),
        };
        let Some(pool) = pool else {
            return;
        };
        let mut state = pool.lock();
        if let Some(mut debit) = debit {
            state.answered(debit.cost);
            debit.cost = [0, 0];
        }
        state.observe(reported, Instant::now(), now_ms());
        pool.show(&state.view);
        drop(state);
        pool.wake();
    }

    /// Views changed here since last taken, for Redis.
    pub fn take_dirty(&self) -> Vec<(usize, String, Wire)> {
        let mut out = Vec::new();
        for (upstream, pools) in self.pools.iter().enumerate() {
            let pools = pools.read().unwrap_or_else(PoisonError::into_inner);
            for (model, pool) in pools.iter() {
                let mut state = pool.lock();
                if state.dirty {
                    state.dirty = false;
                    out.push((upstream, model.to_string(), state.wire()));
                }
            }
        }
        out
    }

    /// Another replica's view, taken if newer than this one's.
    pub fn merge(&self, upstream: usize, model: &str, wire: &Wire) {
        if wire.expires_ms() <= now_ms() {
            return;
        }
        let Some(pool) = self.pool_or_new(upstream, model) else {
            return;
        };
        let mut state = pool.lock();
        if state.merge(wire, Instant::now(), now_ms()) {
            pool.show(&state.view);
            drop(state);
            pool.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(reserve_requests: u64) -> Settings {
        Settings {
            rationing: true,
            reserve: [Some(reserve_requests), None],
            percent: None,
            queue_timeout: Duration::from_millis(10),
            default_share: 1,
            shares: [("batch".to_owned(), 1), ("web".to_owned(), 3)].into(),
        }
    }

    fn reported(requests: u64, reset: Duration) -> Reported {
        Reported {
            remaining: [Some(requests), None],
            limit: [Some(1000), None],
            reset: [Some(reset), None],
        }
    }

    #[test]
    fn under_the_reserve_the_rest_is_split_by_share_and_never_overdrawn() {
        let settings = settings(100);
        let mut state = State::default();
        let now = Instant::now();
        state.observe(&reported(40, Duration::from_secs(60)), now, 0);
        // Both teams are active, then both ask for more than the 40 left.
        let mut admitted = [0, 0];
        for _ in 0..60 {
            for (i, team) in ["batch", "web"].into_iter().enumerate() {
                if state.try_admit(&settings, team, [1, 0], now).is_ok() {
                    admitted[i] += 1;
                }
            }
        }
        assert_eq!(admitted, [10, 30]);
        assert_eq!(state.view.remaining[REQUESTS], Some(0));
        let blocked = state.try_admit(&settings, "web", [1, 0], now).unwrap_err();
        assert_eq!(blocked.until, now + Duration::from_secs(60));
        // The reset makes the limit whole: above the reserve, anyone goes.
        let later = now + Duration::from_secs(61);
        assert_eq!(
            state.try_admit(&settings, "batch", [1, 0], later),
            Ok(false)
        );
        assert_eq!(state.view.remaining[REQUESTS], Some(999));
    }

    #[test]
    fn reports_count_what_is_still_in_flight() {
        let settings = settings(10);
        let mut state = State::default();
        let now = Instant::now();
        state.observe(&reported(500, Duration::from_secs(1)), now, 1);
        for _ in 0..5 {
            assert_eq!(state.try_admit(&settings, "web", [1, 0], now), Ok(false));
        }
        assert_eq!(state.view.remaining[REQUESTS], Some(495));
        // One of the five answers: the upstream counted itself (and maybe others), and
        // four are still on their way.
        state.answered([1, 0]);
        state.observe(&reported(499, Duration::from_secs(1)), now, 2);
        assert_eq!(state.view.remaining[REQUESTS], Some(495));
        // A newer view from another replica replaces this one; an older one does not.
        let wire = Wire {
            remaining: [Some(5), None],
            limit: [Some(1000), None],
            reset_ms: [Some(60_000), None],
            observed_ms: 3,
        };
        assert!(state.merge(&wire, now, 3));
        assert_eq!(state.view.remaining[REQUESTS], Some(1));
        assert!(!state.merge(
            &Wire {
                observed_ms: 2,
                ..wire
            },
            now,
            3
        ));
    }

    #[test]
    fn a_lone_team_takes_what_is_left_until_another_shows_up() {
        let settings = settings(100);
        let mut state = State::default();
        let now = Instant::now();
        state.observe(&reported(8, Duration::from_secs(60)), now, 0);
        for _ in 0..4 {
            assert_eq!(state.try_admit(&settings, "batch", [1, 0], now), Ok(true));
        }
        // `web` arrives: from now batch (4 of 8 used, a share of 1 in 4) waits, and web
        // takes the rest.
        assert_eq!(state.try_admit(&settings, "web", [1, 0], now), Ok(true));
        assert!(state.try_admit(&settings, "batch", [1, 0], now).is_err());
        for _ in 0..3 {
            assert_eq!(state.try_admit(&settings, "web", [1, 0], now), Ok(true));
        }
        assert!(state.try_admit(&settings, "web", [1, 0], now).is_err());
        assert_eq!(state.view.remaining[REQUESTS], Some(0));
    }
}
