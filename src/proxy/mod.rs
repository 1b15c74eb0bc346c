//! Forwarding to the upstream: metered endpoints are read, rewritten where needed,
//! relayed and recorded; every other `/v1` route is streamed through untouched.

mod admit;
mod buffered;
mod exchange;
mod model_match;
mod passthrough;
mod planned;
mod price;
mod relay;
mod request;
mod routed;
mod shadow;
pub mod sse;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Response};
use axum::response::IntoResponse;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Identity};
use crate::budgets::Budgets;
use crate::clock::now_ms;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::ledger::{LedgerWriter, Outcome};
use crate::limits::{Admission, Kind, Limiter, Limits, LimitsError};
use crate::metering::{Endpoint, UsageSource};
use crate::metrics::{Caller, InFlight, Metrics};
use crate::routing::{Plan, Routing};
use admit::Prompt;
use exchange::{Exchange, Finish};
use request::MeteredRequest;
use upstream::{Upstreams, X_REQUEST_ID};

pub use passthrough::check_path;
pub(crate) use passthrough::{passthrough, read_body};
pub use price::Pricer;
pub use routed::{X_TOLLGATE_ATTEMPTS, X_TOLLGATE_ROUTED_MODEL};
pub use upstream::UpstreamError;

/// Bodies larger than this are parsed on a blocking thread, off the async workers.
const INLINE_PARSE_BYTES: usize = 256 * 1024;

/// What the proxy handlers share.
pub struct Proxy {
    pub auth: Authenticator,
    pub budgets: Budgets,
    pub limits: Limiter,
    pub upstreams: Arc<Upstreams>,
    /// Aliases, fallbacks, downgrades, headroom shares and shadows.
    pub routing: Arc<Routing>,
    pub pricer: Arc<Pricer>,
    pub ledger: LedgerWriter,
    /// Relay and recording tasks; shutdown waits for them.
    pub tasks: TaskTracker,
    pub server: ServerConfig,
    pub metrics: Metrics,
}

/// A metered request: counted in flight from here, and in `tollgate_requests_total`
/// however it ends (requests refused here; forwarded ones when their exchange ends).
pub async fn metered(
    proxy: &Proxy,
    identity: Identity,
    endpoint: Endpoint,
    path: &str,
    parts: Parts,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    let observed = Observed {
        caller: Caller::from(&identity),
        in_flight: proxy.metrics.in_flight(),
        started: Instant::now(),
    };
    let mut refusal = Refusal {
        caller: observed.caller.clone(),
        endpoint,
        model: None,
    };
    let result = admit_and_forward(
        proxy,
        identity,
        endpoint,
        path,
        parts,
        body,
        observed,
        &mut refusal,
    )
    .await;
    if let Err(error) = &result {
        refusal.count(proxy, error);
    }
    result
}

/// What the metrics of a metered request need from its start.
struct Observed {
    caller: Caller,
    in_flight: InFlight,
    started: Instant,
}

/// How to count a request tollgate answers itself, before any upstream.
struct Refusal {
    caller: Caller,
    endpoint: Endpoint,
    /// As asked for, once the body is parsed.
    model: Option<String>,
}

impl Refusal {
    fn count(&self, proxy: &Proxy, error: &ApiError) {
        let limit = match error {
            ApiError::RateLimited(refusal) => Some(refusal.limit),
            ApiError::BudgetExceeded(_) => Some("budget"),
            ApiError::RouteRefused(_) => Some("route"),
            _ => None,
        };
        let model = proxy.pricer.model_label(self.model.as_deref());
        let status = error.status().as_u16();
        proxy
            .metrics
            .refused(&self.caller, model, self.endpoint.as_str(), status, limit);
    }
}

