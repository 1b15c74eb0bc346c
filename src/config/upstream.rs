//! `[[upstreams]]`: where requests go, chosen by model name.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in logs and the ledger.
    pub name: String,
    /// Base URL including the version prefix, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the upstream's API key. When unset or
    /// empty, the client's own bearer is forwarded. No default in a file: a key is only
    /// ever sent to an upstream that names it, never to a second host by accident.
    pub api_key_env: Option<String>,
    /// Glob patterns over the request's model; the first upstream with a match wins.
    /// A request without a model is routed as if its model were "" (only `*` matches).
    pub models: Vec<String>,
    /// TCP + TLS connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response headers.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Time for the whole exchange, body and stream included.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
    /// Idle pooled connections kept per host.
    pub pool_max_idle_per_host: usize,
}

impl UpstreamConfig {
    /// The upstream used when no config file lists any: OpenAI with `OPENAI_API_KEY`.
    pub fn openai() -> Self {
        Self {
            api_key_env: Some("OPENAI_API_KEY".to_owned()),
            ..Self::default()
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            name: "openai".to_owned(),
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key_env: None,
            models: vec!["*".to_owned()],
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
            pool_max_idle_per_host: 256,
        }
    }
}
