//! The provider side: OpenAI's organization Usage and Costs API, read with an admin key.
//!
//! What is asked and read (OpenAI's API reference, as generated into openai-python's
//! `types/admin/organization/usage_completions_params.py`, `usage_costs_params.py` and
//! their `*_response.py`; docs/src/reconciliation.md cites them):
//!
//! - `GET /organization/usage/completions` and `/organization/usage/embeddings` with
//!   `start_time` (Unix seconds, inclusive), `end_time` (exclusive), `bucket_width=1d`,
//!   `group_by[]=model`, `limit` (buckets per page; at most 31 for `1d`) and `page` (the
//!   previous page's `next_page`). A result carries `input_tokens` (cached included),
//!   `input_cached_tokens`, `output_tokens` (completions only), `num_model_requests` and
//!   `model`.
//! - `GET /organization/costs` with the same times, `bucket_width=1d` (the only width),
//!   `group_by[]=line_item` and `limit` up to 180. A result carries `amount.value` (a
//!   JSON number, read from its text: see `usd.rs`), `amount.currency` (`usd`) and
//!   `line_item`.
//! - Every answer is a page `{object: "page", data: [bucket], has_more, next_page}`, a
//!   bucket `{object: "bucket", start_time, end_time, results: […]}`. Arrays in the
//!   query use the SDK's `name[]=value` form.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::usd::Usd;
use super::{DAY_S, Days, ReconcileError};
use crate::config::{ReconcileConfig, Secret};

/// Buckets per page: the most each endpoint allows for `bucket_width=1d`.
const USAGE_LIMIT: u32 = 31;
const COSTS_LIMIT: u32 = 180;
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A `retry-after` longer than this is not waited for (as the OpenAI SDKs do).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The most of an error body kept for a message.
const DETAIL_CHARS: usize = 200;

/// One endpoint of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Embeddings,
    Costs,
}

impl Endpoint {
    /// As it appears in messages, below the base URL.
    pub fn name(self) -> &'static str {
        match self {
            Self::Completions => "organization/usage/completions",
            Self::Embeddings => "organization/usage/embeddings",
            Self::Costs => "organization/costs",
        }
    }

    fn query(self) -> (&'static str, u32) {
        match self {
            Self::Completions | Self::Embeddings => ("model", USAGE_LIMIT),
            Self::Costs => ("line_item", COSTS_LIMIT),
        }
    }
}

/// One model's usage on one UTC day, as OpenAI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Days since the Unix epoch.
    pub day: i64,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
}

/// One line item's cost on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostRow {
    pub day: i64,
    pub line_item: String,
    pub usd: Usd,
}

/// Everything the export says about a range of days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    pub usage: Vec<UsageRow>,
    pub costs: Vec<CostRow>,
}

#[derive(Deserialize)]
struct Page<R> {
    data: Vec<Bucket<R>>,
    has_more: bool,
    #[serde(default)]
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Bucket<R> {
    start_time: i64,
    results: Vec<R>,
}

#[derive(Deserialize)]
struct UsageResult {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    input_cached_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    num_model_requests: u64,
}

#[derive(Deserialize)]
struct CostResult {
    #[serde(default)]
    amount: Option<Amount>,
    #[serde(default)]
    line_item: Option<String>,
}

#[derive(Deserialize)]
struct Amount {
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default)]
    currency: Option<String>,
}

/// A client of the export, holding the admin key.
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    key: Secret,
    key_env: String,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_pages: u32,
}

