//! How the ledger's connection pool is sized and how long its callers wait, and
//! whether the database has answered lately: a budget check that runs out of time
//! while other queries complete faces load, not an outage, and must not be treated
//! like one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

// The figures are config (plain data); the pool that uses them is the ledger's.
pub use crate::config::PoolSettings;

/// When the database last answered anything (a result, or an error of its own such
/// as a lock timeout), and when it was last found down; shared by every clone of a
/// store.
#[derive(Debug, Clone)]
pub struct Health {
    answered_ms: Arc<AtomicI64>,
    failed_ms: Arc<AtomicI64>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            answered_ms: Arc::new(AtomicI64::new(i64::MIN)),
            failed_ms: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }
}

impl Health {
    /// The database just answered.
    pub fn answered(&self) {
        self.answered_ms
            .fetch_max(crate::clock::now_ms(), Ordering::Relaxed);
    }

    /// The database was just found down (not merely slow).
    pub fn failed(&self) {
        self.failed_ms
            .fetch_max(crate::clock::now_ms(), Ordering::Relaxed);
    }

    /// Whether it answered at or after `since_ms` (Unix ms).
    pub fn answered_since(&self, since_ms: i64) -> bool {
        self.answered_ms.load(Ordering::Relaxed) >= since_ms
    }

    /// Whether it was found down and has not answered since: an outage stays one
    /// until the database answers, rather than looking like load between failures.
    pub fn down(&self) -> bool {
        self.failed_ms.load(Ordering::Relaxed) > self.answered_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_seen_by_every_clone() {
        let health = Health::default();
        let start = crate::clock::now_ms();
        assert!(!health.answered_since(start));
        health.clone().answered();
        assert!(health.answered_since(start));
        assert!(!health.answered_since(crate::clock::now_ms() + 60_000));
    }

    #[test]
    fn down_lasts_until_the_next_answer() {
        let health = Health::default();
        assert!(!health.down());
        health.failed();
        assert!(health.down());
        // Answers in the same millisecond as the failure count as later.
        health.answered();
        assert!(!health.down());
    }
}
