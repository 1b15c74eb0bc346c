//! The built-in dashboard: `/dashboard` serves a page (HTML, script and style compiled
//! into the binary, no build step, nothing fetched from elsewhere) that draws spend
//! per team over time, spend by model and by service tier, top keys and budget bars from
//! `GET /admin/dashboard/data`, which reads the ledger's rollups.
//!
//! Auth: the page itself carries no data and is served to anyone; every figure comes
//! from the data route, which sits behind the admin-key check like all of `/admin`
//! (401 without the admin key, 403 for a tollgate key). The page asks for the admin key
//! in a form, keeps it in the tab's `sessionStorage` and sends it as
//! `Authorization: Bearer`. Not HTTP Basic: a browser attaches Basic credentials to
//! every request to the origin by itself, cross-site ones included, which would let any
//! page the admin visits drive `POST /admin/keys` (CSRF); a header set by script is
//! never sent unasked, and the key never travels in a URL. The CSP below allows script
//! and style from this origin only (no inline code, so injected markup cannot run), no
//! form submission (a form that failed to reach its script would otherwise put the key
//! in a query string) and no framing.

mod data;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use data::data;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The page and its two assets; open routes (they hold no data).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        // The page is small and a stale copy after an upgrade would talk to a newer API.
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}