impl Client {
    /// `key`: the admin key, from `config.admin_key_env`.
    pub fn new(config: &ReconcileConfig, key: Secret) -> Result<Self, ReconcileError> {
        // reqwest is built without a TLS provider of its own; the proxy installs this
        // one too, whichever starts first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut base =
            reqwest::Url::parse(&config.base_url).map_err(|_| ReconcileError::BadBaseUrl {
                url: config.base_url.clone(),
            })?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .timeout(config.timeout)
            // A redirect could carry the admin key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ReconcileError::Unreachable {
                endpoint: "the OpenAI API",
                reason: error.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            key,
            key_env: config.admin_key_env.clone(),
            timeout: config.timeout,
            retries: config.retries,
            backoff: config.retry_backoff,
            max_pages: config.max_pages,
        })
    }

    /// Usage (completions and embeddings) and costs for `days`, every page.
    pub async fn export(&self, days: Days) -> Result<Export, ReconcileError> {
        let mut usage = Vec::new();
        for endpoint in [Endpoint::Completions, Endpoint::Embeddings] {
            for bucket in self.buckets::<UsageResult>(endpoint, days).await? {
                let day = bucket.start_time.div_euclid(DAY_S);
                for result in bucket.results {
                    usage.push(UsageRow {
                        day,
                        model: result.model.unwrap_or_default(),
                        requests: result.num_model_requests,
                        input_tokens: result.input_tokens,
                        cached_tokens: result.input_cached_tokens.unwrap_or(0),
                        output_tokens: result.output_tokens.unwrap_or(0),
                    });
                }
            }
        }
        let mut costs = Vec::new();
        for bucket in self.buckets::<CostResult>(Endpoint::Costs, days).await? {
            let day = bucket.start_time.div_euclid(DAY_S);
            for result in bucket.results {
                let Some(usd) = amount(result.amount)? else {
                    continue;
                };
                costs.push(CostRow {
                    day,
                    line_item: result.line_item.unwrap_or_default(),
                    usd,
                });
            }
        }
        Ok(Export { usage, costs })
    }

    /// Every bucket of `endpoint` for `days`, following `next_page` up to `max_pages`.
    async fn buckets<R: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        days: Days,
    ) -> Result<Vec<Bucket<R>>, ReconcileError> {
        let (group_by, limit) = endpoint.query();
        let mut url = self
            .base
            .join(endpoint.name())
            .map_err(|_| ReconcileError::BadBaseUrl {
                url: self.base.to_string(),
            })?;
        url.query_pairs_mut()
            .append_pair("start_time", &days.start_s().to_string())
            .append_pair("end_time", &days.end_s().to_string())
            .append_pair("bucket_width", "1d")
            .append_pair("group_by[]", group_by)
            .append_pair("limit", &limit.to_string());
        let mut buckets = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..self.max_pages {
            let mut page_url = url.clone();
            if let Some(cursor) = &cursor {
                page_url.query_pairs_mut().append_pair("page", cursor);
            }
            let body = self.get(endpoint, page_url).await?;
            let page: Page<R> =
                serde_json::from_slice(&body).map_err(|error| ReconcileError::Unexpected {
                    endpoint: endpoint.name(),
                    reason: error.to_string(),
                })?;
            buckets.extend(
                page.data
                    .into_iter()
                    .filter(|bucket| days.contains_s(bucket.start_time)),
            );
            if !page.has_more {
                return Ok(buckets);
            }
            let next = page.next_page.filter(|next| !next.is_empty()).ok_or(
                ReconcileError::Unexpected {
                    endpoint: endpoint.name(),
                    reason: "`has_more` is true but there is no `next_page`".to_owned(),
                },
            )?;
            if !seen.insert(next.clone()) {
                return Err(ReconcileError::RepeatedCursor {
                    endpoint: endpoint.name(),
                });
            }
            cursor = Some(next);
        }
        Err(ReconcileError::EndlessPages {
            endpoint: endpoint.name(),
            pages: self.max_pages,
        })
    }

    /// One GET, retried on 408, 409, 429, 5xx and broken connections.
    async fn get(&self, endpoint: Endpoint, url: reqwest::Url) -> Result<Vec<u8>, ReconcileError> {
        let mut wait = self.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_get(endpoint, url.clone()).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { error, .. } if tries > self.retries => {
                    return Err(error.after(tries));
                }
                Attempt::Retry { retry_after, .. } => {
                    let asked = retry_after.filter(|d| *d <= MAX_RETRY_AFTER);
                    tokio::time::sleep(asked.map_or(wait, |d| d.max(wait))).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn try_get(&self, endpoint: Endpoint, url: reqwest::Url) -> Attempt {
        let name = endpoint.name();
        let sent = self
            .http
            .get(url)
            .bearer_auth(self.key.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Attempt::retry(self.transport(name, &error), None),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(error) => return Attempt::retry(self.transport(name, &error), retry_after),
        };
        match status {
            200..=299 => {
                let looks_like_json = body
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b'{');
                if looks_like_json {
                    Attempt::Done(Ok(body))
                } else {
                    Attempt::Done(Err(ReconcileError::NotJson {
                        endpoint: name,
                        content_type,
                    }))
                }
            }
            401 => Attempt::Done(Err(ReconcileError::KeyRefused {
                endpoint: name,
                var: self.key_env.clone(),
            })),
            403 => Attempt::Done(Err(ReconcileError::Forbidden { endpoint: name })),
            408 | 409 | 429 | 500..=599 => Attempt::retry(
                ReconcileError::Status {
                    endpoint: name,
                    status,
                    tries: 1,
                    message: None,
                },
                retry_after,
            ),
            _ => Attempt::Done(Err(ReconcileError::Status {
                endpoint: name,
                status,
                tries: 1,
                message: self.message(&body),
            })),
        }
    }

    fn transport(&self, endpoint: &'static str, error: &reqwest::Error) -> ReconcileError {
        if error.is_timeout() {
            return ReconcileError::Timeout {
                endpoint,
                timeout: self.timeout,
            };
        }
        // The innermost cause says it best ("Connection refused"); the outer ones
        // repeat the URL.
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let reason = if error.is_connect() {
            format!("cannot connect: {cause}")
        } else {
            format!("the connection failed: {cause}")
        };
        ReconcileError::Unreachable { endpoint, reason }
    }

    /// OpenAI's own `error.message` of a refusal, short, with the key (were it ever
    /// echoed) cut out.
    fn message(&self, body: &[u8]) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let message = value["error"]["message"].as_str()?;
        let message = message.replace(self.key.expose(), "***");
        Some(message.chars().take(DETAIL_CHARS).collect())
    }
}

