//! Upstreams: one pooled client each, chosen by the request's model, and the header
//! rules for what crosses the proxy in each direction.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::model_match::ModelMatcher;
use crate::config::{AuthMode, ProviderKind, Secret, UpstreamConfig};

/// The version of Anthropic's API its OpenAI-compatible endpoint is asked for.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Azure's GA data-plane version, for deployment paths that name none.
const AZURE_API_VERSION: &str = "2024-10-21";

/// Headers some provider reads a key from. A client's copy never goes upstream: in
/// keys mode it could be anything the client holds, and where tollgate sends its own
/// key it is replaced.
const KEY_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstreams[{index}].models: {source}")]
    Pattern {
        index: usize,
        source: glob::PatternError,
    },
    #[error("upstreams[{index}].base_url: {source}")]
    BaseUrl {
        index: usize,
        source: url::ParseError,
    },
    #[error(
        "upstreams[{index}].api_key_env: kind `{kind}` needs its API key, and `{var}` is unset or empty"
    )]
    MissingKey {
        index: usize,
        kind: &'static str,
        var: String,
    },
    #[error("upstream `{name}`: cannot build HTTP client: {source}")]
    Client {
        name: String,
        source: reqwest::Error,
    },
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL, parsed once: building each request's URL from it skips re-parsing
    /// (and IDNA-normalising) the host on every request.
    base: reqwest::Url,
    /// Its path without a trailing slash, e.g. `/v1`.
    base_path: String,
    key: Option<Secret>,
    patterns: Vec<glob::Pattern>,
    /// `prefix/` of each `prefix/*` pattern, removed from models before forwarding.
    strip: Vec<String>,
    /// Azure deployment addressing, when configured.
    deployments: Option<Deployments>,
    pub client: reqwest::Client,
    pub first_byte_timeout: Duration,
    pub total_timeout: Duration,
}

/// Azure's older addressing: `/deployments/<name>/...?api-version=`.
#[derive(Debug)]
struct Deployments {
    /// Deployment -> the model it serves.
    models: BTreeMap<String, String>,
    /// Model -> the first deployment serving it.
    by_model: HashMap<String, String>,
    api_version: String,
}

/// How one request goes to an upstream: the model the body names and, for Azure
/// deployments, the deployment in the path.
#[derive(Debug, PartialEq, Eq)]
pub struct Forward<'a> {
    pub model: Cow<'a, str>,
    pub deployment: Option<&'a str>,
}

/// The configured upstreams in order; the first whose pattern matches wins.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    matcher: ModelMatcher,
}

impl Upstreams {
    /// Builds the clients. Keys are read from `env` once, here.
    pub fn new(
        configs: &[UpstreamConfig],
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Self, UpstreamError> {
        // reqwest is built without a default TLS crypto provider (and panics without
        // one); ring is the provider linked in. Installing twice is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let list: Vec<Upstream> = configs
            .iter()
            .enumerate()
            .map(|(index, config)| Upstream::new(index, config, env))
            .collect::<Result<_, _>>()?;
        let matcher = ModelMatcher::new(
            list.iter()
                .enumerate()
                .flat_map(|(i, u)| u.patterns.iter().map(move |p| (i, p))),
        );
        Ok(Self { list, matcher })
    }

    /// The upstreams in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.list.iter()
    }

    /// What the ledger and metrics are told a model is, for pricing: its name with a
    /// stripped prefix removed and an Azure deployment replaced by its model.
    pub fn real_model<'a>(&'a self, model: &'a str) -> &'a str {
        match self.route(Some(model)) {
            Some(upstream) => upstream.real_model(model),
            None => model,
        }
    }

    /// Upstreams that have no key of their own (none configured, or its variable is
    /// unset): in keys mode their requests go out without credentials.
    pub fn keyless(&self) -> impl Iterator<Item = &str> {
        self.list
            .iter()
            .filter(|upstream| upstream.key.is_none())
            .map(|upstream| upstream.name.as_str())
    }

    /// The upstream for a model; a request without one routes as the empty name.
    pub fn route(&self, model: Option<&str>) -> Option<&Upstream> {
        self.position(model).and_then(|i| self.list.get(i))
    }

    /// As `route`, the upstream's index (routing names upstreams by index).
    pub fn position(&self, model: Option<&str>) -> Option<usize> {
        self.matcher.first(model.unwrap_or(""))
    }

