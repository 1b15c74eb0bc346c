//! `/v1/*`: which stage answers a request — the metered proxy, the batch and
//! fine-tuning routes that track ownership, or the plain pass-through.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::{Method, Response};
use axum::response::IntoResponse;

use super::AppState;
use crate::batch::{self, Tracker};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::metering::Endpoint;
use crate::proxy::{self, Proxy};

/// What `/v1/*` needs: the proxy, and the tracker that owns files, batches and jobs.
pub struct V1 {
    pub proxy: Arc<Proxy>,
    pub batches: Arc<Tracker>,
}

impl FromRef<AppState> for Arc<V1> {
    fn from_ref(state: &AppState) -> Self {
        state.v1.clone()
    }
}

/// `/v1/*`: metered endpoints on POST, pass-through for the rest.
pub async fn forward(State(v1): State<Arc<V1>>, request: Request) -> Response<Body> {
    let proxy = &v1.proxy;
    let (parts, body) = request.into_parts();
    let Some(path) = parts.uri.path().strip_prefix("/v1") else {
        return ApiError::NotFound {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        }
        .into_response();
    };
    if let Err(error) = proxy::check_path(path) {
        return error.into_response();
    }
    let identity = match proxy.auth.authenticate(&parts.headers, now_ms()) {
        Ok(identity) => identity,
        Err(error) => return error.into_response(),
    };
    let path = path.to_owned();
    // The other routes' futures are boxed: axum moves this handler's future into a box
    // of its own on every request, and tokio copies it around, so every byte their
    // state machines would add inline is paid by each metered request.
    let result = match Endpoint::from_path(&path) {
        Some(endpoint) if parts.method == Method::POST => {
            proxy::metered(proxy, identity, endpoint, &path, parts, body).await
        }
        _ => match batch::api::route(&parts.method, &path) {
            Some(route) => {
                Box::pin(batch::api::handle(
                    proxy,
                    &v1.batches,
                    identity,
                    route,
                    &path,
                    parts,
                    body,
                ))
                .await
            }
            None => Box::pin(proxy::passthrough(proxy, &path, parts, body)).await,
        },
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