enum Attempt {
    Done(Result<Vec<u8>, ReconcileError>),
    Retry {
        error: ReconcileError,
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    fn retry(error: ReconcileError, retry_after: Option<Duration>) -> Self {
        Self::Retry { error, retry_after }
    }
}

/// An amount in USD; `None` when the result carries none. Other currencies are refused:
/// tollgate prices in USD and converts nothing.
fn amount(amount: Option<Amount>) -> Result<Option<Usd>, ReconcileError> {
    let Some(Amount { value, currency }) = amount else {
        return Ok(None);
    };
    let Some(value) = value else {
        return Ok(None);
    };
    if let Some(currency) = currency.filter(|c| !c.eq_ignore_ascii_case("usd")) {
        return Err(ReconcileError::Currency { currency });
    }
    let text = value.get();
    if text == "null" {
        return Ok(None);
    }
    // A decimal written as a string is read the same way.
    let number = match serde_json::from_str::<String>(text) {
        Ok(inner) => inner,
        Err(_) => text.to_owned(),
    };
    Usd::parse_json_number(number.trim())
        .map(Some)
        .map_err(|reason| ReconcileError::Amount {
            text: text.chars().take(40).collect(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(json: &str) -> Result<Option<Usd>, ReconcileError> {
        let result: CostResult = serde_json::from_str(json).unwrap();
        amount(result.amount)
    }

    #[test]
    fn amounts_are_read_from_the_numbers_text() {
        let usd = |json: &str| cost(json).unwrap().map(|usd| usd.to_string());
        assert_eq!(
            usd(r#"{"amount":{"value":0.30000000000000004,"currency":"usd"}}"#).as_deref(),
            Some("0.30000000000000004")
        );
        assert_eq!(
            usd(r#"{"amount":{"value":1.2e-7,"currency":"USD"}}"#).as_deref(),
            Some("0.00000012")
        );
        assert_eq!(
            usd(r#"{"amount":{"value":"1.2345","currency":"usd"}}"#).as_deref(),
            Some("1.2345")
        );
        assert_eq!(usd(r#"{"amount":{"value":null,"currency":"usd"}}"#), None);
        assert_eq!(usd(r#"{"amount":null}"#), None);
        assert_eq!(usd(r#"{"line_item":"x"}"#), None);
        assert!(matches!(
            cost(r#"{"amount":{"value":1,"currency":"eur"}}"#),
            Err(ReconcileError::Currency { .. })
        ));
        assert!(matches!(
            cost(r#"{"amount":{"value":true,"currency":"usd"}}"#),
            Err(ReconcileError::Amount { .. })
        ));
    }
}
