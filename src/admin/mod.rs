//! The admin API under `/admin` (teams, keys, spend, shadow comparisons), authorised by the admin key, the
//! The admin API under `/admin` (teams, keys, spend, reconciliation), authorised by the admin key, the
//! `/dashboard` page that draws it, and `/v1/tollgate/me`, where a key reads its own
//! standing.

mod body;
mod dashboard;
mod keys;
mod me;
mod reconcile;
mod shadow;
mod spend;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::auth::{self, KeyCache};
use crate::clock::now_ms;
use crate::config::Secret;
use crate::error::ApiError;
use crate::ledger::Store;
use crate::reconcile::Reconciler;

pub use me::me;

/// What the admin handlers share.
pub struct Admin {
    pub store: Store,
    pub cache: KeyCache,
    /// SHA-256 of the admin key; `None` closes the admin API.
    admin_key: Option<[u8; 32]>,
    /// Tier names a key or team may name.
    pub tiers: Vec<String>,
    /// `GET /admin/reconcile`; `None` answers 503.
    reconciler: Option<Arc<Reconciler>>,
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
                .map(|key| auth::secret::hash(key.expose())),
            tiers,
            reconciler: None,
        }
    }

    /// Serves `GET /admin/reconcile` with `reconciler`.
    pub fn with_reconciler(mut self, reconciler: Arc<Reconciler>) -> Self {
        self.reconciler = Some(reconciler);
        self
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
        // Constant time (subtle), on digests: see `secret::matches`.
        if auth::secret::matches(token, expected) {
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

/// One admin route: its method and path, and the handler serving them.
pub struct AdminRoute {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<Arc<Admin>>,
}

fn route<H, T>(method: Method, path: &'static str, handler: H) -> AdminRoute
where
    H: Handler<T, Arc<Admin>>,
    T: 'static,
{
    // The filter is derived from `method`, so the listed method is the served one. A
    // method axum cannot filter on serves nothing (405), which the route walk catches.
    let handler = match MethodFilter::try_from(method.clone()) {
        Ok(filter) => on(filter, handler),
        Err(_) => MethodRouter::new(),
    };
    AdminRoute {
        method,
        path,
        handler,
    }
}

/// Every admin route. The router is built from this list alone, and a test walks it
/// to check that each one refuses a tollgate key, so a new route cannot miss the check.
pub fn routes() -> Vec<AdminRoute> {
    vec![
        route(Method::POST, "/admin/teams", keys::create_team),
        route(Method::GET, "/admin/teams", keys::list_teams),
        route(Method::GET, "/admin/teams/{team}", keys::get_team),
        route(Method::PATCH, "/admin/teams/{team}", keys::update_team),
        route(Method::POST, "/admin/keys", keys::create_key),
        route(Method::GET, "/admin/keys", keys::list_keys),
        route(Method::GET, "/admin/keys/{key}", keys::get_key),
        route(Method::PATCH, "/admin/keys/{key}", keys::update_key),
        route(Method::DELETE, "/admin/keys/{key}", keys::revoke_key),
        route(Method::POST, "/admin/keys/{key}/revoke", keys::revoke_key),
        route(Method::GET, "/admin/spend", spend::spend),
        route(Method::GET, "/admin/shadow", shadow::shadow),
        route(Method::GET, "/admin/reconcile", reconcile::reconcile),
        route(Method::GET, "/admin/dashboard/data", dashboard::data),
    ]
}

/// The `/admin` routes, behind the admin-key check, and the dashboard's page, which is
/// not: it holds no data and fetches every figure from `/admin/dashboard/data`.
pub fn router<S: Clone + Send + Sync + 'static>(admin: Arc<Admin>) -> Router<S> {
    let mut router = Router::new();
    for AdminRoute { path, handler, .. } in routes() {
        // A path listed twice (one method each) has its method routers merged.
        router = router.route(path, handler);
    }
    router
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_admin))
        // Merged after `route_layer`, which wraps only the routes added before it.
        .merge(dashboard::router())
        .with_state(admin)
}
