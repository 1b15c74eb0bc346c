//! `ApiError`: the one error that becomes an HTTP response, always in OpenAI's shape
//! `{"error":{"message","type","param","code"}}` so every SDK surfaces it as it would
//! an OpenAI error. Internal causes are logged where they happen, never returned.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// We could not parse the JSON body of your request. (HINT: This likely means you
    /// aren't using your HTTP library correctly. The OpenAI API expects a JSON payload,
    /// but what was sent was not valid JSON.)
    #[error(
        "We could not parse the JSON body of your request: {detail}. (HINT: This likely means you aren't using your HTTP library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"
    )]
    InvalidJson { detail: String },

    /// The body is JSON, but a field the endpoint needs is missing or has the wrong type.
    #[error("{message}")]
    InvalidField {
        param: &'static str,
        message: String,
    },

    /// A named parameter (query string or admin body field) has a bad value.
    #[error("Invalid `{param}`: {message}")]
    BadParam { param: String, message: String },

    #[error("Request body too large: the limit is {limit} bytes.")]
    BodyTooLarge { limit: u64 },

    #[error("Unknown request URL: {method} {path}. Please check the URL for typos.")]
    NotFound { method: String, path: String },

    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed { method: String, path: String },

    #[error(
        "The model `{model}` has no price in tollgate's catalog, and this gateway refuses unpriced models."
    )]
    UnpricedModel { model: String },

    #[error(
        "This model's maximum context length is {limit} tokens. However, you requested {requested} tokens ({prompt} in the messages, {output} in the completion). Please reduce the length of the messages or completion."
    )]
    ContextLengthExceeded {
        limit: u64,
        requested: u64,
        prompt: u64,
        output: u64,
    },

    #[error("No upstream is configured for model `{model}`.")]
    NoUpstream { model: String },

    #[error("Could not reach the upstream `{upstream}`.")]
    UpstreamUnreachable { upstream: String },

    #[error("The upstream `{upstream}` did not answer in time.")]
    UpstreamTimeout { upstream: String },

    /// No bearer, or one that is not a live tollgate key. The key itself is never echoed.
    #[error("{reason}")]
    InvalidApiKey { reason: &'static str },

    #[error("This key may not use the model `{model}`.")]
    ModelNotAllowed { model: String },

    /// An admin route called with a tollgate key: authenticated, but not the admin.
    #[error("This route needs the admin key; tollgate keys cannot use it.")]
    AdminOnly,

    #[error("{0}")]
    BudgetExceeded(Box<BudgetRefusal>),

    /// A rate limit (RPM, TPM, RPD, TPD) or the in-flight cap refused the request.
    #[error("{0}")]
    RateLimited(Box<RateRefusal>),

    /// Routing refused the request before any upstream saw it: the team had its share
    /// of an upstream's headroom, or every target asked to be left alone for now.
    #[error("{0}")]
    RouteRefused(Box<RouteRefusal>),

    #[error("{message}")]
    Conflict { message: String },

    #[error("The {what} `{id}` does not exist.")]
    UnknownObject { what: &'static str, id: String },

    /// Keys mode before the key store has ever loaded (the database was down at start).
    #[error("tollgate cannot check API keys yet: its database is unreachable. Retry shortly.")]
    KeysUnavailable,

    /// Budgets set to fail closed while their store is unreachable.
    #[error("tollgate cannot check this key's budget: its database is unreachable. Retry shortly.")]
    BudgetUnavailable,

    /// A budget check that ran out of time while its database still answers (load).
    #[error(
        "tollgate cannot check this key's budget in time: its database is busy. Retry shortly."
    )]
    BudgetBusy,

    /// Shared rate limits set to fail closed while their Redis is unreachable.
    #[error(
        "tollgate cannot check this key's rate limits: their store is unreachable. Retry shortly."
    )]
    RateLimitsUnavailable,

    /// A file, batch or fine-tuning job another team (or caller) created, or one not
    /// created through tollgate at all.
    #[error(
        "The {what} `{id}` was not created through this gateway by your team; you cannot use it."
    )]
    NotYours { what: &'static str, id: String },

    /// A batch whose input would push a model's enqueued batch tokens over its limit.
    #[error(
        "Enqueued token limit reached for {model}: the limit is {limit} tokens, {enqueued} are enqueued and this batch's input holds {requested}. Try again once running batches have finished."
    )]
    BatchQueueFull {
        model: String,
        limit: u64,
        enqueued: u64,
        requested: u64,
    },

    /// Reconciliation is not set up: no admin key, or no upstream on OpenAI's bill.
    #[error("{message}")]
    ReconcileUnavailable { message: String },

    /// OpenAI's usage or cost export could not be read (the message says why).
    #[error("{message}")]
    ReconcileProvider { message: String },

    #[error("The server had an error while processing your request. Sorry about that!")]
    Internal,
}