    /// The upstream at `index`, in config order.
    pub fn get(&self, index: usize) -> Option<&Upstream> {
        self.list.get(index)
    }

    /// Per upstream, in config order: whether tollgate holds its key (so its limits
    /// are the organisation's, shared by every caller).
    pub fn shared_keys(&self) -> Vec<bool> {
        self.list
            .iter()
            .map(|upstream| upstream.key.is_some())
            .collect()
    }
}

impl Upstream {
    fn new(
        index: usize,
        config: &UpstreamConfig,
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Self, UpstreamError> {
        let patterns = config
            .models
            .iter()
            .map(|p| glob::Pattern::new(p))
            .collect::<Result<_, _>>()
            .map_err(|source| UpstreamError::Pattern { index, source })?;
        let key = config
            .api_key_env
            .as_ref()
            .and_then(|var| env.get(var))
            .filter(|key| !key.is_empty())
            .map(|key| Secret::new(key.clone()));
        if config.kind.needs_key() && key.is_none() {
            return Err(UpstreamError::MissingKey {
                index,
                kind: config.kind.as_str(),
                var: config.api_key_env.clone().unwrap_or_default(),
            });
        }
        let strip = if config.strip_prefix {
            config
                .models
                .iter()
                .filter_map(|p| p.strip_suffix('*'))
                .filter(|prefix| prefix.ends_with('/') && !prefix.contains(['*', '?', '[', ']']))
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        let deployments = (config.kind == ProviderKind::Azure
            && (!config.deployments.is_empty() || config.api_version.is_some()))
        .then(|| {
            let mut by_model = HashMap::new();
            for (deployment, model) in &config.deployments {
                by_model
                    .entry(model.clone())
                    .or_insert_with(|| deployment.clone());
            }
            Deployments {
                models: config.deployments.clone(),
                by_model,
                api_version: config
                    .api_version
                    .clone()
                    .unwrap_or_else(|| AZURE_API_VERSION.to_owned()),
            }
        });
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|source| UpstreamError::BaseUrl { index, source })?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            // Headers then body as two writes stall ~40 ms on delayed ACKs without it.
            .tcp_nodelay(true)
            // tollgate is the client of record; it never follows redirects on a
            // caller's behalf (a redirect could carry the upstream key elsewhere).
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|source| UpstreamError::Client {
                name: config.name.clone(),
                source,
            })?;
        Ok(Self {
            name: config.name.clone(),
            kind: config.kind,
            strip,
            deployments,
            base_path: base.path().trim_end_matches('/').to_owned(),
            base,
            key,
            patterns,
            client,
            first_byte_timeout: config.first_byte_timeout,
            total_timeout: config.total_timeout,
        })
    }

    /// The upstream URL for a path below `/v1` (e.g. `/chat/completions`) and query.
    /// Whether tollgate holds no key for this upstream (callers' own keys go through).
    pub fn keyless(&self) -> bool {
        self.key.is_none()
    }

