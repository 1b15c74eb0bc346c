//! The buffered relay, for successful non-streamed answers: read the whole body, meter
//! and price it, and answer with the cost and token counts in headers. A body larger
//! than `BODY_KEEP_BYTES` (a big embeddings batch) switches to streaming partway, and
//! goes without those headers rather than held whole in memory.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response};
use axum::response::IntoResponse;
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::time::timeout_at;

use super::exchange::{Exchange, Finish};
use super::relay::{BODY_KEEP_BYTES, BodyTee, Head, Meter, UpstreamBody, channel, pump};
use crate::error::ApiError;
use crate::ledger::{Outcome, RowPrice};
use crate::metering::usage;
use crate::metering::{Usage, UsageSource};

pub const X_TOLLGATE_COST_USD: HeaderName = HeaderName::from_static("x-tollgate-cost-usd");
pub const X_TOLLGATE_PROMPT_TOKENS: HeaderName =
    HeaderName::from_static("x-tollgate-prompt-tokens");
pub const X_TOLLGATE_CACHED_TOKENS: HeaderName =
    HeaderName::from_static("x-tollgate-cached-tokens");
pub const X_TOLLGATE_COMPLETION_TOKENS: HeaderName =
    HeaderName::from_static("x-tollgate-completion-tokens");

/// The paths most answers never take (a body that breaks off, times out, reports no
/// usage or outgrows `BODY_KEEP_BYTES`) are boxed: this future is copied whole when
/// the exchange's task boxes it, so only the common path's state should be in it.
pub(super) async fn relay(
    mut exchange: Exchange,
    mut body: UpstreamBody,
    mut head: Head,
    reply: oneshot::Sender<Response<Body>>,
) {
    let mut buffer = BytesMut::new();
    let mut ttfb = None;
    loop {
        let chunk = match timeout_at(exchange.deadline.into(), body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                tracing::warn!(request_id = %exchange.request_id, %error, "upstream body broke off");
                let error = ApiError::UpstreamUnreachable {
                    upstream: exchange.upstream.clone(),
                };
                return Box::pin(fail(
                    exchange,
                    reply,
                    error,
                    Outcome::UpstreamCut,
                    ttfb,
                    head,
                ))
                .await;
            }
            Err(_elapsed) => {
                let error = ApiError::UpstreamTimeout {
                    upstream: exchange.upstream.clone(),
                };
                return Box::pin(fail(
                    exchange,
                    reply,
                    error,
                    Outcome::UpstreamTimeout,
                    ttfb,
                    head,
                ))
                .await;
            }
        };
        ttfb.get_or_insert_with(|| exchange.started.elapsed());
        buffer.extend_from_slice(&chunk);
        if buffer.len() > BODY_KEEP_BYTES {
            // Too big to hold: send what we have and stream the rest.
            let (tx, client_body) = channel();
            let _ = reply.send(head.response(client_body));
            let mut tee = BodyTee::default();
            tee.push(&buffer);
            let _ = tx.send(Ok(buffer.freeze())).await;
            let (status, id) = (head.status, head.upstream_request_id);
            return Box::pin(pump(exchange, body, tx, Meter::Body(tee), status, id, ttfb)).await;
        }
    }
    let body_done = std::time::Instant::now();
    let body = buffer.freeze();
    let read = usage::from_body(&body);
    let (usage, source) = match read.usage {
        Some(usage) => (usage, UsageSource::Upstream),
        None => {
            let generated = usage::generated_text(&body);
            (
                Box::pin(exchange.estimate(read.model.as_deref(), generated)).await,
                UsageSource::Estimated,
            )
        }
    };
    let finish = Finish {
        status: head.status.as_u16(),
        usage,
        source: Some(source),
        model_answered: read.model,
        service_tier: read.service_tier,
        upstream_request_id: head.upstream_request_id.take(),
        ttfb,
        ..Finish::default()
    };
    let price = exchange.price(&finish);
    add_cost_headers(&mut head, &usage, price.as_ref());
    let tail = body_done.elapsed();
    let shadow = exchange.shadow.take();
    let delivered = reply.send(head.response(Body::from(body.clone()))).is_ok();
    // After the client has its answer: a shadow request never delays it.
    if let Some(shadow) = shadow {
        shadow.launch(body);
    }
    let outcome = if delivered {
        Outcome::Ok
    } else {
        Outcome::ClientDisconnected
    };
    exchange
        .finish_priced(
            Finish {
                outcome: Some(outcome),
                tail,
                ..finish
            },
            price,
        )
        .await;
}

/// The body failed before it was whole: the client gets a clean 502/504 instead of a
/// truncated 200, and the row the prompt (nothing generated reached anyone).
async fn fail(
    exchange: Exchange,
    reply: oneshot::Sender<Response<Body>>,
    error: ApiError,
    outcome: Outcome,
    ttfb: Option<std::time::Duration>,
    head: Head,
) {
    let status = error.status().as_u16();
    let _ = reply.send(error.into_response());
    let usage = exchange.estimate(None, String::new()).await;
    exchange
        .finish(Finish {
            status,
            outcome: Some(outcome),
            usage,
            source: Some(UsageSource::Estimated),
            upstream_request_id: head.upstream_request_id,
            ttfb,
            ..Finish::default()
        })
        .await;
}

fn add_cost_headers(head: &mut Head, usage: &Usage, price: Option<&RowPrice>) {
    let headers = &mut head.headers;
    // Without a price the cost header is left out, never sent as "0".
    if let Some(price) = price {
        if let Ok(value) = HeaderValue::from_str(&price.cost.to_decimal_string()) {
            headers.insert(X_TOLLGATE_COST_USD, value);
        }
    }
    for (name, count) in [
        (X_TOLLGATE_PROMPT_TOKENS, usage.prompt_tokens),
        (X_TOLLGATE_CACHED_TOKENS, usage.cached_tokens),
        (X_TOLLGATE_COMPLETION_TOKENS, usage.completion_tokens),
    ] {
        headers.insert(name, HeaderValue::from(count));
    }
}
