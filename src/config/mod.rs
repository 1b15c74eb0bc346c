//! Configuration: defaults, then the TOML file, then environment overrides. Loading takes
//! the environment as a map so tests never touch the process environment. Validation
//! gathers every problem with its dotted path and start-up fails once with the list.

mod auth;
mod batch;
mod database;
mod limits;
mod log;
mod metrics;
mod pricing;
mod reconcile;
mod routes;
mod routing;
mod secret;
mod server;
mod upstream;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use auth::{AuthConfig, AuthMode, BUILTIN_TIERS, BudgetConfig, StoreFailure};
pub use batch::BatchConfig;
pub use database::{DatabaseConfig, LedgerConfig, PoolSettings, WriterPriority};
pub use limits::{LimitsBackend, LimitsConfig, RateFigures, TierConfig};
pub use log::{LogConfig, LogFormat};
pub use metrics::MetricsConfig;
pub use pricing::{PricingConfig, UnknownModelPolicy};
pub use reconcile::{OPENAI_HOST, ReconcileConfig, Tolerance};
pub use routes::{ResolvedRoute, RouteConfig, TargetConfig, resolve_routes, upstream_for};
pub use routing::{
    DowngradeConfig, DowngradeScope, HeadroomConfig, RoutingConfig, ShadowConfig, TeamConfig,
    shadow_upstream,
};
pub use secret::Secret;
pub use server::{DisconnectPolicy, ServerConfig};
pub use upstream::{ProviderKind, UpstreamConfig, pattern_shadows};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub budgets: BudgetConfig,
    pub limits: LimitsConfig,
    pub database: DatabaseConfig,
    pub ledger: LedgerConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub pricing: PricingConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub batch: BatchConfig,
    /// Aliases and their targets (`[[routes]]`).
    pub routes: Vec<RouteConfig>,
    pub routing: RoutingConfig,
    /// Routing settings of teams, by name (`[teams.<name>]`).
    pub teams: std::collections::BTreeMap<String, TeamConfig>,
    pub downgrades: Vec<DowngradeConfig>,
    pub shadow: Vec<ShadowConfig>,
    pub reconcile: ReconcileConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            budgets: BudgetConfig::default(),
            limits: LimitsConfig::default(),
            database: DatabaseConfig::default(),
            ledger: LedgerConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            pricing: PricingConfig::default(),
            upstreams: vec![UpstreamConfig::openai()],
            batch: BatchConfig::default(),
            routes: Vec::new(),
            routing: RoutingConfig::default(),
            teams: std::collections::BTreeMap::new(),
            downgrades: Vec::new(),
            shadow: Vec::new(),
            reconcile: ReconcileConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Syntax {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<serde_path_to_error::Error<toml::de::Error>>,
    },
    #[error("invalid configuration:\n{0}")]
    Invalid(Problems),
}

/// Every validation failure, each as `dotted.path: reason`.
#[derive(Debug, Default)]
pub struct Problems(Vec<(String, String)>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push((path.into(), reason.into()));
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(path, _)| path.as_str())
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (path, reason) in &self.0 {
            writeln!(f, "  {path}: {reason}")?;
        }
        Ok(())
    }
}

/// Environment variables that override single settings, for containers.
pub const ENV_CONFIG: &str = "TOLLGATE_CONFIG";
pub const ENV_LISTEN: &str = "TOLLGATE_LISTEN";
pub const ENV_DATABASE_URL: &str = "TOLLGATE_DATABASE_URL";
pub const ENV_UPSTREAM_URL: &str = "TOLLGATE_UPSTREAM_URL";
/// The Redis server of the `redis` limits backend (`limits.redis_url`).
pub const ENV_REDIS_URL: &str = "TOLLGATE_REDIS_URL";
/// The admin API's bearer key; the admin API is closed when it is unset.
pub const ENV_ADMIN_KEY: &str = "TOLLGATE_ADMIN_KEY";
/// The bearer `/metrics` asks for (`metrics.bearer_token`).
pub const ENV_METRICS_TOKEN: &str = "TOLLGATE_METRICS_TOKEN";