    pub fn url(&self, path: &str, query: Option<&str>) -> reqwest::Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base_path));
        url.set_query(query);
        url
    }

    /// The URL of a metered request: as `url`, or for an Azure deployment
    /// `<base>/deployments/<deployment><path>?api-version=<v>` (the client's own query
    /// kept after it).
    pub fn url_for(
        &self,
        path: &str,
        query: Option<&str>,
        deployment: Option<&str>,
    ) -> reqwest::Url {
        match (&self.deployments, deployment) {
            (Some(d), Some(deployment)) => {
                let mut url = self.base.clone();
                url.set_path(&format!(
                    "{}/deployments/{deployment}{path}",
                    self.base_path
                ));
                url.query_pairs_mut()
                    .append_pair("api-version", &d.api_version);
                if let Some(query) = query.filter(|q| !q.is_empty()) {
                    let joined = format!("{}&{query}", url.query().unwrap_or_default());
                    url.set_query(Some(&joined));
                }
                url
            }
            _ => self.url(path, query),
        }
    }

    /// The model as this upstream is asked for it: a `prefix/*` pattern's prefix
    /// removed (unless `strip_prefix = false`), and with Azure deployments, the
    /// deployment (named directly, or found by the model it serves; a name neither
    /// lists is taken to be a deployment of that name).
    pub fn forward<'a>(&'a self, model: &'a str) -> Forward<'a> {
        let stripped = self.stripped(model);
        match &self.deployments {
            Some(d) => {
                let deployment = match d.models.get_key_value(stripped) {
                    Some((name, _)) => name.as_str(),
                    None => d.by_model.get(stripped).map_or(stripped, String::as_str),
                };
                Forward {
                    model: Cow::Borrowed(deployment),
                    deployment: Some(deployment),
                }
            }
            None => Forward {
                model: Cow::Borrowed(stripped),
                deployment: None,
            },
        }
    }

    /// The model a request for `model` is served by: stripped, and a deployment
    /// resolved to the model it serves.
    pub fn real_model<'a>(&'a self, model: &'a str) -> &'a str {
        let stripped = self.stripped(model);
        self.deployments
            .as_ref()
            .and_then(|d| d.models.get(stripped))
            .map_or(stripped, String::as_str)
    }

    fn stripped<'a>(&self, model: &'a str) -> &'a str {
        self.strip
            .iter()
            .find_map(|prefix| model.strip_prefix(prefix.as_str()))
            .unwrap_or(model)
    }

    /// Headers for the upstream request: the client's, minus hop-by-hop ones, with the
    /// upstream's key in place of the client's bearer when one is configured. In keys
    /// mode the client's bearer is a tollgate key and never leaves tollgate.
    pub fn request_headers(&self, client: &HeaderMap, metered: bool, mode: AuthMode) -> HeaderMap {
        self.request_headers_from(client.clone(), metered, mode)
    }

    /// As `request_headers`, reusing the client's map rather than copying it.
    pub fn request_headers_from(
        &self,
        mut headers: HeaderMap,
        metered: bool,
        mode: AuthMode,
    ) -> HeaderMap {
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        if mode == AuthMode::Keys {
            headers.remove(header::AUTHORIZATION);
        }
        if metered {
            // tollgate reads metered bodies to find their usage, so it asks for them
            // uncompressed; the body may also have been rewritten, so its length changes.
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if mode == AuthMode::Keys || self.key.is_some() {
            for name in &KEY_HEADERS {
                headers.remove(name);
            }
        }
        if let Some(key) = &self.key {
            headers.remove(header::AUTHORIZATION);
            let secret = |text: String| {
                HeaderValue::from_str(&text).ok().map(|mut value| {
                    value.set_sensitive(true);
                    value
                })
            };
            let bearer = || secret(format!("Bearer {}", key.expose()));
            let mut put = |name: HeaderName, value: Option<HeaderValue>| {
                if let Some(value) = value {
                    headers.insert(name, value);
                }
            };
            match self.kind {
                // Azure reads `api-key`; a bearer there would be taken for an Entra token.
                ProviderKind::Azure => put(KEY_HEADERS[0].clone(), secret(key.expose().to_owned())),
                ProviderKind::Anthropic => {
                    put(KEY_HEADERS[1].clone(), secret(key.expose().to_owned()));
                    put(header::AUTHORIZATION, bearer());
                    put(
                        HeaderName::from_static("anthropic-version"),
                        Some(HeaderValue::from_static(ANTHROPIC_VERSION)),
                    );
                }
                ProviderKind::Openai | ProviderKind::Gemini | ProviderKind::OpenaiCompatible => {
                    put(header::AUTHORIZATION, bearer());
                }
            }
        }
        headers
    }
}

/// Headers for the client: the upstream's minus hop-by-hop ones. The upstream's request
/// id moves to `x-upstream-request-id`: `x-request-id` is tollgate's.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    response_headers_from(upstream.clone())
}

