//! Cooldowns: a target whose upstream answered "retry after N s" is passed over by
//! routed requests until then. Kept per upstream and model in memory, read on the
//! request path without touching Redis; with sharing on, the sync task sends this
//! replica's new cooldowns to Redis and brings back the others'.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::clock::now_ms;

/// Targets tracked at most; beyond it a new cooldown replaces nothing and is dropped
/// (models are configured targets, so this is never reached by honest traffic).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    until: Instant,
    /// The same moment on the wall clock, for other replicas.
    until_ms: i64,
    /// Not yet sent to Redis.
    dirty: bool,
}

/// One upstream's cooldowns by model.
type Models = HashMap<Box<str>, Entry>;

#[derive(Debug)]
pub struct Cooldowns {
    by_upstream: Vec<RwLock<Models>>,
    /// Entries across all upstreams: when 0, checks take no lock.
    count: AtomicUsize,
}

impl Cooldowns {
    pub fn new(upstreams: usize) -> Self {
        Self {
            by_upstream: (0..upstreams).map(|_| RwLock::default()).collect(),
            count: AtomicUsize::new(0),
        }
    }

    /// How long `model` at `upstream` is still to be left alone.
    pub fn remaining(&self, upstream: usize, model: &str, now: Instant) -> Option<Duration> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let models = self.by_upstream.get(upstream)?;
        let models = models.read().unwrap_or_else(PoisonError::into_inner);
        let entry = models.get(model)?;
        entry
            .until
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }

    /// Leaves `model` at `upstream` alone for `wait` from now (a longer cooldown
    /// already set stands).
    pub fn set(&self, upstream: usize, model: &str, wait: Duration) {
        let now = Instant::now();
        let until_ms = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        self.put(upstream, model, now + wait, until_ms, true, now);
    }

    /// A cooldown another replica set (Unix ms), if later than this one's.
    pub fn merge(&self, upstream: usize, model: &str, until_ms: i64) {
        let now = Instant::now();
        let left = until_ms.saturating_sub(now_ms());
        let Ok(left) = u64::try_from(left) else {
            return;
        };
        if left == 0 {
            return;
        }
        self.put(
            upstream,
            model,
            now + Duration::from_millis(left),
            until_ms,
            false,
            now,
        );
    }

    fn put(
        &self,
        upstream: usize,
        model: &str,
        until: Instant,
        until_ms: i64,
        dirty: bool,
        now: Instant,
    ) {
        let Some(models) = self.by_upstream.get(upstream) else {
            return;
        };
        let mut models = models.write().unwrap_or_else(PoisonError::into_inner);
        let before = models.len();
        models.retain(|_, entry| entry.until > now);
        let room = models.len() < MAX_ENTRIES;
        match models.get_mut(model) {
            Some(entry) if entry.until >= until => {}
            Some(entry) => {
                *entry = Entry {
                    until,
                    until_ms,
                    dirty: dirty || entry.dirty,
                };
            }
            None if room => {
                models.insert(
                    Box::from(model),
                    Entry {
                        until,
                        until_ms,
                        dirty,
                    },
                );
            }
            None => {}
        }
        let after = models.len();
        drop(models);
        if after >= before {
            self.count.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.count.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Marks cooldowns taken by `take_dirty` as still to be sent (their send failed).
    pub fn requeue(&self, taken: &[(usize, String, i64)]) {
        for (upstream, model, until_ms) in taken {
            if let Some(models) = self.by_upstream.get(*upstream) {
                let mut models = models.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = models.get_mut(model.as_str()) {
                    entry.dirty |= entry.until_ms == *until_ms;
                }
            }
        }
    }

    /// This replica's cooldowns not yet sent to Redis: (upstream, model, until ms).
    pub fn take_dirty(&self) -> Vec<(usize, String, i64)> {
        let mut out = Vec::new();
        for (upstream, models) in self.by_upstream.iter().enumerate() {
            let mut models = models.write().unwrap_or_else(PoisonError::into_inner);
            for (model, entry) in models.iter_mut().filter(|(_, e)| e.dirty) {
                entry.dirty = false;
                out.push((upstream, model.to_string(), entry.until_ms));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cooldown_lasts_its_time_and_the_longer_one_stands() {
        let cooldowns = Cooldowns::new(2);
        let now = Instant::now();
        assert_eq!(cooldowns.remaining(0, "gpt-4o", now), None);
        cooldowns.set(0, "gpt-4o", Duration::from_secs(20));
        cooldowns.set(0, "gpt-4o", Duration::from_secs(5));
        let left = cooldowns.remaining(0, "gpt-4o", Instant::now()).unwrap();
        assert!(left > Duration::from_secs(19), "{left:?}");
        assert_eq!(cooldowns.remaining(1, "gpt-4o", now), None);
        assert_eq!(cooldowns.remaining(0, "gpt-4o-mini", now), None);
        assert_eq!(
            cooldowns.remaining(0, "gpt-4o", now + Duration::from_secs(21)),
            None
        );
        let dirty = cooldowns.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert_eq!((dirty[0].0, dirty[0].1.as_str()), (0, "gpt-4o"));
        assert!(cooldowns.take_dirty().is_empty(), "sent once");
        // Another replica's cooldown: merged, not sent back.
        cooldowns.merge(1, "gpt-4o", now_ms() + 30_000);
        assert!(cooldowns.remaining(1, "gpt-4o", Instant::now()).is_some());
        assert!(cooldowns.take_dirty().is_empty());
        cooldowns.merge(1, "o3", now_ms() - 1);
        assert_eq!(cooldowns.remaining(1, "o3", Instant::now()), None);
    }
}
