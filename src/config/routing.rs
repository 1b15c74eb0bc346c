//! Routing: `[[routes]]` (aliases and their ordered targets), `[routing]` (fallback and
//! organisation-headroom settings), `[teams.<name>]` (each team's share of the
//! upstreams' limits), `[[downgrades]]` (budget-aware model maps) and `[[shadow]]`
//! (comparisons against a candidate model). All of it is off unless configured.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::routes::{resolve_routes, upstream_for, upstream_named};
use super::{Problems, UpstreamConfig};

/// `[routing]`: fallbacks, cooldowns, sharing state across replicas, headroom, shadows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Upstream calls per routed request, first attempt included (1: no fallback).
    pub max_attempts: u32,
    /// The longest an upstream's `retry-after` keeps a target skipped: a server that
    /// says "come back in a day" is asked again sooner.
    #[serde(with = "humantime_serde")]
    pub max_cooldown: Duration,
    /// Share cooldowns and headroom with the other replicas through the Redis of
    /// `limits.redis_url`. Only with `limits.backend = "redis"`.
    pub share: bool,
    /// How often this replica sends its cooldowns and headroom to Redis and reads the
    /// others'. Requests never wait on Redis; they read what the last sync brought.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    pub headroom: HeadroomConfig,
    /// Shadow requests in flight at once; a sampled request beyond it is not mirrored.
    pub shadow_max_in_flight: usize,
    /// The longest one shadow request may take, start to end.
    #[serde(with = "humantime_serde")]
    pub shadow_timeout: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_cooldown: Duration::from_secs(300),
            share: true,
            sync_interval: Duration::from_millis(500),
            headroom: HeadroomConfig::default(),
            shadow_max_in_flight: 8,
            shadow_timeout: Duration::from_secs(120),
        }
    }
}

/// `[routing.headroom]`: admission by team share once an upstream's organisation-wide
/// limit runs low. Off until a reserve is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadroomConfig {
    /// Below this many remaining requests (as the upstream last reported, less what
    /// tollgate has sent since), requests are admitted by team share.
    pub reserve_requests: Option<u64>,
    /// The same for remaining tokens.
    pub reserve_tokens: Option<u64>,
    /// The same as a percentage of the upstream's reported limit (when it reports one).
    pub reserve_percent: Option<u8>,
    /// How long a request over its team's share waits for headroom before its 429.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// The share of a team not listed under `[teams]`, and of passthrough callers.
    pub default_share: u32,
}

impl Default for HeadroomConfig {
    fn default() -> Self {
        Self {
            reserve_requests: None,
            reserve_tokens: None,
            reserve_percent: None,
            queue_timeout: Duration::from_secs(5),
            default_share: 1,
        }
    }
}

impl HeadroomConfig {
    /// Whether any reserve is set: only then is anything rationed.
    pub fn rationing(&self) -> bool {
        self.reserve_requests.is_some()
            || self.reserve_tokens.is_some()
            || self.reserve_percent.is_some()
    }
}

/// `[teams.<name>]`: routing settings of a team (teams themselves live in the
/// database; this names them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamConfig {
    /// Weight in the split of an upstream's headroom under its reserve.
    pub share: Option<u32>,
}

/// Whose budget a downgrade watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DowngradeScope {
    /// The key's own budget, or its team's: whichever passes the threshold first.
    #[default]
    Any,
    Key,
    Team,
}

/// `[[downgrades]]`: past `threshold_percent` of a budget, serve cheaper models.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DowngradeConfig {
    pub budget: DowngradeScope,
    /// Only callers of these teams (by name); every team when empty.
    pub teams: Vec<String>,
    /// Spent plus reserved, as a percentage of the budget, from which it applies.
    pub threshold_percent: u8,
    /// Model asked for → model served.
    pub models: BTreeMap<String, String>,
}

impl Default for DowngradeConfig {
    fn default() -> Self {
        Self {
            budget: DowngradeScope::Any,
            teams: Vec::new(),
            threshold_percent: 80,
            models: BTreeMap::new(),
        }
    }
}

/// `[[shadow]]`: mirror a sample of `model`'s non-streamed requests to `candidate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowConfig {
    pub model: String,
    pub candidate: String,
    /// The share of requests mirrored, 0 to 1.
    #[serde(deserialize_with = "sample")]
    pub sample: f64,
    /// The upstream of the candidate; by the upstreams' `models` patterns if unset.
    pub upstream: Option<String>,
}

/// A sampling share. The config's TOML reads floats as their text (prices must never
/// pass through an f64), so a share arrives as `"0.01"`, or as an integer (`1`).
fn sample<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    struct Share;
    impl Visitor<'_> for Share {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number from 0 to 1")
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
            Ok(value)
        }

        #[expect(clippy::cast_precision_loss, reason = "a share, not money")]
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
            Ok(value as f64)
        }

        #[expect(clippy::cast_precision_loss, reason = "a share, not money")]
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
            Ok(value as f64)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<f64, E> {
            text.trim()
                .parse()
                .map_err(|_| E::custom(format!("`{text}` is not a number from 0 to 1")))
        }
    }
    deserializer.deserialize_any(Share)
}

