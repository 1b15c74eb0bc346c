//! The attempt loop: a metered request goes to its plan's targets in order until one
//! gives an answer that is not a retryable failure, or the plan, its `max_attempts`,
//! its deadline or its client runs out. Only a failure before anything reached the
//! client moves on (a 429, a 5xx, no connection, no response head in time): once an
//! answer's head is relayed, a stream's included, that is the answer.
//!
//! Every upstream call that reached the upstream has a ledger row, so a failed
//! attempt's spend is never lost: the call whose answer the client got keeps the
//! request's row id (which also settles its budget reservation), each earlier one is
//! recorded as `<row id>.<attempt>`. A connection that was never made reached no one
//! and is only counted, unless it is the last, whose row is the request's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::exchange::Exchange;
use super::relay;
use super::shadow::ShadowJob;
use super::upstream::{Upstreams, X_UPSTREAM_REQUEST_ID, response_headers};
use super::{fail_exchange, upstream_failure};
use crate::config::AuthMode;
use crate::error::{ApiError, HumanWait, RouteRefusal};
use crate::ledger::{LedgerRow, LedgerWriter, Outcome};
use crate::metering::{Usage, UsageSource, usage};
use crate::pricing::tier;
use crate::routing::{Debit, Failure, Plan, Routing, TargetRef};

/// The model tollgate asked the upstream that answered for, when routing chose it.
pub const X_TOLLGATE_ROUTED_MODEL: HeaderName = HeaderName::from_static("x-tollgate-routed-model");
/// Upstream calls the answer took, when more than one.
pub const X_TOLLGATE_ATTEMPTS: HeaderName = HeaderName::from_static("x-tollgate-attempts");

/// The most of a refusal's body read for its row: an error answer is small, and what
/// it holds beyond this is not usage.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// What the loop needs besides the exchange: the request as received, and where it may go.
pub(super) struct Attempts {
    pub plan: Plan,
    pub routing: Arc<Routing>,
    pub upstreams: Arc<Upstreams>,
    pub ledger: LedgerWriter,
    pub tasks: TaskTracker,
    pub pricer: Arc<super::Pricer>,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// The client's headers; each upstream makes its own from them.
    pub headers: HeaderMap,
    pub mode: AuthMode,
    /// The body for the model the client asked for; other models get it rewritten.
    pub body: Bytes,
    /// The model the client sent.
    pub requested: Option<String>,
    /// The caller's team (its name; empty without one), for shares of headroom.
    pub team: String,
    /// The request's token estimate, for headroom.
    pub tokens: u64,
    /// The target chosen before the exchange began, and what it took from headroom.
    pub first: usize,
    pub debit: Option<Debit>,
}

/// Picks the first target: the first in order that is not cooling down and has room
/// for the team now; failing that, waits (up to `queue_timeout`) for room on the first
/// that is not cooling down. Cooldowns hold for routed plans only: a request for a
/// model by its own name always goes to its upstream.
pub(super) async fn first(
    routing: &Routing,
    plan: &Plan,
    requested: Option<&str>,
    team: &str,
    tokens: u64,
) -> Result<(usize, Option<Debit>), ApiError> {
    let mut soonest: Option<Duration> = None;
    let mut open = None;
    for i in 0..plan.len() {
        let Some(target) = plan.target(i, requested) else {
            break;
        };
        if plan.routed() {
            if let Some(left) = routing.cooling(&target) {
                soonest = Some(soonest.map_or(left, |s| s.min(left)));
                routing.skipped(&target, "cooling_down");
                continue;
            }
        }
        open.get_or_insert(i);
        if let Ok(debit) = routing.admit(&target, team, tokens, false).await {
            return Ok((i, debit));
        }
    }
    let model = plan
        .alias()
        .or(plan.primary_model(requested))
        .unwrap_or_default();
    let Some(i) = open else {
        let wait = soonest.unwrap_or(Duration::from_secs(1));
        return Err(ApiError::RouteRefused(Box::new(
            RouteRefusal::CoolingDown {
                model: model.to_owned(),
                retry: HumanWait(wait),
                retry_after: wait,
            },
        )));
    };
    let Some(target) = plan.target(i, requested) else {
        return Err(ApiError::Internal);
    };
    match routing.admit(&target, team, tokens, true).await {
        Ok(debit) => Ok((i, debit)),
        Err(refused) => {
            routing.refused(&target, team);
            Err(ApiError::RouteRefused(Box::new(RouteRefusal::Headroom {
                model: target.model.unwrap_or(model).to_owned(),
                upstream: routing.upstream_name(target.upstream).to_owned(),
                kind: refused.kind,
                team: if team.is_empty() {
                    "(none)".to_owned()
                } else {
                    team.to_owned()
                },
                share: refused.share,
                retry: HumanWait(refused.retry_after),
                retry_after: refused.retry_after,
            })))
        }
    }
}

