//! `GET /admin/shadow`: the shadow comparisons (`[[shadow]]`) over a time range, per
//! model and candidate: cost per request of each and how often their answers agreed,
//! as JSON or CSV. The dashboard draws the same figures.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::Admin;
use super::body::bad;
use crate::clock::{self, now_ms};
use crate::error::ApiError;
use crate::ledger::shadow::{render_shadow_csv, shadow_report};

const PARAMS: [&str; 3] = ["from", "to", "format"];
const DEFAULT_FROM: &str = "30d";

pub async fn shadow(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = query.keys().find(|name| !PARAMS.contains(&name.as_str())) {
        return Err(bad(
            unknown,
            format!("unknown parameter; known: {}", PARAMS.join(", ")),
        ));
    }
    let csv = match query.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(bad("format", format!("`{other}` is not json or csv"))),
    };
    let now = now_ms();
    let time = |param: &str, default: &str| {
        let text = query.get(param).map_or(default, String::as_str);
        clock::parse_time(text, now).map_err(|m| bad(param, m))
    };
    let from = time("from", DEFAULT_FROM)?;
    let to = match query.get("to") {
        Some(_) => time("to", "")?,
        None => i64::MAX,
    };
    if from > to {
        return Err(bad("from", "is after `to`"));
    }
    let lines = shadow_report(&admin.store, from, to)
        .await
        .map_err(|error| {
            tracing::error!(%error, "shadow report failed");
            ApiError::Internal
        })?;
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            render_shadow_csv(&lines),
        )
            .into_response());
    }
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "object": "list", "data": lines })),
    )
        .into_response())
}
