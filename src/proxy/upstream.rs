//! Upstreams: one pooled client each, chosen by the request's model, and the header
//! rules for what crosses the proxy in each direction.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::{AuthMode, Secret, UpstreamConfig};

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
    #[error("upstream `{name}`: cannot build HTTP client: {source}")]
    Client {
        name: String,
        source: reqwest::Error,
    },
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    /// Base URL, parsed once: building each request's URL from it skips re-parsing
    /// (and IDNA-normalising) the host on every request.
    base: reqwest::Url,
    /// Its path without a trailing slash, e.g. `/v1`.
    base_path: String,
    key: Option<Secret>,
    patterns: Vec<glob::Pattern>,
    pub client: reqwest::Client,
    pub first_byte_timeout: Duration,
    pub total_timeout: Duration,
}

/// The configured upstreams in order; the first whose pattern matches wins.
#[derive(Debug)]
pub struct Upstreams(Vec<Upstream>);

impl Upstreams {
    /// Builds the clients. Keys are read from `env` once, here.
    pub fn new(
        configs: &[UpstreamConfig],
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Self, UpstreamError> {
        // reqwest is built without a default TLS crypto provider (and panics without
        // one); ring is the provider linked in. Installing twice is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        configs
            .iter()
            .enumerate()
            .map(|(index, config)| Upstream::new(index, config, env))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Upstreams that have no key of their own (none configured, or its variable is
    /// unset): in keys mode their requests go out without credentials.
    pub fn keyless(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(|upstream| upstream.key.is_none())
            .map(|upstream| upstream.name.as_str())
    }

    /// The upstream for a model; a request without one routes as the empty name.
    pub fn route(&self, model: Option<&str>) -> Option<&Upstream> {
        self.position(model).and_then(|i| self.0.get(i))
    }

    /// As `route`, the upstream's index (routing names upstreams by index).
    pub fn position(&self, model: Option<&str>) -> Option<usize> {
        let model = model.unwrap_or("");
        self.0
            .iter()
            .position(|upstream| upstream.patterns.iter().any(|p| p.matches(model)))
    }

    /// The upstream at `index`, in config order.
    pub fn get(&self, index: usize) -> Option<&Upstream> {
        self.0.get(index)
    }

    /// Per upstream, in config order: whether tollgate holds its key (so its limits
    /// are the organisation's, shared by every caller).
    pub fn shared_keys(&self) -> Vec<bool> {
        self.0
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
        if let Some(key) = &self.key {
            headers.remove(header::AUTHORIZATION);
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
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
