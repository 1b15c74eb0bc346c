//! `[[upstreams]]`: where requests go, chosen by model name.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which provider an upstream is: how tollgate authenticates to it, addresses it and
/// reads its usage. Every kind speaks OpenAI's chat completions shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    #[default]
    Openai,
    /// Azure OpenAI: `api-key` header; the v1 path, or deployments with `api-version`.
    Azure,
    /// Anthropic's OpenAI-compatible endpoint: `x-api-key` and `anthropic-version`.
    Anthropic,
    /// Gemini's OpenAI-compatible endpoint: bearer key.
    Gemini,
    /// vLLM, Ollama, llama.cpp, TGI: bearer optional.
    OpenaiCompatible,
}

impl ProviderKind {
    pub const ALL: [Self; 5] = [
        Self::Openai,
        Self::Azure,
        Self::Anthropic,
        Self::Gemini,
        Self::OpenaiCompatible,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::OpenaiCompatible => "openai_compatible",
        }
    }

    /// Hosted providers refuse unauthenticated calls, and tollgate will not forward a
    /// client's bearer to them: the key must be tollgate's own. OpenAI keeps its
    /// passthrough (the client's own OpenAI key); local servers often need none.
    pub fn needs_key(self) -> bool {
        matches!(self, Self::Azure | Self::Anthropic | Self::Gemini)
    }

    /// Whether tiktoken's encodings are this provider's own tokenizer. For the others
    /// an estimate is only an approximation.
    pub fn tiktoken_native(self) -> bool {
        matches!(self, Self::Openai | Self::Azure)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in logs and the ledger.
    pub name: String,
    /// The provider behind `base_url`: authentication, paths and usage follow it.
    pub kind: ProviderKind,
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
    /// A matching pattern `prefix/*` has its `prefix/` removed from the model before
    /// it is forwarded (`azure/gpt-4o` goes out as `gpt-4o`).
    pub strip_prefix: bool,
    /// Azure deployments, deployment name -> the model it serves. When set, requests
    /// go to `<base_url>/deployments/<deployment>/...?api-version=<api_version>` with
    /// the deployment as the body's model, and rows are priced as the real model.
    pub deployments: BTreeMap<String, String>,
    /// Azure's `api-version` query parameter for deployment paths.
    pub api_version: Option<String>,
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
            kind: ProviderKind::Openai,
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key_env: None,
            models: vec!["*".to_owned()],
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
            pool_max_idle_per_host: 256,
            strip_prefix: true,
            deployments: BTreeMap::new(),
            api_version: None,
        }
    }
}

/// Checks that depend on the kind: hosted providers need a key variable named, and
/// deployments only mean something to Azure.
pub(super) fn validate_kind(
    upstream: &UpstreamConfig,
    at: &dyn Fn(&str) -> String,
    problems: &mut super::Problems,
) {
    let kind = upstream.kind;
    let named = upstream
        .api_key_env
        .as_deref()
        .is_some_and(|var| !var.trim().is_empty());
    if kind.needs_key() && !named {
        problems.push(
            at("api_key_env"),
            format!(
                "kind `{}` needs the name of the variable holding its API key",
                kind.as_str()
            ),
        );
    }
    if kind != ProviderKind::Azure {
        if !upstream.deployments.is_empty() {
            problems.push(
                at("deployments"),
                "only an `azure` upstream has deployments",
            );
        }
        if upstream.api_version.is_some() {
            problems.push(
                at("api_version"),
                "only an `azure` upstream takes an api_version",
            );
        }
    }
    for (deployment, model) in &upstream.deployments {
        let clean = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        // The deployment becomes a path segment: nothing that could climb or split it.
        if !clean(deployment) || deployment.starts_with('.') || model.is_empty() {
            problems.push(
                format!("{}.{deployment}", at("deployments")),
                "a deployment name is letters, digits, `-`, `_` and `.`, and maps to a model",
            );
        }
    }
}

/// Refuses a pattern no request can ever reach because an earlier upstream's pattern
/// matches everything it does (`claude-*` before `claude-3*`): the first match wins,
/// so the later one would silently never route. A later bare `*` is the explicit
/// catch-all (and the pattern of upstreams reached only through `[[routes]]`), so it
/// is allowed anywhere.
pub(super) fn validate_overlaps(upstreams: &[UpstreamConfig], problems: &mut super::Problems) {
    for (i, later) in upstreams.iter().enumerate() {
        for (j, pattern) in later.models.iter().enumerate() {
            if pattern == "*" {
                continue;
            }
            let shadow = upstreams[..i].iter().enumerate().find_map(|(e, earlier)| {
                earlier
                    .models
                    .iter()
                    .find(|p| pattern_shadows(p, pattern))
                    .map(|p| (e, p))
            });
            if let Some((e, by)) = shadow {
                problems.push(
                    format!("upstreams[{i}].models[{j}]"),
                    format!(
                        "`{pattern}` is shadowed by `{by}` of upstreams[{e}] (`{}`), which is \
                         matched first: no request would reach it",
                        upstreams[e].name
                    ),
                );
            }
        }
    }
}