/// Checks every routing section; problems are named by their dotted paths.
pub(super) fn validate(config: &super::Config, problems: &mut Problems) {
    let routing = &config.routing;
    let upstreams = &config.upstreams;
    if routing.max_attempts == 0 {
        problems.push("routing.max_attempts", "must be at least 1");
    }
    if routing.max_cooldown.is_zero() {
        problems.push("routing.max_cooldown", "must be greater than 0");
    }
    if routing.sync_interval.is_zero() {
        problems.push("routing.sync_interval", "must be greater than 0");
    }
    if routing.shadow_max_in_flight == 0 {
        problems.push("routing.shadow_max_in_flight", "must be at least 1");
    }
    if routing.shadow_timeout.is_zero() {
        problems.push("routing.shadow_timeout", "must be greater than 0");
    }
    let headroom = &routing.headroom;
    if headroom
        .reserve_percent
        .is_some_and(|p| !(1..=100).contains(&p))
    {
        problems.push(
            "routing.headroom.reserve_percent",
            "must be between 1 and 100",
        );
    }
    if headroom.default_share == 0 {
        problems.push(
            "routing.headroom.default_share",
            "must be at least 1 (a weight of 0 would never be admitted under the reserve)",
        );
    }
    if headroom.queue_timeout > Duration::from_secs(600) {
        problems.push("routing.headroom.queue_timeout", "must be at most 10m");
    }
    for (name, team) in &config.teams {
        if name.trim().is_empty() {
            problems.push("teams", "a team name must not be empty");
        }
        if team.share == Some(0) {
            problems.push(
                format!("teams.{name}.share"),
                "must be at least 1 (a weight of 0 would never be admitted under the reserve)",
            );
        }
    }
    if let Err(found) = resolve_routes(&config.routes, routing.max_attempts.max(1), upstreams) {
        problems.0.extend(found.0);
    }
    for (i, downgrade) in config.downgrades.iter().enumerate() {
        let at = |field: &str| format!("downgrades[{i}].{field}");
        if !(1..=100).contains(&downgrade.threshold_percent) {
            problems.push(at("threshold_percent"), "must be between 1 and 100");
        }
        if downgrade.models.is_empty() {
            problems.push(at("models"), "needs at least one `from = \"to\"` pair");
        }
        for (from, to) in &downgrade.models {
            if from == to {
                problems.push(
                    format!("downgrades[{i}].models.{from}"),
                    "maps a model to itself",
                );
            } else if upstream_for(upstreams, to).is_none() {
                problems.push(
                    format!("downgrades[{i}].models.{from}"),
                    format!("no upstream serves `{to}`"),
                );
            }
        }
    }
    for (i, shadow) in config.shadow.iter().enumerate() {
        let at = |field: &str| format!("shadow[{i}].{field}");
        if shadow.model.trim().is_empty() {
            problems.push(at("model"), "must not be empty");
        }
        if shadow.candidate.trim().is_empty() {
            problems.push(at("candidate"), "must not be empty");
        } else if shadow.candidate == shadow.model {
            problems.push(at("candidate"), "is the model itself");
        }
        if !(0.0..=1.0).contains(&shadow.sample) {
            problems.push(
                at("sample"),
                format!(
                    "{} is outside 0..1 (0.01 mirrors one request in a hundred)",
                    shadow.sample
                ),
            );
        }
        match &shadow.upstream {
            Some(name) if upstream_named(upstreams, name).is_none() => {
                problems.push(at("upstream"), format!("unknown upstream `{name}`"));
            }
            Some(_) => {}
            None if upstream_for(upstreams, &shadow.candidate).is_none()
                && !shadow.candidate.trim().is_empty() =>
            {
                problems.push(
                    at("candidate"),
                    format!("no upstream serves `{}`", shadow.candidate),
                );
            }
            None => {}
        }
    }
}