/// Reads, checks and admits the request, then forwards it. Errors returned are
/// counted by the caller; a refusal after admission (the budget's) is answered, with
/// the rate-limit standing, and counted here.
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts and where it stands"
)]
async fn admit_and_forward(
    proxy: &Proxy,
    identity: Identity,
    endpoint: Endpoint,
    path: &str,
    parts: Parts,
    body: Body,
    observed: Observed,
    refusal: &mut Refusal,
) -> Result<Response<Body>, ApiError> {
    let ts_ms = now_ms();
    let bytes = read_body(body, &parts.headers, proxy.server.max_body_bytes).await?;
    let request = if bytes.len() <= INLINE_PARSE_BYTES {
        MeteredRequest::parse(endpoint, bytes)?
    } else {
        // Parsing tens of MB of JSON takes long enough to stall other requests.
        tokio::task::spawn_blocking(move || MeteredRequest::parse(endpoint, bytes))
            .await
            .map_err(|_| ApiError::Internal)??
    };
    let requested = request.model.as_deref();
    let allowed = identity
        .key
        .as_ref()
        .and_then(|entry| entry.key.allowed_models.as_deref());
    let plan = planned::allowed_plan(proxy, requested, allowed)?;
    // An alias is judged by the model it sends first: limits, counting and windows.
    let model = plan
        .as_ref()
        .map_or(requested, |plan| plan.primary_model(requested));
    refusal.model = model.map(str::to_owned);
    match &plan {
        Some(plan) if plan.routed() => {
            for target in plan.targets(requested) {
                proxy.pricer.admit(target.model)?;
            }
        }
        _ => proxy.pricer.admit(model)?,
    }
    let mut prompt = Prompt::new(endpoint, model, &request.body);
    if let Some(limit) = proxy.pricer.context_window(model) {
        let output = request.max_output.unwrap_or(0);
        // A request within the window even at its prompt's bound needs no count.
        if prompt.bound().await?.saturating_add(output) > limit {
            check_context(prompt.count().await?, output, limit)?;
        }
    }
    let headroom = plan
        .as_ref()
        .is_some_and(|plan| proxy.routing.needs_tokens(plan, requested));
    if Budgets::applies(&identity) || headroom {
        // The reservation and the headroom ration are figured from the count: the
        // bound would hold back several times what the prompt can cost.
        prompt.count().await?;
    }
    if plan.is_none() {
        return Err(ApiError::NoUpstream {
            model: requested.unwrap_or_default().to_owned(),
        });
    }
    // Rate limits before the budget: a request they refuse never holds a reservation.
    let admission = match proxy.limits.figures(&identity, model) {
        Some(figures) => {
            let admit = (&identity, model, figures, request.max_output);
            Some(admit_limits(proxy, endpoint, admit, &mut prompt).await?)
        }
        None => None,
    };
    let prompt = prompt.counted();
    // Every answer from here on, success or error, tells the client where it stands.
    let standing = admission.as_ref().map(|admitted| admitted.standing.clone());
    let Some(plan) = plan else {
        return Err(ApiError::Internal);
    };
    let admitted = Admitted {
        identity,
        endpoint,
        plan,
        prompt,
        admission,
        ts_ms,
        observed,
    };
    let mut response = match forward_metered(proxy, admitted, path, parts, request).await {
        Ok(response) => response,
        Err(error) => {
            refusal.count(proxy, &error);
            error.into_response()
        }
    };
    if let Some(standing) = standing {
        standing.apply(response.headers_mut());
    }
    Ok(response)
}

/// Charges the rate limits with the prompt's bound when it fits, and only when it does
/// not, with the tokenizer's count: a request is refused only if its count does not fit
/// either. The exchange settles the charge to the real usage when it ends.
async fn admit_limits(
    proxy: &Proxy,
    endpoint: Endpoint,
    (identity, model, figures, max_output): (&Identity, Option<&str>, Limits, Option<u64>),
    prompt: &mut Prompt<'_>,
) -> Result<Admission, ApiError> {
    let limits = &proxy.limits;
    if !Limiter::needs_tokens(Some(&figures)) {
        return Ok(limits.admit(identity, model, figures, 0).await?);
    }
    let tokens = limits.estimate(endpoint, prompt.bound().await?, max_output);
    match limits.admit(identity, model, figures, tokens).await {
        Err(LimitsError::RateLimited(limited))
            if matches!(limited.kind, Kind::Tpm | Kind::Tpd) && prompt.could_shrink() =>
        {
            let tokens = limits.estimate(endpoint, prompt.count().await?, max_output);
            Ok(limits.admit(identity, model, figures, tokens).await?)
        }
        admitted => Ok(admitted?),
    }
}

/// A request past its checks, on its way upstream.
struct Admitted {
    identity: Identity,
    endpoint: Endpoint,
    plan: Plan,
    /// The prompt counted by the tokenizer, when a check needed the count.
    prompt: Option<u64>,
    admission: Option<Admission>,
    ts_ms: i64,
    observed: Observed,
}