/// As `response_headers`, reusing the upstream's map rather than copying it.
pub fn response_headers_from(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    if let Some(id) = headers.remove(X_REQUEST_ID) {
        headers.insert(X_UPSTREAM_REQUEST_ID, id);
    }
    headers
}

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// RFC 9110 §7.6.1: connection-specific headers, plus any the Connection header names.
/// Removed in place: every request and answer passes through here, and a copy of the
/// map would cost an allocation and a hash per header.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    // One pass over the names finds whether there is anything to remove; removing the
    // eight names unconditionally would hash each of them, twice per request.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(configs: &[(&str, &[&str], Option<&str>)]) -> Upstreams {
        let configs: Vec<UpstreamConfig> = configs
            .iter()
            .map(|(name, models, key_env)| UpstreamConfig {
                name: (*name).to_owned(),
                base_url: format!("http://{name}.test/v1/"),
                api_key_env: key_env.map(str::to_owned),
                models: models.iter().map(|m| (*m).to_owned()).collect(),
                ..UpstreamConfig::default()
            })
            .collect();
        let env = [("UP_KEY".to_owned(), "sk-upstream".to_owned())].into();
        Upstreams::new(&configs, &env).unwrap()
    }

    #[test]
    fn first_matching_pattern_wins_and_no_model_needs_a_catch_all() {
        let upstreams = upstreams(&[
            ("vllm", &["meta-llama/*", "qwen*"], None),
            ("openai", &["*"], None),
        ]);
        let name = |model| upstreams.route(model).map(|u| u.name.as_str());
        assert_eq!(name(Some("meta-llama/Llama-3-8B")), Some("vllm"));
        assert_eq!(name(Some("qwen2.5")), Some("vllm"));
        assert_eq!(name(Some("gpt-4o-mini")), Some("openai"));
        assert_eq!(name(None), Some("openai"));
        let only_vllm = self::upstreams(&[("vllm", &["qwen*"], None)]);
        assert!(only_vllm.route(Some("gpt-4o")).is_none());
        assert!(only_vllm.route(None).is_none());
    }

    #[test]
    fn url_joins_base_path_and_query() {
        let upstreams = upstreams(&[("openai", &["*"], None)]);
        let up = upstreams.route(None).unwrap();
        assert_eq!(
            up.url("/models", None).as_str(),
            "http://openai.test/v1/models"
        );
        assert_eq!(
            up.url("/batches", Some("limit=2&after=b_1")).as_str(),
            "http://openai.test/v1/batches?limit=2&after=b_1"
        );
        assert_eq!(up.url("", None).as_str(), "http://openai.test/v1");
    }

    #[test]
    fn the_upstream_key_replaces_the_bearer_and_hop_by_hop_headers_go() {
        let upstreams = upstreams(&[("openai", &["*"], Some("UP_KEY"))]);
        let up = upstreams.route(None).unwrap();
        let mut client = HeaderMap::new();
        client.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-client"),
        );
        client.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        client.insert("x-secret-hop", HeaderValue::from_static("1"));
        client.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        client.insert(header::HOST, HeaderValue::from_static("tollgate"));
        client.insert("openai-organization", HeaderValue::from_static("org-1"));
        client.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        let headers = up.request_headers(&client, true, AuthMode::Keys);
        assert_eq!(headers[header::AUTHORIZATION], "Bearer sk-upstream");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        assert_eq!(headers["openai-organization"], "org-1");
        assert_eq!(headers[header::ACCEPT_ENCODING], "identity");
        for gone in [
            "connection",
            "x-secret-hop",
            "transfer-encoding",
            "host",
            "content-length",
        ] {
            assert!(!headers.contains_key(gone), "{gone} must not be forwarded");
        }
        let passthrough = up.request_headers(&client, false, AuthMode::Passthrough);
        assert_eq!(passthrough[header::CONTENT_LENGTH], "10");
    }

    #[test]
    fn without_a_key_the_client_bearer_is_forwarded_only_in_passthrough() {
        let upstreams = upstreams(&[("openai", &["*"], Some("UNSET_VAR"))]);
        let up = upstreams.route(None).unwrap();
        let mut client = HeaderMap::new();
        client.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-client"),
        );
        assert_eq!(
            up.request_headers(&client, true, AuthMode::Passthrough)[header::AUTHORIZATION],
            "Bearer sk-client"
        );
        // In keys mode the bearer is a tollgate key: it never goes upstream.
        let headers = up.request_headers(&client, true, AuthMode::Keys);
        assert!(!headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn the_upstream_request_id_is_renamed() {
        let mut upstream = HeaderMap::new();
        upstream.insert(X_REQUEST_ID, HeaderValue::from_static("req_abc"));
        upstream.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let headers = response_headers(&upstream);
        assert_eq!(headers[X_UPSTREAM_REQUEST_ID], "req_abc");
        assert!(!headers.contains_key(X_REQUEST_ID));
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
    }
}
