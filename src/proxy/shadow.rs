//! Shadow requests: once a sampled request's answer is whole and on its way to the
//! client, a copy of the request goes to each candidate model in a task of its own, so
//! the client's answer never waits for it or changes because of it. A place is taken
//! from a fixed pool first; a request finding none is not mirrored, so a slow
//! candidate can pile up neither tasks nor memory. The task is on the shutdown tracker
//! and bounded by `routing.shadow_timeout`. Its row is kind `shadow`: never in budgets,
//! limits, team spend or spend reports, only in the shadow report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio_util::task::TaskTracker;

use super::Pricer;
use super::exchange::{Exchange, count};
use super::relay::BODY_KEEP_BYTES;
use super::routed::Attempts;
use super::upstream::{Upstreams, X_UPSTREAM_REQUEST_ID, response_headers};
use crate::config::AuthMode;
use crate::ledger::{Kind, LedgerRow, LedgerWriter, Outcome, PendingRow, RowRoute, ShadowMark};
use crate::metering::{Endpoint, Usage, UsageSource, usage};
use crate::pricing::tier;
use crate::routing::{Mirror, Routing, TargetRef};

/// A sampled request, ready to be mirrored once its answer is known.
pub struct ShadowJob {
    mirrors: Vec<Mirror>,
    request: Arc<Copy>,
}

/// What every mirror of one request shares.
struct Copy {
    routing: Arc<Routing>,
    upstreams: Arc<Upstreams>,
    pricer: Arc<Pricer>,
    ledger: LedgerWriter,
    tasks: TaskTracker,
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    mode: AuthMode,
    /// As sent to the model that answered the client.
    body: Bytes,
    endpoint: Endpoint,
    row_id: String,
    request_id: String,
    ts_ms: i64,
    caller: String,
    key_id: String,
    team_id: Option<String>,
    team: String,
    /// `service_tier` as the client sent it: the copy's body asks for it too.
    service_tier: Option<String>,
}

/// How one shadow call went.
struct Called {
    status: u16,
    outcome: Outcome,
    body: Bytes,
    upstream_request_id: Option<String>,
    ttfb: Option<Duration>,
}

impl ShadowJob {
    /// The job for a successful answer by `target`, if its model is shadowed and this
    /// request falls in the sample. Costs a map lookup when it is not.
    pub(super) fn for_answer(
        a: &Attempts,
        target: &TargetRef<'_>,
        exchange: &Exchange,
    ) -> Option<Box<Self>> {
        let mirrors = a.routing.mirrors(
            target.model,
            exchange.endpoint,
            exchange.streamed,
            &exchange.id,
        );
        if mirrors.is_empty() {
            return None;
        }
        Some(Box::new(Self {
            mirrors,
            request: Arc::new(Copy {
                routing: Arc::clone(&a.routing),
                upstreams: Arc::clone(&a.upstreams),
                pricer: Arc::clone(&a.pricer),
                ledger: a.ledger.clone(),
                tasks: a.tasks.clone(),
                method: a.method.clone(),
                path: a.path.clone(),
                query: a.query.clone(),
                headers: a.headers.clone(),
                mode: a.mode,
                body: exchange.request.clone(),
                endpoint: exchange.endpoint,
                row_id: exchange.id.clone(),
                request_id: exchange.request_id.clone(),
                ts_ms: exchange.ts_ms,
                caller: exchange.caller.clone(),
                key_id: exchange.key_id.clone(),
                team_id: exchange.team_id.clone(),
                team: a.team.clone(),
                service_tier: exchange.service_tier_requested.clone(),
            }),
        }))
    }

    /// Starts one task per candidate with a free place, after the client's answer.
    pub fn launch(self, answer: Bytes) {
        let routing = &self.request.routing;
        for mirror in self.mirrors {
            let target = TargetRef::new(mirror.upstream, &mirror.candidate);
            // Under the reserve the organisation's headroom is for real traffic.
            if routing.under_reserve(&target) {
                routing.shadowed(&mirror, "skipped_headroom");
                continue;
            }
            let Some(permit) = routing.shadow_permit() else {
                routing.shadowed(&mirror, "skipped_busy");
                continue;
            };
            // Taken now, so a ledger flush waits for the shadow row too.
            let pending = self.request.ledger.begin();
            let request = Arc::clone(&self.request);
            let answer = answer.clone();
            self.request.tasks.spawn(async move {
                let _permit = permit;
                request.mirror(mirror, answer, pending).await;
            });
        }
    }
}

// === impl Copy ===