impl Config {
    /// Loads the file named by `path` (or `TOLLGATE_CONFIG`, or none: defaults), applies
    /// the environment overrides, and validates.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.get(ENV_CONFIG).map(PathBuf::from));
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_toml(&text, &path.display().to_string())?
            }
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Parses TOML; an error names the file and the dotted path of the bad field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let deserializer =
            crate::pricing::exact_toml(text).map_err(|source| ConfigError::Syntax {
                path: origin.to_owned(),
                source: Box::new(source),
            })?;
        serde_path_to_error::deserialize(deserializer).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source: Box::new(source),
        })
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        if let Some(listen) = env.get(ENV_LISTEN) {
            match listen.parse() {
                Ok(addr) => self.server.listen = addr,
                Err(_) => {
                    problems.push(ENV_LISTEN, format!("`{listen}` is not an IP:port address"))
                }
            }
        }
        if let Some(url) = env.get(ENV_DATABASE_URL) {
            self.database.url.clone_from(url);
        }
        if let Some(url) = env.get(ENV_REDIS_URL) {
            self.limits.redis_url.clone_from(url);
        }
        // Empty, as an unset variable in a compose file expands to: no protection.
        if let Some(token) = env.get(ENV_METRICS_TOKEN).filter(|t| !t.is_empty()) {
            self.metrics.bearer_token = Some(Secret::new(token.clone()));
        }
        if let Some(url) = env.get(ENV_UPSTREAM_URL) {
            match self.upstreams.first_mut() {
                Some(first) => first.base_url.clone_from(url),
                None => self.upstreams.push(UpstreamConfig {
                    base_url: url.clone(),
                    ..UpstreamConfig::openai()
                }),
            }
        }
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if self.server.max_body_bytes == 0 {
            problems.push("server.max_body_bytes", "must be greater than 0");
        }
        if self.server.max_upload_bytes == 0 {
            problems.push("server.max_upload_bytes", "must be greater than 0");
        }
        if self.server.header_read_timeout.is_zero() {
            // Zero would close every connection before its first request.
            problems.push("server.header_read_timeout", "must be greater than 0");
        }
        if self.server.idle_timeout.is_zero() {
            problems.push("server.idle_timeout", "must be greater than 0");
        }
        let url = &self.database.url;
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            problems.push(
                "database.url",
                format!("unsupported database URL `{url}`: expected sqlite://PATH or postgres://…"),
            );
        }
        if self.database.max_connections == Some(0) {
            problems.push("database.max_connections", "must be greater than 0");
        }
        if self.database.acquire_timeout.is_zero() {
            problems.push("database.acquire_timeout", "must be greater than 0");
        }
        if self.ledger.queue_capacity == 0 {
            problems.push("ledger.queue_capacity", "must be greater than 0");
        }
        if !(1..=100).contains(&self.budgets.soft_threshold_percent) {
            problems.push(
                "budgets.soft_threshold_percent",
                "must be between 1 and 100",
            );
        }
        if let Some(url) = &self.budgets.webhook_url {
            if url::Url::parse(url).is_err() {
                problems.push("budgets.webhook_url", format!("`{url}` is not a URL"));
            }
        }
        self.limits.validate(&mut problems);
        self.batch.validate(&mut problems);
        self.reconcile.validate(&self.upstreams, &mut problems);
        if self
            .metrics
            .bearer_token
            .as_ref()
            .is_some_and(|token| token.expose().trim().is_empty())
        {
            problems.push("metrics.bearer_token", "must not be empty when set");
        }
        if self.auth.refresh_interval.is_zero() {
            problems.push("auth.refresh_interval", "must be greater than 0");
        }
        if self.ledger.batch_size == 0 {
            problems.push("ledger.batch_size", "must be greater than 0");
        }
        if self.ledger.spill_dir.as_os_str().is_empty() {
            problems.push("ledger.spill_dir", "must not be empty");
        }
        if self.ledger.spill_retry_interval.is_zero() {
            problems.push("ledger.spill_retry_interval", "must be greater than 0");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            problems.push(
                "log.filter",
                format!("`{}` is not a valid filter", self.log.filter),
            );
        }
        if self.upstreams.is_empty() {
            problems.push("upstreams", "at least one upstream is required");
        }
        let mut names = std::collections::HashSet::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let at = |field: &str| format!("upstreams[{i}].{field}");
            if upstream.name.is_empty() {
                problems.push(at("name"), "must not be empty");
            } else if !names.insert(upstream.name.as_str()) {
                problems.push(
                    at("name"),
                    format!("duplicate upstream name `{}`", upstream.name),
                );
            }
            match reqwest::Url::parse(&upstream.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => problems.push(
                    at("base_url"),
                    format!("`{}` is not an http(s) URL", upstream.base_url),
                ),
            }
            if upstream.models.is_empty() {
                problems.push(
                    at("models"),
                    "needs at least one pattern (\"*\" matches all)",
                );
            }
            for (j, pattern) in upstream.models.iter().enumerate() {
                if let Err(error) = glob::Pattern::new(pattern) {
                    problems.push(format!("upstreams[{i}].models[{j}]"), error.to_string());
                }
            }
            upstream::validate_kind(upstream, &at, &mut problems);
            for (field, value) in [
                ("connect_timeout", upstream.connect_timeout),
                ("first_byte_timeout", upstream.first_byte_timeout),
                ("total_timeout", upstream.total_timeout),
            ] {
                if value.is_zero() {
                    problems.push(at(field), "must be greater than 0");
                }
            }
        }
        upstream::validate_overlaps(&self.upstreams, &mut problems);
        routing::validate(self, &mut problems);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_forward_to_openai_with_embedded_sqlite() {
        let config = Config::load(None, &HashMap::new()).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database.url, "sqlite://tollgate.db");
        assert_eq!(config.upstreams[0].base_url, "https://api.openai.com/v1");
        assert_eq!(
            config.upstreams[0].api_key_env.as_deref(),
            Some("OPENAI_API_KEY")
        );
        assert_eq!(config.server.max_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let text = include_str!("../../config.example.toml");
        let config = Config::from_toml(text, "config.example.toml").unwrap();
        config.validate().unwrap();
        assert!(
            config.upstreams.len() >= 2,
            "the example shows a second upstream"
        );
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let config = Config::load(
            None,
            &env(&[
                (ENV_CONFIG, path.to_str().unwrap()),
                (ENV_LISTEN, "0.0.0.0:8181"),
                (ENV_DATABASE_URL, "sqlite:///tmp/x.db"),
                (ENV_UPSTREAM_URL, "http://127.0.0.1:1/v1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8181");
        assert_eq!(config.database.url, "sqlite:///tmp/x.db");
        assert_eq!(config.upstreams[0].base_url, "http://127.0.0.1:1/v1");
    }

    #[test]
    fn a_bad_field_is_named_with_its_path() {
        let error =
            Config::from_toml("[server]\nmax_body_bytes = \"lots\"\n", "t.toml").unwrap_err();
        assert!(
            error.to_string().contains("server.max_body_bytes"),
            "{error}"
        );
        let error = Config::from_toml("[server]\nlisten_on = 1\n", "t.toml").unwrap_err();
        assert!(error.to_string().contains("listen_on"), "{error}");
        let error =
            Config::from_toml("[[upstreams]]\ntotal_timeout = \"ten\"\n", "t.toml").unwrap_err();
        assert!(
            error.to_string().contains("upstreams[0].total_timeout"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_price_is_named_with_its_model_and_field() {
        let error = Config::from_toml("[pricing.models.\"gpt-4o\"]\ninput = \"-0.15\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("pricing.models.gpt-4o.input"), "{error}");
        assert!(error.contains("negative"), "{error}");
        let error = Config::from_toml("[pricing.models.\"m\"]\noutput = \"cheap\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("pricing.models.m.output"), "{error}");
    }

    #[test]
    fn a_prices_file_merges_under_the_config_and_its_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.toml");
        std::fs::write(
            &file,
            "[models.\"house-model\"]\ninput = \"1\"\noutput = \"2\"\n",
        )
        .unwrap();
        let mut config = Config::default();
        config.pricing.file = Some(file.clone());
        let catalog = config.pricing.catalog().unwrap();
        assert!(catalog.get("house-model").is_some());
        std::fs::write(&file, "[models.\"house-model\"]\ninput = \"-1\"\n").unwrap();
        let error = config.pricing.catalog().unwrap_err().to_string();
        assert!(
            error.contains("prices.toml") && error.contains("house-model"),
            "{error}"
        );
    }

    #[test]
    fn validation_lists_every_problem() {
        let config = Config::from_toml(
            r#"
[server]
header_read_timeout = "0s"
idle_timeout = "0s"
[database]
url = "mysql://x"
max_connections = 0
acquire_timeout = "0s"
[[upstreams]]
name = "a"
base_url = "ftp://x"
models = ["[unclosed"]
[[upstreams]]
name = "a"
total_timeout = "0s"
"#,
            "t.toml",
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        let paths: Vec<&str> = problems.paths().collect();
        assert_eq!(
            paths,
            [
                "server.header_read_timeout",
                "server.idle_timeout",
                "database.url",
                "database.max_connections",
                "database.acquire_timeout",
                "upstreams[0].base_url",
                "upstreams[0].models[0]",
                "upstreams[1].name",
                "upstreams[1].total_timeout",
            ]
        );
    }

    #[test]
    fn an_unknown_tier_fails_validation_naming_its_path() {
        let config = Config::from_toml(
            "[limits]\ndefault_tier = \"gold\"\n[limits.models.\"[x\"]\nrpm = 1\n",
            "t.toml",
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        let paths: Vec<&str> = problems.paths().collect();
        assert_eq!(paths, ["limits.default_tier", "limits.models.[x"]);
        assert!(
            problems.to_string().contains("unknown tier `gold`"),
            "{problems}"
        );
        // A custom tier makes the name known.
        let config = Config::from_toml(
            "[limits]\ndefault_tier = \"gold\"\n[limits.tiers.gold]\nrpm = 5\ntpd = 100\n\
             [limits.tiers.gold.models.\"gpt-4o*\"]\ntpm = 10\n\
             [limits.tiers.gold.team_total]\nrpm = 900\n\
             [limits.key_total]\ntpm = 70000\n",
            "t.toml",
        )
        .unwrap();
        config.validate().unwrap();
        assert!(config.limits.tier_names().contains(&"gold".to_owned()));
        assert_eq!(config.limits.tiers["gold"].tpd, Some(100));
        assert_eq!(config.limits.tiers["gold"].models["gpt-4o*"].tpm, Some(10));
        assert_eq!(config.limits.tiers["gold"].team_total.rpm, Some(900));
        assert_eq!(config.limits.key_total.tpm, Some(70_000));
        // A misspelt figure in a total is named, not ignored.
        let error = Config::from_toml("[limits.team_total]\nrmp = 5\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("limits.team_total"), "{error}");
    }

    #[test]
    fn the_redis_backend_is_checked_naming_its_fields() {
        let config = Config::from_toml(
            "[limits]\nbackend = \"redis\"\nredis_url = \"http://cache:6379\"\n\
             redis_timeout = \"0s\"\n",
            "t.toml",
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        let paths: Vec<&str> = problems.paths().collect();
        assert_eq!(paths, ["limits.redis_url", "limits.redis_timeout"]);
        let error = Config::from_toml("[limits]\non_redis_error = \"retry\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("limits.on_redis_error"), "{error}");
        let error = Config::from_toml("[limits]\nbackend = \"memcached\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("limits.backend"), "{error}");
        let config = Config::load(None, &env(&[(ENV_REDIS_URL, "redis://cache:6380/2")])).unwrap();
        assert_eq!(config.limits.redis_url, "redis://cache:6380/2");
        assert_eq!(config.limits.backend, LimitsBackend::Local);
        assert_eq!(config.limits.on_redis_error, StoreFailure::FailOpen);
    }

    #[test]
    fn the_metrics_section_parses_and_its_token_comes_from_the_environment() {
        let config = Config::from_toml(
            "[metrics]\nper_key_labels = false\nbearer_token = \"from-file\"\n",
            "t.toml",
        )
        .unwrap();
        assert!(!config.metrics.per_key_labels);
        assert_eq!(
            config.metrics.bearer_token.as_ref().map(Secret::expose),
            Some("from-file")
        );
        assert_eq!(
            format!("{:?}", config.metrics.bearer_token),
            "Some(Secret(***))"
        );
        let config = Config::load(None, &env(&[(ENV_METRICS_TOKEN, "from-env")])).unwrap();
        assert!(config.metrics.per_key_labels, "on by default");
        assert_eq!(
            config.metrics.bearer_token.as_ref().map(Secret::expose),
            Some("from-env")
        );
        let config = Config::load(None, &env(&[(ENV_METRICS_TOKEN, "")])).unwrap();
        assert!(config.metrics.bearer_token.is_none(), "empty means unset");
        let config = Config::from_toml("[metrics]\nbearer_token = \" \"\n", "t.toml").unwrap();
        let paths: Vec<String> = config
            .validate()
            .unwrap_err()
            .paths()
            .map(str::to_owned)
            .collect();
        assert_eq!(paths, ["metrics.bearer_token"]);
    }

    #[test]
    fn a_bad_listen_override_is_named() {
        let error = Config::load(None, &env(&[(ENV_LISTEN, "nope")])).unwrap_err();
        assert!(error.to_string().contains(ENV_LISTEN), "{error}");
    }
}
