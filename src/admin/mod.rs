//! The admin API under `/admin` (teams, keys, spend), authorised by the admin key, the
//! `/dashboard` page that draws it, and `/v1/tollgate/me`, where a key reads its own
//! standing.

mod body;
mod dashboard;
mod keys;
mod me;
mod spend;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{self, KeyCache};
use crate::clock::now_ms;
use crate::config::Secret;
use crate::error::ApiError;
use crate::ledger::Store;

pub use me::me;

/// What the admin handlers share.
pub struct Admin {
    pub store: Store,
    pub cache: KeyCache,
    /// SHA-256 of the admin key; `None` closes the admin API.
    admin_key: Option<[u8; 32]>,
    /// Tier names a key or team may name.
    pub tiers: Vec<String>,
}

impl Admin {
    /// `tiers`: every tier name a key or team may be given (built-in and configured).
    pub fn new(
        store: Store,
        cache: KeyCache,
        admin_key: Option<&Secret>,
        tiers: Vec<String>,
    ) -> Self {
        Self {
            store,
            cache,
            admin_key: admin_key
                .filter(|key| !key.expose().is_empty())
                .map(|key| Sha256::digest(key.expose().as_bytes()).into()),
            tiers,
        }
    }

    /// Reloads this replica's key cache after a change made through it, so the change
    /// holds here before the admin call returns (other replicas poll for it).
    async fn reload(&self) {
        if let Err(error) = self.cache.refresh(&self.store).await {
            tracing::warn!(%error, "cannot reload keys after a change; the poller will retry");
            self.cache.changed();
        }
    }

    /// 200 for the admin key; 403 for a live tollgate key; 401 for anything else.
    fn authorise(&self, request: &Request) -> Result<(), ApiError> {
        let Some(expected) = &self.admin_key else {
            return Err(ApiError::InvalidApiKey {
                reason: "The admin API is disabled: set TOLLGATE_ADMIN_KEY to enable it.",
            });
        };
        let Some(token) = auth::bearer(request.headers()) else {
            return Err(ApiError::InvalidApiKey {
                reason: "The admin API needs the admin key as a Bearer token.",
            });
        };
        // Compare digests in constant time: the comparison reveals nothing about how
        // much of a guess was right.
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(given.ct_eq(expected)) {
            return Ok(());
        }
        if self.cache.check(token, now_ms()).is_ok() {
            return Err(ApiError::AdminOnly);
        }
        Err(ApiError::InvalidApiKey {
            reason: "Incorrect admin key provided.",
        })
    }
}

async fn require_admin(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    match admin.authorise(&request) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// The `/admin` routes, behind the admin-key check, and the dashboard's page, which is
/// not: it holds no data and fetches every figure from `/admin/dashboard/data`.
pub fn router<S: Clone + Send + Sync + 'static>(admin: Arc<Admin>) -> Router<S> {
    Router::new()
        .route(
            "/admin/teams",
            post(keys::create_team).get(keys::list_teams),
        )
        .route(
            "/admin/teams/{team}",
            get(keys::get_team).patch(keys::update_team),
        )
        .route("/admin/keys", post(keys::create_key).get(keys::list_keys))
        .route(
            "/admin/keys/{key}",
            get(keys::get_key)
                .patch(keys::update_key)
                .delete(keys::revoke_key),
        )
        .route("/admin/keys/{key}/revoke", post(keys::revoke_key))
        .route("/admin/spend", get(spend::spend))
        .route("/admin/dashboard/data", get(dashboard::data))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_admin))
        // Merged after `route_layer`, which wraps only the routes added before it.
        .merge(dashboard::router())
        .with_state(admin)
}