/// Whether every model `later` matches is matched by `earlier`, for the shapes where
/// that is decidable cheaply: `earlier` a literal, or a literal prefix followed by one
/// trailing `*`; `later` anything, judged by its literal part before its first
/// wildcard.
pub fn pattern_shadows(earlier: &str, later: &str) -> bool {
    const META: [char; 4] = ['*', '?', '[', ']'];
    let later_literal = !later.contains(META);
    let later_prefix = later.split(META).next().unwrap_or_default();
    match earlier.strip_suffix('*') {
        Some(prefix) if !prefix.contains(META) => later_prefix.starts_with(prefix),
        Some(_) => false,
        None if !earlier.contains(META) => later_literal && later == earlier,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn refused(text: &str) -> Vec<String> {
        let config = Config::from_toml(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(problems) => problems.paths().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_with_its_path() {
        let text = "[[upstreams]]\nname = \"a\"\n[[upstreams]]\nname = \"b\"\nkind = \"bedrock\"\n";
        let error = Config::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("upstreams[1].kind"), "{error}");
        assert!(error.contains("bedrock"), "{error}");
    }

    #[test]
    fn hosted_kinds_need_a_key_variable_and_local_ones_do_not() {
        for kind in ["azure", "anthropic", "gemini"] {
            let text = format!(
                "[[upstreams]]\nname = \"a\"\nmodels = [\"gpt-*\"]\n[[upstreams]]\nname = \"b\"\n\
                 kind = \"{kind}\"\nmodels = [\"x-*\"]\n"
            );
            assert_eq!(refused(&text), ["upstreams[1].api_key_env"], "{kind}");
        }
        let local = "[[upstreams]]\nname = \"l\"\nkind = \"openai_compatible\"\n\
                     base_url = \"http://127.0.0.1:8000/v1\"\n";
        assert_eq!(refused(local), Vec::<String>::new());
        let openai = "[[upstreams]]\nname = \"o\"\n";
        assert_eq!(refused(openai), Vec::<String>::new());
    }

    #[test]
    fn deployments_belong_to_azure_and_are_path_safe() {
        let text = "[[upstreams]]\nname = \"o\"\ndeployments = { \"d\" = \"gpt-4o\" }\n\
                    api_version = \"2024-10-21\"\n";
        assert_eq!(
            refused(text),
            ["upstreams[0].deployments", "upstreams[0].api_version"]
        );
        let text = "[[upstreams]]\nname = \"az\"\nkind = \"azure\"\napi_key_env = \"K\"\n\
                    deployments = { \"../x\" = \"gpt-4o\", \"ok-1\" = \"gpt-4o\" }\n";
        assert_eq!(refused(text), ["upstreams[0].deployments.../x"]);
    }

    #[test]
    fn a_shadowed_pattern_is_refused_with_both_places_named() {
        let text = "[[upstreams]]\nname = \"a\"\nmodels = [\"claude-*\"]\n\
                    [[upstreams]]\nname = \"b\"\nmodels = [\"gpt-*\", \"claude-3*\"]\n\
                    [[upstreams]]\nname = \"c\"\nmodels = [\"*\"]\n";
        assert_eq!(refused(text), ["upstreams[1].models[1]"]);
        let config = Config::from_toml(text, "t.toml").unwrap();
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("upstreams[0]"), "{message}");
        let everything_first = "[[upstreams]]\nname = \"a\"\nmodels = [\"*\"]\n\
                                [[upstreams]]\nname = \"b\"\nmodels = [\"llama-*\"]\n";
        assert_eq!(refused(everything_first), ["upstreams[1].models[0]"]);
    }

    #[test]
    fn shadowing_is_judged_by_literal_prefixes() {
        assert!(pattern_shadows("claude-*", "claude-3*"));
        assert!(pattern_shadows("claude-*", "claude-haiku-4-5"));
        assert!(pattern_shadows("gpt-4o", "gpt-4o"));
        assert!(pattern_shadows("*", "azure/*"));
        assert!(!pattern_shadows("claude-3*", "claude-*"));
        assert!(!pattern_shadows("gpt-4o", "gpt-4o*"));
        assert!(!pattern_shadows("qwen*", "llama-*"));
        assert!(!pattern_shadows("a?c*", "abc*"));
    }
}
