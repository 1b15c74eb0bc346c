//! A scripted OpenAI organization Usage and Costs API (`/organization/usage/*`,
//! `/organization/costs`) on a `MockUpstream`: each endpoint answers its pages in
//! order, page N+1 for the cursor `page_N+1` the previous page handed out.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::mock_upstream::{Received, json};

const DAY_S: i64 = 86_400;

/// Unix seconds of a UTC day's start (`2026-11-02`).
pub fn day_s(day: &str) -> i64 {
    let ms = tollgate::clock::parse_time(day, 0).unwrap();
    ms / 1000
}

/// A bucket of one day.
pub fn bucket(start_s: i64, results: Vec<Value>) -> Value {
    json!({
        "object": "bucket",
        "start_time": start_s,
        "end_time": start_s + DAY_S,
        "results": results,
    })
}

/// A completions usage result, as the API writes it.
pub fn usage(model: &str, requests: u64, input: u64, cached: u64, output: u64) -> Value {
    json!({
        "object": "organization.usage.completions.result",
        "input_tokens": input,
        "input_cached_tokens": cached,
        "output_tokens": output,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": requests,
        "project_id": null,
        "user_id": null,
        "api_key_id": null,
        "model": model,
        "batch": null,
        "service_tier": null,
    })
}

/// A costs result, the amount as a JSON number (written from an f64, as OpenAI's
/// servers do: `1.5e-5` comes out with an exponent).
pub fn cost(line_item: &str, usd: f64) -> Value {
    json!({
        "object": "organization.costs.result",
        "amount": {"value": usd, "currency": "usd"},
        "line_item": line_item,
        "project_id": null,
    })
}

/// A page; `next` is the cursor of the one after it.
pub fn page(buckets: Vec<Value>, next: Option<&str>) -> Value {
    json!({
        "object": "page",
        "data": buckets,
        "has_more": next.is_some(),
        "next_page": next,
    })
}

/// Pages per endpoint: `completions`, `embeddings`, `costs`.
#[derive(Clone, Default)]
pub struct Export {
    pub pages: HashMap<&'static str, Vec<Value>>,
}

impl Export {
    pub fn with(mut self, endpoint: &'static str, pages: Vec<Value>) -> Self {
        self.pages.insert(endpoint, pages);
        self
    }

    /// The answer to one request: its endpoint's page for its cursor (`page_2` is the
    /// second page), or an empty last page for an endpoint with none.
    pub fn answer(&self, received: &Received) -> Response {
        let endpoint = endpoint(received);
        let index = query(received)
            .get("page")
            .and_then(|cursor| cursor.strip_prefix("page_"))
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(0, |n| n - 1);
        let pages = self.pages.get(endpoint.as_str());
        match pages.and_then(|pages| pages.get(index)) {
            Some(page) => json(StatusCode::OK, page),
            None => json(StatusCode::OK, &self::page(vec![], None)),
        }
    }
}

/// `completions`, `embeddings` or `costs`.
pub fn endpoint(received: &Received) -> String {
    received
        .path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The query, decoded (a repeated name keeps its last value).
pub fn query(received: &Received) -> HashMap<String, String> {
    url::form_urlencoded::parse(received.query.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}