/// Why a budget refused a request (boxed: it would make every `ApiError` large).
#[derive(Debug, thiserror::Error)]
#[error(
    "You exceeded your current quota: the {scope} budget of ${limit} for this {period} period is used up (spent ${spent}, in flight ${reserved}, this request needs up to ${needed}). It resets at the start of the next period."
)]
pub struct BudgetRefusal {
    pub scope: &'static str,
    pub period: &'static str,
    pub limit: String,
    pub spent: String,
    pub reserved: String,
    pub needed: String,
}

/// Why a rate limit refused a request, as the answer carries it (boxed, as
/// `BudgetRefusal`). The limiter fills it in from its own refusal: this module knows
/// the answer's shape, not how limits count.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RateRefusal {
    pub message: String,
    /// OpenAI's `type`: the kind of bucket exhausted (`requests` or `tokens`).
    pub error_type: &'static str,
    /// Which limit refused (`rpm`, `tpm`, ...), for the refusal metric's label.
    pub limit: &'static str,
    /// The key's `x-ratelimit-*` standing on the model.
    pub standing: HeaderMap,
    /// When a retry can succeed; `None` when none can (a limit of 0, or a request larger
    /// than the whole limit).
    pub retry_after: Option<Duration>,
}

/// Why routing refused a request (boxed, as `BudgetRefusal`).
#[derive(Debug, thiserror::Error)]
pub enum RouteRefusal {
    #[error(
        "Rate limit reached for {model} on {kind}: the organisation's limit at upstream `{upstream}` is nearly used up, and the rest is shared by team weight; team {team} (share {share}) has had its share. Please try again in {retry}."
    )]
    Headroom {
        model: String,
        upstream: String,
        /// `requests` or `tokens`.
        kind: &'static str,
        team: String,
        share: u32,
        retry: HumanWait,
        retry_after: std::time::Duration,
    },
    #[error(
        "Rate limit reached for {model}: every upstream serving it asked to be left alone for now (retry-after). Please try again in {retry}."
    )]
    CoolingDown {
        model: String,
        retry: HumanWait,
        retry_after: std::time::Duration,
    },
}

impl RouteRefusal {
    pub fn retry_after(&self) -> std::time::Duration {
        match self {
            Self::Headroom { retry_after, .. } | Self::CoolingDown { retry_after, .. } => {
                *retry_after
            }
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Self::Headroom { kind, .. } => kind,
            Self::CoolingDown { .. } => "requests",
        }
    }
}

/// A wait as OpenAI words it in messages: `644ms`, `20s`.
#[derive(Debug, Clone, Copy)]
pub struct HumanWait(pub std::time::Duration);