/// Reserves the budget (for a downgrade when one applies), picks the first target, then
/// runs the attempts in a task of its own and waits for the answer.
async fn forward_metered(
    proxy: &Proxy,
    admitted: Admitted,
    path: &str,
    parts: Parts,
    request: MeteredRequest,
) -> Result<Response<Body>, ApiError> {
    let Admitted {
        identity,
        endpoint,
        plan,
        prompt,
        admission,
        ts_ms,
        observed,
    } = admitted;
    let started = observed.started;
    let requested = request.model.as_deref();
    // Time-ordered, so inserts append to the primary-key index instead of landing at
    // random pages of it.
    let row_id = uuid::Uuid::now_v7().to_string();
    let team = observed.caller.team.clone();
    // Until the exchange begins, a refusal (by the budget, or for want of headroom) or
    // the client hanging up (this handler dropped) gives the charge and the
    // reservation back.
    let mut held = planned::Held::new(proxy, admission);
    let plan = planned::reserve(
        proxy,
        &identity,
        plan,
        &request,
        prompt,
        (&row_id, ts_ms),
        &team,
        &mut held,
    )
    .await?;
    let tokens = prompt.map_or(0, |prompt| {
        proxy.limits.estimate(endpoint, prompt, request.max_output)
    });
    let (first, debit) = routed::first(&proxy.routing, &plan, requested, &team, tokens).await?;
    let upstream = plan
        .target(first, requested)
        .and_then(|target| proxy.upstreams.get(target.upstream))
        .ok_or(ApiError::Internal)?;
    let admission = held.release();
    let exchange = Exchange {
        id: row_id,
        pending: proxy.ledger.begin(),
        pricer: proxy.pricer.clone(),
        request_id: request_id(&parts.headers),
        caller: identity.display,
        labels: observed.caller,
        metrics: proxy.metrics.clone(),
        _in_flight: observed.in_flight,
        key_id: identity.key_id,
        team_id: identity.team_id,
        upstream: upstream.name.clone(),
        provider: upstream.kind,
        endpoint,
        model_requested: request.model.clone(),
        service_tier_requested: request.service_tier,
        streamed: request.stream,
        hide_usage: request.hide_usage,
        request: request.body.clone(),
        ts_ms,
        started,
        forwarded: Instant::now(),
        deadline: started + upstream.total_timeout,
        policy: proxy.server.on_client_disconnect,
        reserved_output: proxy.limits.estimate(endpoint, 0, request.max_output),
        limits: admission,
        route: crate::ledger::RowRoute {
            model_alias: plan.alias().map(str::to_owned),
            ..crate::ledger::RowRoute::default()
        },
        shadow: None,
    };
    let attempts = routed::Attempts {
        plan,
        routing: Arc::clone(&proxy.routing),
        upstreams: Arc::clone(&proxy.upstreams),
        ledger: proxy.ledger.clone(),
        tasks: proxy.tasks.clone(),
        pricer: Arc::clone(&proxy.pricer),
        method: parts.method,
        path: path.to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        mode: proxy.auth.mode,
        body: request.body,
        requested: request.model,
        team,
        tokens,
        first,
        debit,
    };
    // From here the exchange lives in a task of its own: hyper drops this handler if
    // the client hangs up before the upstream answers, and that must not drop the row
    // of a request the upstream may already be billing.
    let (reply, replied) = oneshot::channel();
    proxy.tasks.spawn(routed::run(attempts, exchange, reply));
    replied.await.map_err(|_| ApiError::Internal)
}

/// A request that never got an answer: nothing was billed upstream, so the row holds
/// zero tokens. The client gets its error before the row is queued.
async fn fail_exchange(
    exchange: Exchange,
    error: ApiError,
    reply: oneshot::Sender<Response<Body>>,
) {
    let outcome = match error {
        ApiError::UpstreamTimeout { .. } => Outcome::UpstreamTimeout,
        _ => Outcome::UpstreamUnreachable,
    };
    let status = error.status().as_u16();
    let _ = reply.send(error.into_response());
    exchange
        .finish(Finish {
            status,
            outcome: Some(outcome),
            source: Some(UsageSource::Estimated),
            ..Finish::default()
        })
        .await;
}

/// Refuses a request that cannot fit the model's context window: the prompt counted
/// with the tokenizer plus the output cap it asks for.
fn check_context(prompt: u64, output: u64, limit: u64) -> Result<(), ApiError> {
    let requested = prompt.saturating_add(output);
    if requested > limit {
        return Err(ApiError::ContextLengthExceeded {
            limit,
            requested,
            prompt,
            output,
        });
    }
    Ok(())
}

fn upstream_failure(upstream: &str, error: &reqwest::Error) -> ApiError {
    // reqwest's Display omits the cause chain; the chain never holds request headers.
    tracing::warn!(upstream, error = %error_chain(error), "upstream request failed");
    let upstream = upstream.to_owned();
    if error.is_timeout() {
        ApiError::UpstreamTimeout { upstream }
    } else {
        ApiError::UpstreamUnreachable { upstream }
    }
}

fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The id set by the request-id layer (the client's own, or a fresh one).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests;