/// Runs the attempts in the exchange's own task and relays the answer to `reply`.
pub(super) async fn run(
    mut a: Attempts,
    mut exchange: Exchange,
    reply: oneshot::Sender<Response<Body>>,
) {
    let requested = a.requested.take();
    let requested = requested.as_deref();
    let (mut index, mut debit, mut number) = (a.first, a.debit.take(), 1_u32);
    loop {
        let Some(target) = a.plan.target(index, requested) else {
            Box::pin(fail_exchange(exchange, ApiError::Internal, reply)).await;
            return;
        };
        let Some(upstream) = a.upstreams.get(target.upstream) else {
            Box::pin(fail_exchange(exchange, ApiError::Internal, reply)).await;
            return;
        };
        let Some(body) = a.body_for(&target, requested, &mut exchange) else {
            Box::pin(fail_exchange(exchange, ApiError::Internal, reply)).await;
            return;
        };
        // The model as this upstream names it: a prefix stripped, an Azure deployment.
        let model = target.model.or(requested);
        let forward = model.map(|model| upstream.forward(model));
        let body = match (&forward, model) {
            (Some(forward), Some(model)) if forward.model != model => {
                crate::routing::with_model(&body, &forward.model).unwrap_or(body)
            }
            _ => body,
        };
        let url = upstream.url_for(
            &a.path,
            a.query.as_deref(),
            forward.as_ref().and_then(|f| f.deployment),
        );
        exchange.provider = upstream.kind;
        exchange.route.attempt = number;
        exchange.request = body.clone();
        exchange.forwarded = Instant::now();
        let wait = upstream
            .first_byte_timeout
            .min(exchange.deadline.saturating_duration_since(Instant::now()));
        // The last target the plan can try, with no shadow to copy them for: the
        // client's headers are stripped in place instead of copied.
        let headers = if index + 1 >= a.plan.len() && !a.routing.mirrors_any() {
            upstream.request_headers_from(std::mem::take(&mut a.headers), true, a.mode)
        } else {
            upstream.request_headers(&a.headers, true, a.mode)
        };
        let send = upstream
            .client
            .request(a.method.clone(), url)
            .headers(headers)
            .body(body)
            .send();
        let (failure, error) = match tokio::time::timeout(wait, send).await {
            Ok(Ok(mut response)) => {
                let status = response.status().as_u16();
                a.routing
                    .answered(&target, status, response.headers(), debit.take());
                if Routing::retryable(status) {
                    if let Some((i, d)) = a.next(requested, index, number, &exchange, &reply).await
                    {
                        record_refusal(&exchange, &a.ledger, response, status).await;
                        a.fell_back(&target, Failure::Status(status));
                        (index, debit, number) = (i, d, number + 1);
                        continue;
                    }
                }
                let ok = (200..300).contains(&status);
                if a.plan.routed() {
                    a.routing
                        .attempted(&target, if ok { "answered" } else { "failed" });
                }
                if a.plan.routed() || number > 1 {
                    mark(response.headers_mut(), &target, number);
                }
                if ok {
                    exchange.shadow = ShadowJob::for_answer(&a, &target, &exchange);
                }
                // Boxed, so the task's future stays small: tokio copies a task's whole
                // future when it spawns it and when it finishes.
                Box::pin(relay::run(exchange, response, reply)).await;
                return;
            }
            Ok(Err(error)) if error.is_connect() => (Failure::Connect, Some(error)),
            Ok(Err(error)) if error.is_timeout() => (Failure::Timeout, Some(error)),
            Ok(Err(error)) => (Failure::Error, Some(error)),
            Err(_elapsed) => (Failure::Timeout, None),
        };
        drop(debit.take());
        let api_error = match &error {
            Some(error) => upstream_failure(&upstream.name, error),
            None => ApiError::UpstreamTimeout {
                upstream: upstream.name.clone(),
            },
        };
        if let Some((i, d)) = a.next(requested, index, number, &exchange, &reply).await {
            // A connection never made reached no one: nothing to record.
            if failure != Failure::Connect {
                let outcome = match failure {
                    Failure::Timeout => Outcome::UpstreamTimeout,
                    _ => Outcome::UpstreamUnreachable,
                };
                let status = api_error.status().as_u16();
                record_unanswered(&exchange, &a.ledger, status, outcome).await;
            }
            a.fell_back(&target, failure);
            (index, debit, number) = (i, d, number + 1);
            continue;
        }
        if a.plan.routed() {
            a.routing.attempted(&target, "failed");
        }
        Box::pin(fail_exchange(exchange, api_error, reply)).await;
        return;
    }
}

