//! `GET /v1/tollgate/me`: a key's own standing (its settings, its budgets and what is
//! left of them, and its spend today, this month and in all), and nothing of anyone
//! else's: every figure is filtered by the caller's own key id.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use crate::budgets::Period;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::ledger::rollup::{RollupFilter, RollupGroup, rollup_spend};
use crate::proxy::Proxy;

pub async fn me(State(proxy): State<Arc<Proxy>>, headers: HeaderMap) -> Response {
    match standing(&proxy, &headers).await {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn standing(proxy: &Proxy, headers: &HeaderMap) -> Result<serde_json::Value, ApiError> {
    let now = now_ms();
    let identity = proxy.auth.authenticate(headers, now)?;
    let store = proxy.budgets.store();
    let internal = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "cannot read the caller's standing");
        ApiError::Internal
    };
    let mut spend = serde_json::Map::new();
    for (label, from) in [
        ("today", Some(Period::Daily.start(now))),
        ("this_month", Some(Period::Monthly.start(now))),
        ("all_time", None),
    ] {
        let filter = RollupFilter {
            from_ms: from,
            key_id: Some(identity.key_id.clone()),
            ..RollupFilter::default()
        };
        let lines = rollup_spend(store, RollupGroup::All, &filter)
            .await
            .map_err(|e| internal(&e))?;
        let line = lines.into_iter().next().unwrap_or_default();
        let mut line = serde_json::to_value(line).map_err(|e| internal(&e))?;
        if let Some(object) = line.as_object_mut() {
            object.remove("group");
        }
        spend.insert(label.to_owned(), line);
    }
    let budgets = proxy
        .budgets
        .standings(&identity, now)
        .await
        .map_err(|e| internal(&e))?;
    let (key, team) = match &identity.key {
        Some(entry) => (
            serde_json::to_value(&entry.key).map_err(|e| internal(&e))?,
            serde_json::to_value(&*entry.team).map_err(|e| internal(&e))?,
        ),
        None => (json!({ "id": identity.key_id }), serde_json::Value::Null),
    };
    Ok(json!({
        "object": "tollgate.me",
        "key": key,
        "team": team,
        "budgets": budgets,
        "spend": spend,
    }))
}
