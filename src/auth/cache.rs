//! The in-memory key cache: the request path looks keys up here, never in the database.
//! A background task polls the change counter and reloads everything when it moves, so
//! a revocation on any replica is honoured everywhere within one poll interval.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use super::store::{self, KeyRecord, TeamRecord};
use super::{AuthError, secret};
use crate::error::ApiError;
use crate::ledger::Store;

/// A key with its team, as the request path needs them.
#[derive(Debug)]
pub struct KeyEntry {
    pub key: KeyRecord,
    pub team: Arc<TeamRecord>,
}

#[derive(Default)]
struct Snapshot {
    /// `None` until the first load succeeds.
    epoch: Option<i64>,
    keys: HashMap<[u8; 32], Arc<KeyEntry>>,
}

/// Cheap to clone; every clone sees the same snapshot.
#[derive(Clone, Default)]
pub struct KeyCache {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    changed: Arc<Notify>,
}

impl KeyCache {
    /// The live key for a bearer, or the 401 to answer.
    pub fn check(&self, token: &str, now_ms: i64) -> Result<Arc<KeyEntry>, ApiError> {
        let snapshot = self.current();
        if snapshot.epoch.is_none() {
            return Err(ApiError::KeysUnavailable);
        }
        let unknown = ApiError::InvalidApiKey {
            reason: "Incorrect API key provided. Use a tollgate key (tg-…) issued by your \
                     gateway's administrator.",
        };
        if !secret::looks_like_key(token) {
            return Err(unknown);
        }
        let entry = snapshot.keys.get(&secret::hash(token)).ok_or(unknown)?;
        if entry.key.revoked_ms.is_some() {
            return Err(ApiError::InvalidApiKey {
                reason: "This API key has been revoked.",
            });
        }
        if entry
            .key
            .expires_ms
            .is_some_and(|expires| expires <= now_ms)
        {
            return Err(ApiError::InvalidApiKey {
                reason: "This API key has expired.",
            });
        }
        Ok(entry.clone())
    }

    pub fn is_loaded(&self) -> bool {
        self.current().epoch.is_some()
    }

    /// Asks the refresher to reload now (after a change made through this replica).
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        match self.snapshot.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Loads once if the change counter moved since the last load.
    pub async fn refresh(&self, store: &Store) -> Result<bool, AuthError> {
        // Read the counter first: a change landing during the load moves it again, so
        // the next poll reloads; the cache can lag by one interval, never miss a change.
        let epoch = store::epoch(store).await?;
        if self.current().epoch == Some(epoch) {
            return Ok(false);
        }
        let teams: HashMap<String, Arc<TeamRecord>> = store::list_teams(store)
            .await?
            .into_iter()
            .map(|team| (team.id.clone(), Arc::new(team)))
            .collect();
        let keys = store::list_keys(store, None)
            .await?
            .into_iter()
            .filter_map(|key| {
                let team = teams.get(&key.team_id)?.clone();
                Some((key.hash, Arc::new(KeyEntry { key, team })))
            })
            .collect();
        self.replace(Snapshot {
            epoch: Some(epoch),
            keys,
        });
        Ok(true)
    }

    /// Polls every `interval` (and at once after a local change) until the process ends.
    pub fn spawn_refresher(&self, store: Store, interval: Duration) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match cache.refresh(&store).await {
                    Ok(reloaded) => {
                        if failing {
                            tracing::info!("key store reachable again");
                        }
                        if reloaded {
                            tracing::debug!(keys = cache.current().keys.len(), "keys reloaded");
                        }
                        failing = false;
                    }
                    Err(error) => {
                        // Keep serving from the last good snapshot; say so once.
                        if !failing {
                            tracing::warn!(%error, "cannot refresh keys; using the cached keys");
                        }
                        failing = true;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = cache.changed.notified() => {}
                }
            }
        })
    }
}
