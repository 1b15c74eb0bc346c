//! For the routing tests: upstreams that answer as the model they were asked for, and
//! the ledger's routing columns read back from either backend.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use tollgate::config::{Config, RouteConfig, TargetConfig, UpstreamConfig};
use tollgate::ledger::Store;

use super::mock_upstream::{Received, json};

/// One ledger row's routing view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub id: String,
    pub request_id: String,
    pub upstream: String,
    pub model_requested: Option<String>,
    pub model_alias: Option<String>,
    pub attempt: i64,
    pub downgraded_from: Option<String>,
    pub status: i64,
    pub outcome: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_pico: Option<i64>,
    pub priced_model: Option<String>,
    pub kind: String,
    pub key_id: Option<String>,
    pub shadow_of: Option<String>,
    pub shadow_text_match: Option<bool>,
    pub shadow_value_match: Option<bool>,
}

const SELECT: &str = "SELECT id, request_id, upstream, model_requested, model_alias, attempt, \
    downgraded_from, status, outcome, prompt_tokens, completion_tokens, cost_pico, priced_model, \
    kind, key_id, shadow_of, shadow_text_match, shadow_value_match FROM requests ORDER BY ts_ms, id";

macro_rules! read_rows {
    ($pool:expr) => {{
        use sqlx::Row as _;
        sqlx::query(SELECT)
            .fetch_all($pool)
            .await
            .unwrap()
            .iter()
            .map(|r| RouteRow {
                id: r.get("id"),
                request_id: r.get("request_id"),
                upstream: r.get("upstream"),
                model_requested: r.get("model_requested"),
                model_alias: r.get("model_alias"),
                attempt: r.get("attempt"),
                downgraded_from: r.get("downgraded_from"),
                status: r.get("status"),
                outcome: r.get("outcome"),
                prompt_tokens: r.get("prompt_tokens"),
                completion_tokens: r.get("completion_tokens"),
                cost_pico: r.get("cost_pico"),
                priced_model: r.get("priced_model"),
                kind: r.get("kind"),
                key_id: r.get("key_id"),
                shadow_of: r.get("shadow_of"),
                shadow_text_match: r.get("shadow_text_match"),
                shadow_value_match: r.get("shadow_value_match"),
            })
            .collect::<Vec<RouteRow>>()
    }};
}

/// Every row, oldest first (ties by id: a request's attempts `X.1`, `X.2` sort after
/// `X`, so order by attempt where it matters).
pub async fn route_rows(store: &Store) -> Vec<RouteRow> {
    match store {
        Store::Sqlite(ledger) => read_rows!(ledger.pool()),
        Store::Postgres(ledger) => read_rows!(ledger.pool()),
    }
}

/// Open budget reservations (every one is settled by its request's row).
pub async fn open_reservations(store: &Store) -> i64 {
    let sql = "SELECT count(*) FROM budget_reservations";
    match store {
        Store::Sqlite(ledger) => sqlx::query_scalar(sql)
            .fetch_one(ledger.pool())
            .await
            .unwrap(),
        Store::Postgres(ledger) => sqlx::query_scalar(sql)
            .fetch_one(ledger.pool())
            .await
            .unwrap(),
    }
}

/// A chat completion answered as `model`, saying `text`.
pub fn answer(model: &str, prompt: u64, completion: u64, text: &str) -> Value {
    json!({
        "id": "chatcmpl-r", "object": "chat.completion", "created": 1_732_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    })
}

/// The model a request asked for.
pub fn asked(received: &Received) -> String {
    received.json()["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A 200 answer as the model asked for, with `prompt` and `completion` tokens.
pub fn ok_as_asked(received: &Received, prompt: u64, completion: u64) -> Response {
    json(
        StatusCode::OK,
        &answer(&asked(received), prompt, completion, "Hello there!"),
    )
}

/// An OpenAI-shaped error answer.
pub fn error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        &json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}),
    )
}

/// A second upstream (with the test key) beside the harness's own `openai`.
pub fn add_upstream(config: &mut Config, name: &str, base_url: &str) {
    config.upstreams.push(UpstreamConfig {
        name: name.to_owned(),
        base_url: base_url.to_owned(),
        api_key_env: Some("TEST_UPSTREAM_KEY".to_owned()),
        models: vec!["*".to_owned()],
        ..UpstreamConfig::default()
    });
}

/// `alias` → the pinned `(model, upstream)` targets, in order.
pub fn route(alias: &str, targets: &[(&str, &str)]) -> RouteConfig {
    RouteConfig {
        alias: alias.to_owned(),
        targets: targets
            .iter()
            .map(|(model, upstream)| TargetConfig {
                model: (*model).to_owned(),
                upstream: Some((*upstream).to_owned()),
            })
            .collect(),
        max_attempts: None,
    }
}

pub fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20})
}
