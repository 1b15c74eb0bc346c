//! Sharing cooldowns and headroom views between replicas through Redis. A background
//! task, every `routing.sync_interval`, sends what changed here and reads back what
//! every replica knows, in one atomic script call per kind of state (`sync.lua`).
//! Requests never wait on it: they read the memory this task keeps current.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};

use super::cooldown::Cooldowns;
use super::headroom::Headroom;
use super::share::Wire;
use crate::clock::now_ms;

/// The hashes, one per kind of state; `v1` is the script's value format.
pub const COOLDOWNS_KEY: &str = "tollgate:route:v1:cooldowns";
pub const HEADROOM_KEY: &str = "tollgate:route:v1:headroom";

/// Separates upstream and model in a field: neither a name nor a model holds it.
const SEPARATOR: char = '\u{1f}';

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

pub struct Sync {
    connection: ConnectionManager,
    script: Script,
    timeout: Duration,
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sync")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Sync {
    /// Connects lazily: a Redis down at start is an outage, not a start-up failure.
    pub fn new(url: &str, timeout: Duration, names: Vec<String>) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            script: Script::new(include_str!("sync.lua")),
            timeout,
            names,
            index,
        })
    }

    fn field(&self, upstream: usize, model: &str) -> String {
        let name = self.names.get(upstream).map_or("", String::as_str);
        format!("{name}{SEPARATOR}{model}")
    }

    fn parse_field<'a>(&self, field: &'a str) -> Option<(usize, &'a str)> {
        let (name, model) = field.split_once(SEPARATOR)?;
        Some((*self.index.get(name)?, model))
    }

    async fn call(
        &self,
        key: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<Vec<String>, SyncError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(key).arg(now_ms());
        for (field, value) in pairs {
            invocation.arg(field).arg(value);
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(answer) => Ok(answer?),
            Err(_elapsed) => Err(SyncError::Timeout(self.timeout)),
        }
    }

    /// Sends this replica's new cooldowns and reads everyone's; what could not be sent
    /// goes with the next sync.
    pub async fn cooldowns(&self, cooldowns: &Cooldowns) -> Result<(), SyncError> {
        let taken = cooldowns.take_dirty();
        let pairs = taken
            .iter()
            .map(|(upstream, model, until_ms)| {
                (
                    self.field(*upstream, model),
                    format!("{until_ms}|{until_ms}|"),
                )
            })
            .collect();
        let live = match self.call(COOLDOWNS_KEY, pairs).await {
            Ok(live) => live,
            Err(error) => {
                cooldowns.requeue(&taken);
                return Err(error);
            }
        };
        for pair in live.chunks_exact(2) {
            let Some((upstream, model)) = self.parse_field(&pair[0]) else {
                continue;
            };
            let until = pair[1]
                .split('|')
                .next()
                .and_then(|t| t.parse::<i64>().ok());
            if let Some(until_ms) = until {
                cooldowns.merge(upstream, model, until_ms);
            }
        }
        Ok(())
    }

    /// Sends this replica's new headroom views and takes any newer ones. A view that
    /// could not be sent is not resent: the next answer brings a fresher one.
    pub async fn headroom(&self, headroom: &Headroom) -> Result<(), SyncError> {
        let pairs = headroom
            .take_dirty()
            .into_iter()
            .filter_map(|(upstream, model, wire)| {
                let payload = serde_json::to_string(&wire).ok()?;
                let value = format!("{}|{}|{payload}", wire.observed_ms, wire.expires_ms());
                Some((self.field(upstream, &model), value))
            })
            .collect();
        let live = self.call(HEADROOM_KEY, pairs).await?;
        for pair in live.chunks_exact(2) {
            let Some((upstream, model)) = self.parse_field(&pair[0]) else {
                continue;
            };
            let payload = pair[1].splitn(3, '|').nth(2).unwrap_or_default();
            if let Ok(wire) = serde_json::from_str::<Wire>(payload) {
                headroom.merge(upstream, model, &wire);
            }
        }
        Ok(())
    }
}
