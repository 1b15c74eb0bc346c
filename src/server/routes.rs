//! The route table and the layers every route passes through.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use super::{AppState, v1};
use crate::admin;
use crate::config::AuthMode;
use crate::error::ApiError;
use crate::proxy::Proxy;

impl FromRef<AppState> for Arc<Proxy> {
    fn from_ref(state: &AppState) -> Self {
        state.proxy.clone()
    }
}

/// Layers, outermost first (a request meets them top to bottom):
/// 1. `SetRequestId`: keeps the client's `x-request-id` or mints a UUID, so every later
///    stage, log line and ledger row carries one.
/// 2. `PropagateRequestId`: copies it onto the response, errors included.
/// 3. `CatchPanic`: a bug in a handler becomes an OpenAI-shaped 500, never a dropped
///    connection; inside the id layers so the 500 still carries the id.
///
/// Body limits are not a layer: metered routes read whole bodies under
/// `server.max_body_bytes`, pass-through routes stream under `server.max_upload_bytes`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/tollgate/me", get(admin::me))
        .route("/v1", any(v1::forward))
        .route("/v1/{*rest}", any(v1::forward))
        .merge(admin::router(state.admin.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when requests can be served and recorded: the database answers, or rows are
/// going to the spill file while it does not (pulling every replica out of the load
/// balancer during a database outage would turn it into an API outage); in keys mode,
/// the keys have been loaded at least once; and with the Redis limits backend under
/// `fail_closed`, Redis answers (every limited request would get a 503 otherwise).
/// Under `fail_open` a Redis outage only degrades: each replica limits alone.
/// `degraded` names every part not working, ready or not.
async fn readyz(State(state): State<AppState>) -> Response {
    let (database, redis) = tokio::join!(state.store.ping(), state.proxy.limits.shared_health());
    let ledger = &state.proxy.ledger;
    let keys = state.proxy.auth.mode == AuthMode::Passthrough || state.proxy.auth.cache.is_loaded();
    let mut degraded = Vec::new();
    if !database {
        degraded.push("database");
    }
    if ledger.is_spilling() {
        degraded.push("ledger");
    }
    if !keys {
        degraded.push("keys");
    }
    let redis_refuses = match redis {
        Some((false, refuses)) => {
            degraded.push("redis");
            refuses
        }
        _ => false,
    };
    let ready = keys && !redis_refuses;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "degraded": degraded,
        "database": if database { "ok" } else { "unreachable" },
        "ledger": if database && !ledger.is_spilling() { "ok" } else { "spilling" },
        "keys": if keys { "loaded" } else { "not_loaded" },
        "ledger_queue": ledger.queue_depth(),
        "ledger_spilled": ledger.spilled_rows(),
        "ledger_spilling": ledger.is_spilling(),
    });
    if let Some((reachable, _)) = redis {
        body["redis"] = json!(if reachable { "ok" } else { "unreachable" });
    }
    (status, Json(body)).into_response()
}

/// The Prometheus scrape; behind `metrics.bearer_token` when one is set.
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if let Err(error) = state.metrics_access.check(request.headers()) {
        return error.into_response();
    }
    match state.metrics.render() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            ApiError::Internal.into_response()
        }
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}