impl std::fmt::Display for HumanWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms.div_ceil(1000))
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson { .. }
            | Self::InvalidField { .. }
            | Self::BadParam { .. }
            | Self::UnpricedModel { .. }
            | Self::ContextLengthExceeded { .. } => StatusCode::BAD_REQUEST,
            // What OpenAI answers for a model it does not serve.
            Self::NoUpstream { .. } => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::InvalidApiKey { .. } => StatusCode::UNAUTHORIZED,
            Self::ModelNotAllowed { .. } | Self::AdminOnly | Self::NotYours { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::BudgetExceeded(_)
            | Self::RateLimited(_)
            | Self::RouteRefused(_)
            | Self::BatchQueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::UnknownObject { .. } => StatusCode::NOT_FOUND,
            Self::KeysUnavailable
            | Self::BudgetUnavailable
            | Self::BudgetBusy
            | Self::RateLimitsUnavailable
            | Self::ReconcileUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::ReconcileProvider { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. }
            | Self::InvalidField { .. }
            | Self::BadParam { .. }
            | Self::BodyTooLarge { .. }
            | Self::NotFound { .. }
            | Self::MethodNotAllowed { .. }
            | Self::UnpricedModel { .. }
            | Self::ContextLengthExceeded { .. }
            | Self::NoUpstream { .. }
            | Self::InvalidApiKey { .. }
            | Self::ModelNotAllowed { .. }
            | Self::AdminOnly
            | Self::Conflict { .. }
            | Self::UnknownObject { .. }
            | Self::NotYours { .. } => "invalid_request_error",
            Self::BatchQueueFull { .. } => "tokens",
            // What OpenAI sends for an exhausted quota; the SDKs key off it.
            Self::BudgetExceeded(_) => "insufficient_quota",
            // OpenAI names the exhausted bucket: `tokens` or `requests`.
            Self::RateLimited(refusal) => refusal.error_type,
            Self::RouteRefused(refusal) => refusal.error_type(),
            Self::UpstreamUnreachable { .. }
            | Self::UpstreamTimeout { .. }
            | Self::KeysUnavailable
            | Self::BudgetUnavailable
            | Self::BudgetBusy
            | Self::RateLimitsUnavailable
            | Self::ReconcileUnavailable { .. }
            | Self::ReconcileProvider { .. }
            | Self::Internal => "server_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidField { param, .. } => Some(param),
            Self::BadParam { param, .. } => Some(param),
            Self::NoUpstream { .. } | Self::UnpricedModel { .. } | Self::ModelNotAllowed { .. } => {
                Some("model")
            }
            Self::ContextLengthExceeded { .. } => Some("messages"),
            _ => None,
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            Self::InvalidJson { .. } | Self::InvalidField { .. } => None,
            Self::BadParam { .. } => Some("invalid_parameter"),
            Self::BodyTooLarge { .. } => Some("request_too_large"),
            Self::NotFound { .. } => Some("unknown_url"),
            Self::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Self::NoUpstream { .. } => Some("model_not_found"),
            Self::UnpricedModel { .. } => Some("model_not_priced"),
            Self::ContextLengthExceeded { .. } => Some("context_length_exceeded"),
            Self::UpstreamUnreachable { .. } => Some("upstream_unreachable"),
            Self::UpstreamTimeout { .. } => Some("upstream_timeout"),
            Self::InvalidApiKey { .. } => Some("invalid_api_key"),
            Self::ModelNotAllowed { .. } => Some("model_not_allowed"),
            Self::AdminOnly => Some("admin_only"),
            Self::BudgetExceeded(_) => Some("insufficient_quota"),
            Self::RateLimited(_) | Self::RouteRefused(_) => Some("rate_limit_exceeded"),
            Self::Conflict { .. } => Some("conflict"),
            Self::UnknownObject { .. } => Some("not_found"),
            Self::KeysUnavailable => Some("key_store_unavailable"),
            Self::BudgetUnavailable => Some("budget_store_unavailable"),
            Self::BudgetBusy => Some("budget_store_busy"),
            Self::RateLimitsUnavailable => Some("rate_limit_store_unavailable"),
            Self::NotYours { .. } => Some("forbidden"),
            Self::BatchQueueFull { .. } => Some("token_limit_exceeded"),
            Self::ReconcileUnavailable { .. } => Some("reconcile_unavailable"),
            Self::ReconcileProvider { .. } => Some("reconcile_provider_error"),
            Self::Internal => Some("internal_error"),
        }
    }

    /// The variant's name, for logs and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::InvalidField { .. } => "invalid_field",
            Self::BadParam { .. } => "bad_param",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::NoUpstream { .. } => "no_upstream",
            Self::UnpricedModel { .. } => "unpriced_model",
            Self::ContextLengthExceeded { .. } => "context_length_exceeded",
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::InvalidApiKey { .. } => "invalid_api_key",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::AdminOnly => "admin_only",
            Self::BudgetExceeded(_) => "budget_exceeded",
            Self::RateLimited(_) => "rate_limited",
            Self::RouteRefused(_) => "route_refused",
            Self::Conflict { .. } => "conflict",
            Self::UnknownObject { .. } => "unknown_object",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BudgetUnavailable => "budget_unavailable",
            Self::BudgetBusy => "budget_busy",
            Self::RateLimitsUnavailable => "rate_limits_unavailable",
            Self::NotYours { .. } => "not_yours",
            Self::BatchQueueFull { .. } => "batch_queue_full",
            Self::ReconcileUnavailable { .. } => "reconcile_unavailable",
            Self::ReconcileProvider { .. } => "reconcile_provider",
            Self::Internal => "internal",
        }
    }

    /// The JSON body, also used for the SSE error event sent when a stream fails midway.
    pub fn body_json(&self) -> Vec<u8> {
        let body = ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        };
        // Serialising a struct of strings cannot fail; fall back to a fixed body anyway.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#
                .to_vec()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            // The official SDKs retry every 429 unless told not to; retrying a spent
            // budget only burns the client's time.
            Self::BudgetExceeded(_) | Self::BatchQueueFull { .. } => {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            Self::RateLimited(refusal) => rate_limit_headers(refusal, headers),
            Self::RouteRefused(refusal) => retry_headers(refusal.retry_after(), headers),
            // Load passes; the SDKs honour the hint when they retry.
            Self::BudgetBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// What the SDKs read on a rate-limit 429: when to retry (`retry-after-ms`, else
/// `retry-after` in whole seconds, at least 1), or not to (a limit of 0, a request
/// larger than the whole limit), and the key's standing on the model.
fn rate_limit_headers(refusal: &RateRefusal, headers: &mut HeaderMap) {
    headers.extend(refusal.standing.clone());
    match refusal.retry_after {
        Some(wait) => retry_headers(wait, headers),
        None => {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
    }
}

/// `retry-after` in whole seconds (at least 1) and `retry-after-ms` exact.
fn retry_headers(wait: Duration, headers: &mut HeaderMap) {
    let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
    headers.insert("retry-after-ms", HeaderValue::from(ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_openai_shape() {
        let errors = [
            ApiError::InvalidJson {
                detail: "expected value at line 1 column 1".into(),
            },
            ApiError::InvalidField {
                param: "model",
                message: "you must provide a model parameter".into(),
            },
            ApiError::BadParam {
                param: "group_by".into(),
                message: "unknown".into(),
            },
            ApiError::BodyTooLarge { limit: 10 },
            ApiError::NotFound {
                method: "GET".into(),
                path: "/nope".into(),
            },
            ApiError::MethodNotAllowed {
                method: "POST".into(),
                path: "/healthz".into(),
            },
            ApiError::NoUpstream { model: "m".into() },
            ApiError::UnpricedModel { model: "m".into() },
            ApiError::ContextLengthExceeded {
                limit: 1,
                requested: 3,
                prompt: 2,
                output: 1,
            },
            ApiError::UpstreamUnreachable {
                upstream: "openai".into(),
            },
            ApiError::UpstreamTimeout {
                upstream: "openai".into(),
            },
            ApiError::InvalidApiKey {
                reason: "Incorrect API key provided.",
            },
            ApiError::ModelNotAllowed { model: "m".into() },
            ApiError::AdminOnly,
            ApiError::BudgetExceeded(Box::new(BudgetRefusal {
                scope: "team",
                period: "monthly",
                limit: "10".into(),
                spent: "9.99".into(),
                reserved: "0".into(),
                needed: "0.02".into(),
            })),
            ApiError::RateLimited(Box::new(RateRefusal {
                message: "Rate limit reached for gpt-4o on tokens per min (TPM).".into(),
                error_type: "tokens",
                limit: "tpm",
                standing: HeaderMap::new(),
                retry_after: Some(Duration::from_millis(1200)),
            })),
            ApiError::RouteRefused(Box::new(RouteRefusal::Headroom {
                model: "gpt-4o".into(),
                upstream: "openai".into(),
                kind: "tokens",
                team: "batch".into(),
                share: 1,
                retry: HumanWait(std::time::Duration::from_secs(3)),
                retry_after: std::time::Duration::from_secs(3),
            })),
            ApiError::RouteRefused(Box::new(RouteRefusal::CoolingDown {
                model: "smart".into(),
                retry: HumanWait(std::time::Duration::from_millis(300)),
                retry_after: std::time::Duration::from_millis(300),
            })),
            ApiError::Conflict {
                message: "exists".into(),
            },
            ApiError::UnknownObject {
                what: "team",
                id: "x".into(),
            },
            ApiError::KeysUnavailable,
            ApiError::BudgetUnavailable,
            ApiError::BudgetBusy,
            ApiError::RateLimitsUnavailable,
            ApiError::NotYours {
                what: "batch",
                id: "batch_1".into(),
            },
            ApiError::BatchQueueFull {
                model: "gpt-4o-mini".into(),
                limit: 10,
                enqueued: 8,
                requested: 3,
            },
            ApiError::Internal,
        ];
        for error in errors {
            let body: serde_json::Value = serde_json::from_slice(&error.body_json()).unwrap();
            let object = body["error"].as_object().unwrap();
            assert_eq!(object.len(), 4, "{body}");
            assert!(object["message"].is_string());
            assert!(object["type"].is_string());
            assert!(object.contains_key("param") && object.contains_key("code"));
        }
    }
}