// === impl Attempts ===

impl Attempts {
    /// The body for `target`, with the exchange set up for it: a routed target's model
    /// and upstream, and the body rewritten when the model is not the client's.
    fn body_for(
        &self,
        target: &TargetRef<'_>,
        requested: Option<&str>,
        exchange: &mut Exchange,
    ) -> Option<Bytes> {
        if !self.plan.routed() {
            return Some(self.body.clone());
        }
        exchange.upstream = self.routing.upstream_name(target.upstream).to_owned();
        exchange.model_requested = target.model.map(str::to_owned);
        exchange.route.downgraded_from = target.downgraded_from.map(str::to_owned);
        match target.model.filter(|model| Some(*model) != requested) {
            Some(model) => crate::routing::with_model(&self.body, model),
            None => Some(self.body.clone()),
        }
    }

    fn fell_back(&self, target: &TargetRef<'_>, failure: Failure) {
        self.routing.attempted(target, "fell_back");
        self.routing.fell_back(self.plan.alias(), failure);
    }

    /// The next target to try after attempt `number` at `index` failed, with what it
    /// took from headroom: only while attempts, time and the client remain, and never
    /// one that is cooling down or has no room for the team now (fallbacks do not wait).
    async fn next(
        &self,
        requested: Option<&str>,
        index: usize,
        number: u32,
        exchange: &Exchange,
        reply: &oneshot::Sender<Response<Body>>,
    ) -> Option<(usize, Option<Debit>)> {
        if number >= self.plan.max_attempts()
            || Instant::now() >= exchange.deadline
            || reply.is_closed()
        {
            return None;
        }
        for i in index + 1..self.plan.len() {
            let target = self.plan.target(i, requested)?;
            if self.routing.cooling(&target).is_some() {
                self.routing.skipped(&target, "cooling_down");
                continue;
            }
            match self
                .routing
                .admit(&target, &self.team, self.tokens, false)
                .await
            {
                Ok(debit) => return Some((i, debit)),
                Err(_) => self.routing.skipped(&target, "headroom"),
            }
        }
        None
    }
}

/// Tells the client which model answered and after how many calls.
fn mark(headers: &mut HeaderMap, target: &TargetRef<'_>, number: u32) {
    let value = match target.prepared.and_then(|p| p.header.clone()) {
        Some(value) => Some(value),
        None => target
            .model
            .and_then(|model| HeaderValue::from_str(model).ok()),
    };
    if let Some(value) = value {
        headers.insert(X_TOLLGATE_ROUTED_MODEL, value);
    }
    if number > 1 {
        headers.insert(X_TOLLGATE_ATTEMPTS, HeaderValue::from(number));
    }
}