impl Copy {
    async fn mirror(&self, mirror: Mirror, answer: Bytes, pending: PendingRow) {
        let started = Instant::now();
        let target = TargetRef::new(mirror.upstream, &mirror.candidate);
        let Ok(debit) = self.routing.admit(&target, &self.team, 0, false).await else {
            self.routing.shadowed(&mirror, "skipped_headroom");
            return;
        };
        let Some(upstream) = self.upstreams.get(mirror.upstream) else {
            return;
        };
        let forward = upstream.forward(&mirror.candidate);
        let Some(body) = crate::routing::with_model(&self.body, &forward.model) else {
            return;
        };
        let deadline = started + self.routing.shadow_timeout().min(upstream.total_timeout);
        let send = upstream
            .client
            .request(
                self.method.clone(),
                upstream.url_for(&self.path, self.query.as_deref(), forward.deployment),
            )
            .headers(upstream.request_headers(&self.headers, true, self.mode))
            .body(body.clone())
            .send();
        let first_byte = upstream
            .first_byte_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let called = match tokio::time::timeout(first_byte, send).await {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                self.routing
                    .answered(&target, status, response.headers(), debit);
                read(response, started, deadline).await
            }
            Ok(Err(error)) => {
                drop(debit);
                tracing::debug!(%error, candidate = %mirror.candidate, "shadow request failed");
                unanswered(Outcome::UpstreamUnreachable, 502)
            }
            Err(_elapsed) => {
                drop(debit);
                unanswered(Outcome::UpstreamTimeout, 504)
            }
        };
        let ok = called.outcome == Outcome::Ok;
        let read_usage = usage::from_body(&called.body);
        let (usage, source) = match read_usage.usage {
            Some(usage) => (usage, UsageSource::Upstream),
            None if ok => (
                self.count(&mirror, &body, &called.body).await,
                UsageSource::Estimated,
            ),
            None => (Usage::default(), UsageSource::Upstream),
        };
        let agreement = if ok {
            crate::routing::compare(self.endpoint, &answer, &called.body)
        } else {
            crate::routing::Agreement {
                text: None,
                value: None,
            }
        };
        // The copy asks for the client's tier (same body): priced at the one that served.
        let requested = self.service_tier.clone();
        let served = tier::served(read_usage.service_tier.as_deref(), requested.as_deref());
        let price = self.pricer.price_served(
            read_usage.model.as_deref(),
            Some(&mirror.candidate),
            &usage,
            served,
        );
        let served = served.to_owned();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let row = LedgerRow {
            // One per candidate rule: a replay of it is skipped, never counted twice.
            id: format!("{}.s{}", self.row_id, mirror.index),
            request_id: self.request_id.clone(),
            upstream_request_id: called.upstream_request_id,
            ts_ms: self.ts_ms,
            caller: self.caller.clone(),
            upstream: upstream.name.clone(),
            endpoint: self.endpoint.as_str().to_owned(),
            model_requested: Some(mirror.candidate.to_string()),
            model_answered: read_usage.model,
            streamed: false,
            usage,
            usage_source: source,
            status: called.status,
            outcome: called.outcome,
            latency_ms: millis(started.elapsed()),
            ttfb_ms: called.ttfb.map(millis),
            price,
            key_id: Some(self.key_id.clone()),
            team_id: self.team_id.clone(),
            kind: Kind::Shadow,
            service_tier_requested: requested,
            service_tier: Some(served),
            route: RowRoute {
                shadow: Some(ShadowMark {
                    of: self.row_id.clone(),
                    text_match: agreement.text,
                    value_match: agreement.value,
                }),
                ..RowRoute::default()
            },
            provider: upstream.kind.as_str().to_owned(),
            tokenizer: None,
        };
        self.routing
            .shadowed(&mirror, if ok { "answered" } else { "failed" });
        pending.record(row).await;
    }

    /// The candidate's usage counted locally, when it reported none.
    async fn count(&self, mirror: &Mirror, request: &Bytes, answer: &Bytes) -> Usage {
        let (endpoint, model) = (self.endpoint, mirror.candidate.to_string());
        let (request, answer) = (request.clone(), answer.clone());
        tokio::task::spawn_blocking(move || {
            count(endpoint, &model, &request, &usage::generated_text(&answer))
        })
        .await
        .unwrap_or_default()
    }
}

fn unanswered(outcome: Outcome, status: u16) -> Called {
    Called {
        status,
        outcome,
        body: Bytes::new(),
        upstream_request_id: None,
        ttfb: None,
    }
}

/// The candidate's body, whole up to `BODY_KEEP_BYTES` (beyond it the call counts as
/// cut: the shadow is not worth the memory), by `deadline`.
async fn read(response: reqwest::Response, started: Instant, deadline: Instant) -> Called {
    let status = response.status().as_u16();
    let upstream_request_id = response_headers(response.headers())
        .get(X_UPSTREAM_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut stream = Box::pin(response.bytes_stream());
    let mut body = BytesMut::new();
    let mut ttfb = None;
    let outcome = loop {
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                ttfb.get_or_insert_with(|| started.elapsed());
                if body.len() + chunk.len() > BODY_KEEP_BYTES {
                    break Outcome::UpstreamCut;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) if (200..300).contains(&status) => break Outcome::Ok,
            Ok(None) => break Outcome::UpstreamError,
            Ok(Some(Err(_))) => break Outcome::UpstreamCut,
            Err(_elapsed) => break Outcome::UpstreamTimeout,
        }
    };
    Called {
        status,
        outcome,
        body: body.freeze(),
        upstream_request_id,
        ttfb,
    }
}
