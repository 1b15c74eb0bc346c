//! The scripted upstream of the service tier tests (`tests/tiers.rs`,
//! `tests/tier_budgets.rs`), and reading their rows back.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate::config::AuthMode;
use tollgate::ledger::Store;
use tollgate::pricing::{AutoTier, Cost};

use super::db::Backend;
use super::harness::Harness;
use super::mock_upstream::{MockUpstream, json as answer, sse};

/// The scripted upstream. Per request, by header: `x-mock-model` (default: the model
/// asked for), `x-mock-tier` (the answer's `service_tier`; absent: the field is left
/// out), `x-mock-prompt` / `x-mock-cached` / `x-mock-completion` (usage; 10,000 / 4,000
/// / 1,000 by default), and for a chat stream `x-mock-chunk-tiers`, one tier per content
/// chunk (`-` leaves the field out), with the usage chunk at `x-mock-tier`.
pub async fn tiered_upstream() -> MockUpstream {
    MockUpstream::start(|received| {
        let request = received.json();
        let header = |name: &str| {
            received
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let number =
            |name: &str, default: u64| header(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        let (prompt, cached, completion) = (
            number("x-mock-prompt", 10_000),
            number("x-mock-cached", 4_000),
            number("x-mock-completion", 1_000),
        );
        let model = header("x-mock-model")
            .unwrap_or_else(|| request["model"].as_str().unwrap_or_default().to_owned());
        let tier = header("x-mock-tier");
        let with_tier = |mut body: Value, tier: Option<&str>| {
            if let Some(tier) = tier.filter(|t| *t != "-") {
                body["service_tier"] = json!(tier);
            }
            body
        };
        let streamed = request["stream"] == true;
        if received.path.ends_with("/responses") {
            let usage = json!({"input_tokens": prompt, "output_tokens": completion,
                               "input_tokens_details": {"cached_tokens": cached}});
            let object = |status: &str, usage: Value, tier: Option<&str>| {
                with_tier(
                    json!({"id": "resp_1", "object": "response", "status": status,
                           "model": model, "output": [], "usage": usage}),
                    tier,
                )
            };
            if !streamed {
                return answer(StatusCode::OK, &object("completed", usage, tier.as_deref()));
            }
            // `response.created` echoes the tier asked for; `response.completed` says
            // which one served.
            let asked = request["service_tier"]
                .as_str()
                .unwrap_or("auto")
                .to_owned();
            let events = [
                json!({"type": "response.created",
                       "response": object("in_progress", Value::Null, Some(&asked))}),
                json!({"type": "response.output_text.delta", "delta": "Hi"}),
                json!({"type": "response.completed",
                       "response": object("completed", usage, tier.as_deref())}),
            ];
            return sse(&events.map(|e| e.to_string()));
        }
        let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion,
                           "prompt_tokens_details": {"cached_tokens": cached}});
        if !streamed {
            let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": model,
                              "choices": [{"index": 0, "finish_reason": "stop",
                                           "message": {"role": "assistant", "content": "Hi"}}],
                              "usage": usage});
            return answer(StatusCode::OK, &with_tier(body, tier.as_deref()));
        }
        let chunk = |choices: Value, usage: Value, tier: Option<&str>| {
            let body = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                              "model": model, "choices": choices, "usage": usage});
            with_tier(body, tier).to_string()
        };
        let mut chunks: Vec<String> = header("x-mock-chunk-tiers")
            .unwrap_or_default()
            .split(',')
            .map(|t| {
                let delta = json!([{"index": 0, "delta": {"content": "word"}}]);
                chunk(delta, Value::Null, Some(t))
            })
            .collect();
        chunks.push(chunk(json!([]), usage, tier.as_deref()));
        chunks.push("[DONE]".to_owned());
        sse(&chunks)
    })
    .await
}

/// One row as these tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRow {
    pub requested: Option<String>,
    pub served: Option<String>,
    pub variant: Option<String>,
    /// input, cached input, output: micro-USD per 1M tokens.
    pub rates: (Option<i64>, Option<i64>, Option<i64>),
    pub cost_pico: Option<i64>,
}

/// Every row by its request id.
pub async fn rows(store: &Store) -> BTreeMap<String, TierRow> {
    type Raw = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let sql = "SELECT request_id, service_tier_requested, service_tier, price_variant, \
               input_rate, cached_input_rate, output_rate, cost_pico FROM requests";
    let raw: Vec<Raw> = match store {
        Store::Sqlite(ledger) => sqlx::query_as(sql).fetch_all(ledger.pool()).await,
        Store::Postgres(ledger) => sqlx::query_as(sql).fetch_all(ledger.pool()).await,
    }
    .unwrap();
    raw.into_iter()
        .map(|r| {
            let row = TierRow {
                requested: r.1,
                served: r.2,
                variant: r.3,
                rates: (r.4, r.5, r.6),
                cost_pico: r.7,
            };
            (r.0, row)
        })
        .collect()
}

/// Rates as micro-USD per 1M tokens, from USD per 1M written as the catalog writes them.
pub fn rates(input: &str, cached: &str, output: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
    // A USD amount's pico-dollars are its micro-dollars per million.
    let micros = |usd: &str| {
        let pico = usd.parse::<Cost>().unwrap().as_pico();
        Some(i64::try_from(pico / 1_000_000).unwrap())
    };
    (micros(input), micros(cached), micros(output))
}

pub fn usd_pico(usd: &str) -> Option<i64> {
    Some(i64::try_from(usd.parse::<Cost>().unwrap().as_pico()).unwrap())
}

pub async fn tollgate_on(backend: &Backend, upstream: &str, keys: bool, auto: AutoTier) -> Harness {
    let url = backend.url.clone();
    Harness::start_with(upstream, move |config| {
        config.database.url = url;
        config.pricing.auto_service_tier = auto;
        if keys {
            config.auth.mode = AuthMode::Keys;
        }
    })
    .await
}

/// A chat completion with `body` and the mock's headers; returns the status.
pub async fn send(
    tollgate: &Harness,
    path: &str,
    id: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut request = tollgate
        .post(path)
        .header("x-request-id", id)
        .body(body.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    response.bytes().await.unwrap();
    status
}

/// The row a case expects.
pub fn row(
    requested: Option<&str>,
    served: &str,
    variant: &str,
    (input, cached, output): (&str, &str, &str),
    usd: &str,
) -> TierRow {
    TierRow {
        requested: requested.map(str::to_owned),
        served: Some(served.to_owned()),
        variant: Some(variant.to_owned()),
        rates: rates(input, cached, output),
        cost_pico: usd_pico(usd),
    }
}