/// The shadow's candidate upstream, by name or by pattern (validated at start).
pub fn shadow_upstream(shadow: &ShadowConfig, upstreams: &[UpstreamConfig]) -> Option<usize> {
    match &shadow.upstream {
        Some(name) => upstream_named(upstreams, name),
        None => upstream_for(upstreams, &shadow.candidate),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn problems(text: &str) -> Vec<String> {
        let config = Config::from_toml(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(problems) => problems.paths().map(str::to_owned).collect(),
        }
    }

    const UPSTREAMS: &str = r#"
[[upstreams]]
name = "openai"
base_url = "https://api.openai.com/v1"
models = ["gpt-*", "o*"]
[[upstreams]]
name = "azure"
base_url = "https://example.openai.azure.com/openai"
models = ["azure-*"]
"#;

    #[test]
    fn aliases_expand_in_order_and_pinned_targets_go_as_they_are() {
        let text = format!(
            r#"{UPSTREAMS}
[[routes]]
alias = "smart"
targets = ["gpt-4.1", {{ model = "gpt-4o", upstream = "azure" }}, "cheap"]
[[routes]]
alias = "cheap"
targets = ["gpt-4o-mini", "gpt-4.1"]
max_attempts = 1
[[routes]]
alias = "gpt-4o"
targets = [{{ model = "gpt-4o", upstream = "openai" }}, {{ model = "gpt-4o", upstream = "azure" }}]
"#
        );
        let config = Config::from_toml(&text, "t.toml").unwrap();
        config.validate().unwrap();
        let routes = super::resolve_routes(&config.routes, 3, &config.upstreams).unwrap();
        let pairs = |i: usize| -> Vec<(usize, &str)> {
            routes[i]
                .targets
                .iter()
                .map(|(u, m)| (*u, m.as_str()))
                .collect()
        };
        // `cheap`'s gpt-4.1 is already in `smart`: once is enough.
        assert_eq!(
            pairs(0),
            [(0, "gpt-4.1"), (1, "gpt-4o"), (0, "gpt-4o-mini")]
        );
        assert_eq!(routes[0].max_attempts, 3);
        assert_eq!(routes[1].max_attempts, 1);
        assert_eq!(pairs(2), [(0, "gpt-4o"), (1, "gpt-4o")]);
    }

    #[test]
    fn loops_unknown_upstreams_zero_weights_and_bad_samples_are_named() {
        let text = format!(
            r#"{UPSTREAMS}
[routing]
max_attempts = 0
[routing.headroom]
reserve_percent = 0
default_share = 0
[[routes]]
alias = "me"
targets = ["me"]
[[routes]]
alias = "a"
targets = ["b"]
[[routes]]
alias = "b"
targets = ["a"]
[[routes]]
alias = "c"
targets = [{{ model = "gpt-4o", upstream = "nowhere" }}, "llama-3"]
[[routes]]
alias = "c"
targets = []
[teams.batch]
share = 0
[[downgrades]]
threshold_percent = 0
models = {{ "gpt-4o" = "gpt-4o", "gpt-4.1" = "llama" }}
[[shadow]]
model = "gpt-4o-mini"
candidate = "gpt-4.1-nano"
sample = 1.5
[[shadow]]
model = "gpt-4o-mini"
candidate = "gpt-4o-mini"
sample = -0.1
upstream = "nowhere"
"#
        );
        let paths = problems(&text);
        for expected in [
            "routing.max_attempts",
            "routing.headroom.reserve_percent",
            "routing.headroom.default_share",
            "teams.batch.share",
            "routes[0].targets[0].model",
            "routes[1].targets[0].model",
            "routes[2].targets[0].model",
            "routes[3].targets[0].upstream",
            "routes[3].targets[1].model",
            "routes[4].alias",
            "routes[4].targets",
            "downgrades[0].threshold_percent",
            "downgrades[0].models.gpt-4o",
            "downgrades[0].models.gpt-4.1",
            "shadow[0].sample",
            "shadow[1].candidate",
            "shadow[1].sample",
            "shadow[1].upstream",
        ] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected} missing in {paths:?}"
            );
        }
        let config = Config::from_toml(&text, "t.toml").unwrap();
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("alias loop: me → me"), "{message}");
        assert!(message.contains("alias loop: a → b → a"), "{message}");
        assert!(message.contains("unknown upstream `nowhere`"), "{message}");
    }

    #[test]
    fn the_example_configs_routing_examples_parse_and_validate() {
        let text = include_str!("../../config.example.toml");
        let (_, examples) = text.split_once("# --- routing examples").unwrap();
        let (examples, _) = examples
            .split_once("# --- end of routing examples")
            .unwrap();
        let uncommented: String = examples
            .lines()
            .skip(1)
            .filter_map(|line| line.strip_prefix("# ").or(line.strip_prefix('#')))
            // TOML lines only: tables and `key = value`; the rest is prose.
            .filter(|line| {
                line.starts_with('[')
                    || line.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = Config::from_toml(&uncommented, "example")
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        config.validate().unwrap();
        assert_eq!(config.routes[0].alias, "smart");
        assert_eq!(config.teams["interactive"].share, Some(3));
        assert_eq!(config.downgrades[0].threshold_percent, 80);
        assert!((config.shadow[0].sample - 0.01).abs() < f64::EPSILON);
    }

    #[test]
    fn a_target_table_refuses_unknown_fields() {
        let error = Config::from_toml(
            "[[routes]]\nalias = \"x\"\ntargets = [{ model = \"m\", weight = 2 }]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("routes[0].targets[0]"), "{error}");
        assert!(error.contains("weight"), "{error}");
    }
}
