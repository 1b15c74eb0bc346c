//! `GET /admin/reconcile?since&until&by&tolerance&upstream&format`: the report of
//! `tollgate reconcile`, as JSON (the `--json` shape) or CSV. A failure says which
//! side failed and why: 502 when OpenAI's export could not be read, 503 when
//! reconciliation is not set up (no admin key, no upstream on OpenAI's bill).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};

use super::Admin;
use super::body::bad;
use crate::clock::now_ms;
use crate::config::Tolerance;
use crate::error::ApiError;
use crate::reconcile::{Ask, Days, Grouping, ReconcileError, format};

const PARAMS: [&str; 6] = ["since", "until", "by", "tolerance", "upstream", "format"];

pub async fn reconcile(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = query.keys().find(|name| !PARAMS.contains(&name.as_str())) {
        return Err(bad(
            unknown,
            format!("unknown parameter; known: {}", PARAMS.join(", ")),
        ));
    }
    let since = query
        .get("since")
        .ok_or_else(|| bad("since", "is required: the first UTC day, like 2026-11-01"))?;
    let days =
        Days::parse(since, query.get("until").map(String::as_str), now_ms()).map_err(|reason| {
            bad(
                if query.contains_key("until") {
                    "until"
                } else {
                    "since"
                },
                reason,
            )
        })?;
    let by_text = query.get("by").map_or("model", String::as_str);
    let by = Grouping::parse(by_text)
        .ok_or_else(|| bad("by", format!("`{by_text}` is not day, model or day,model")))?;
    let csv = match query.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(bad("format", format!("`{other}` is not json or csv"))),
    };
    let reconciler = admin
        .reconciler
        .as_ref()
        .ok_or_else(|| ApiError::ReconcileUnavailable {
            message: "Reconciliation is not available on this server.".to_owned(),
        })?;
    let tolerance = match query.get("tolerance") {
        Some(text) => Tolerance::parse_percent(text).map_err(|reason| bad("tolerance", reason))?,
        None => reconciler.config().tolerance_percent,
    };
    let upstreams: Vec<String> = match query.get("upstream") {
        Some(list) => list
            .split(',')
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect(),
        None => reconciler.billed_upstreams().to_vec(),
    };
    let ask = Ask {
        days,
        by,
        tolerance,
        upstreams: &upstreams,
    };
    let report = reconciler
        .run(&admin.store, &ask)
        .await
        .map_err(api_error)?;
    // Spend figures are for whoever holds the admin key, not for shared caches.
    let no_store = (header::CACHE_CONTROL, "no-store");
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8"), no_store],
            format::to_csv(&report),
        )
            .into_response());
    }
    Ok(([no_store], Json(format::to_json(&report))).into_response())
}

fn api_error(error: ReconcileError) -> ApiError {
    match error {
        ReconcileError::NoAdminKey { .. }
        | ReconcileError::ProjectKey { .. }
        | ReconcileError::BadBaseUrl { .. }
        | ReconcileError::NoUpstreams { .. } => ApiError::ReconcileUnavailable {
            message: error.to_string(),
        },
        ReconcileError::Ledger(_) | ReconcileError::Overflow => {
            tracing::error!(%error, "reconciliation failed on tollgate's side");
            ApiError::Internal
        }
        error => {
            tracing::warn!(%error, "reconciliation failed on OpenAI's side");
            ApiError::ReconcileProvider {
                message: error.to_string(),
            }
        }
    }
}
