//! `GET /admin/spend`: spend grouped by team, key, model, day, hour, kind or service
//! tier, over a time range, as JSON or CSV, read from the hourly rollups.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::Admin;
use super::body::bad;
use crate::auth::store;
use crate::clock::{self, now_ms};
use crate::error::ApiError;
use crate::ledger::report::render_csv;
use crate::ledger::rollup::{RollupFilter, RollupGroup, rollup_spend};

const PARAMS: [&str; 7] = ["group_by", "from", "to", "team", "key", "kind", "format"];

pub async fn spend(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = query.keys().find(|name| !PARAMS.contains(&name.as_str())) {
        return Err(bad(
            unknown,
            format!("unknown parameter; known: {}", PARAMS.join(", ")),
        ));
    }
    let group_by = query.get("group_by").map_or("team", String::as_str);
    let group = RollupGroup::parse(group_by).ok_or_else(|| {
        bad(
            "group_by",
            format!("`{group_by}` is not one of team, key, model, day, hour, kind, tier, provider"),
        )
    })?;
    let csv = match query.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(bad("format", format!("`{other}` is not json or csv"))),
    };
    let now = now_ms();
    let time = |param: &str| -> Result<Option<i64>, ApiError> {
        query
            .get(param)
            .map(|text| clock::parse_time(text, now).map_err(|m| bad(param, m)))
            .transpose()
    };
    let mut filter = RollupFilter {
        from_ms: time("from")?,
        to_ms: time("to")?,
        kind: query.get("kind").cloned(),
        ..RollupFilter::default()
    };
    if let (Some(from), Some(to)) = (filter.from_ms, filter.to_ms) {
        if from > to {
            return Err(bad("from", "is after `to`"));
        }
    }
    if let Some(team) = query.get("team") {
        let found = store::find_team(&admin.store, team).await?;
        let team = found.ok_or_else(|| bad("team", format!("no team `{team}`")))?;
        filter.team_id = Some(team.id);
    }
    if let Some(key) = query.get("key") {
        let found = store::find_key(&admin.store, key).await?;
        let key = found.ok_or_else(|| bad("key", format!("no key `{key}`")))?;
        filter.key_id = Some(key.id);
    }
    let lines = rollup_spend(&admin.store, group, &filter)
        .await
        .map_err(|error| {
            tracing::error!(%error, "spend report failed");
            ApiError::Internal
        })?;
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            render_csv(&lines),
        )
            .into_response());
    }
    Ok(Json(json!({ "object": "list", "group_by": group_by, "data": lines })).into_response())
}
