//! The arithmetic of headroom, with no locks, clocks or I/O: a view of an upstream's
//! remaining limits, what tollgate has taken from it since, and, under the reserve, each
//! team's use against its share. `headroom` wraps it in locks, waits and metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::signals::{REQUESTS, Reported, TOKENS};
use crate::config::HeadroomConfig;

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

    pub(super) fn share(&self, team: &str) -> u32 {
        self.shares
            .get(team)
            .copied()
            .unwrap_or(self.default_share)
            .max(1)
    }
}

/// The organisation's standing on one upstream and model, as tollgate estimates it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct View {
    pub(super) remaining: [Option<u64>; 2],
    pub(super) limit: [Option<u64>; 2],
    pub(super) reset_at: [Option<Instant>; 2],
    /// The same instants on the wall clock, for other replicas.
    pub(super) reset_ms: [Option<i64>; 2],
    pub(super) observed_ms: i64,
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
pub(super) struct Window {
    ends: Instant,
    teams: HashMap<Box<str>, [u64; 2]>,
    used: [u64; 2],
    shares: u64,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) view: View,
    /// Admitted here and not yet answered: the next report may not count them yet.
    pub(super) in_flight: [u64; 2],
    pub(super) window: Option<Window>,
    /// Changed since last sent to Redis.
    pub(super) dirty: bool,
}

/// Why a request may not go now: when things change by themselves, and which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wait {
    pub(super) until: Instant,
    pub(super) kind: usize,
}

impl State {
    /// Limits whose reset has passed are whole again (or unknown, if the upstream never
    /// said how large); a window ends with its reset.
    pub(super) fn refresh(&mut self, now: Instant) {
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

    pub(super) fn reserve(&self, settings: &Settings, d: usize) -> Option<u64> {
        let percent = settings
            .percent
            .zip(self.view.limit[d])
            .map(|(percent, limit)| limit.saturating_mul(u64::from(percent)) / 100);
        match (settings.reserve[d], percent) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn constrained(&self, settings: &Settings) -> [bool; 2] {
        [REQUESTS, TOKENS].map(|d| {
            matches!(
                (self.view.remaining[d], self.reserve(settings, d)),
                (Some(remaining), Some(reserve)) if remaining < reserve
            )
        })
    }

    pub(super) fn debit(&mut self, cost: [u64; 2]) {
        for d in [REQUESTS, TOKENS] {
            self.view.remaining[d] = self.view.remaining[d].map(|r| r.saturating_sub(cost[d]));
            self.in_flight[d] = self.in_flight[d].saturating_add(cost[d]);
        }
    }

    /// Admits `cost` for `team` now (`Ok(true)` when under the reserve), or says how
    /// long until the view changes by itself.
    pub(super) fn try_admit(
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

    pub(super) fn answered(&mut self, cost: [u64; 2]) {
        for d in [REQUESTS, TOKENS] {
            self.in_flight[d] = self.in_flight[d].saturating_sub(cost[d]);
        }
    }

    pub(super) fn observe(&mut self, reported: &Reported, now: Instant, wall_ms: i64) {
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

    pub(super) fn merge(&mut self, wire: &Wire, now: Instant, wall_ms: i64) -> bool {
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

    pub(super) fn wire(&self) -> Wire {
        Wire {
            remaining: self.view.remaining,
            limit: self.view.limit,
            reset_ms: self.view.reset_ms,
            observed_ms: self.view.observed_ms,
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