/// The row of an attempt the upstream refused (429, 5xx): usage from its body if it
/// reports any (an error answer normally bills nothing).
async fn record_refusal(
    exchange: &Exchange,
    ledger: &LedgerWriter,
    response: reqwest::Response,
    status: u16,
) {
    let upstream_request_id = response_headers(response.headers())
        .get(X_UPSTREAM_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ttfb = exchange.started.elapsed();
    // A slow error body must not hold up the fallback for long.
    let by = exchange
        .deadline
        .min(Instant::now() + Duration::from_secs(5));
    let body = read_bounded(response, by).await;
    let read = usage::from_body(&body);
    let row = attempt_row(
        exchange,
        status,
        Outcome::UpstreamError,
        read.usage.unwrap_or_default(),
        read.model,
        upstream_request_id,
        Some(ttfb),
        UsageSource::Upstream,
    );
    log_fallback(exchange, status);
    ledger.begin().record(row).await;
}

/// The row of an attempt that got no answer (timed out, or broke off before the head).
async fn record_unanswered(
    exchange: &Exchange,
    ledger: &LedgerWriter,
    status: u16,
    outcome: Outcome,
) {
    let row = attempt_row(
        exchange,
        status,
        outcome,
        Usage::default(),
        None,
        None,
        None,
        UsageSource::Estimated,
    );
    log_fallback(exchange, status);
    ledger.begin().record(row).await;
}

fn log_fallback(exchange: &Exchange, status: u16) {
    tracing::info!(
        request_id = %exchange.request_id,
        upstream = %exchange.upstream,
        model = exchange.model_requested.as_deref().unwrap_or(""),
        attempt = exchange.route.attempt,
        status,
        "attempt failed; trying the next target"
    );
}

#[expect(clippy::too_many_arguments, reason = "one row's figures")]
fn attempt_row(
    exchange: &Exchange,
    status: u16,
    outcome: Outcome,
    usage: Usage,
    model_answered: Option<String>,
    upstream_request_id: Option<String>,
    ttfb: Option<Duration>,
    source: UsageSource,
) -> LedgerRow {
    // An error answer names no tier: the requested one, as for any row without it.
    let served = tier::served(None, exchange.service_tier_requested.as_deref());
    let price = exchange.pricer.price_served(
        model_answered.as_deref(),
        exchange.model_requested.as_deref(),
        &usage,
        served,
    );
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    LedgerRow {
        // Deterministic from the request's row and the attempt: a replay never doubles.
        id: format!("{}.{}", exchange.id, exchange.route.attempt),
        request_id: exchange.request_id.clone(),
        upstream_request_id,
        ts_ms: exchange.ts_ms,
        caller: exchange.caller.clone(),
        upstream: exchange.upstream.clone(),
        endpoint: exchange.endpoint.as_str().to_owned(),
        model_requested: exchange.model_requested.clone(),
        model_answered,
        streamed: exchange.streamed,
        usage,
        usage_source: source,
        status,
        outcome,
        latency_ms: millis(exchange.started.elapsed()),
        ttfb_ms: ttfb.map(millis),
        price,
        key_id: Some(exchange.key_id.clone()),
        team_id: exchange.team_id.clone(),
        kind: crate::ledger::Kind::Realtime,
        service_tier_requested: exchange.service_tier_requested.clone(),
        service_tier: Some(served.to_owned()),
        route: exchange.route.clone(),
        provider: exchange.provider.as_str().to_owned(),
        tokenizer: None,
    }
}

/// Up to `ERROR_BODY_BYTES` of a body, by `deadline`; what is left is dropped with the
/// connection.
async fn read_bounded(response: reqwest::Response, deadline: Instant) -> Bytes {
    let mut body = Box::pin(response.bytes_stream());
    let mut out = BytesMut::new();
    while out.len() < ERROR_BODY_BYTES {
        match tokio::time::timeout_at(deadline.into(), body.next()).await {
            Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.freeze()
}
