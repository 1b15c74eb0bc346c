//! The poller: every `poll_interval_secs` it asks the upstream about each unfinished
//! batch and job; a batch that reached a terminal status with output is billed, a job
//! that succeeded is billed its trained tokens. A failed poll backs off; an object the
//! upstream answers 404 for, poll after poll, is reported lost (log, metric, terminal
//! state), never silently dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bill::bill_output;
use super::store::{self, CLOSE, Object, PollUpdate, Tracked, billing};
use super::{BatchError, Tracker};
use crate::clock::now_ms;
use crate::ledger::{Bind, Kind, LedgerRow, Outcome, Then};
use crate::metering::{Usage, UsageSource};
use crate::proxy::upstream::Upstream;

/// A create that never recorded its upstream id stops holding enqueued tokens after this.
const STALE_PENDING_MS: i64 = 10 * 60 * 1000;

/// Batch statuses after which the output file is final.
const BILLABLE: [&str; 3] = ["completed", "expired", "cancelled"];
/// Batch statuses after which nothing will be billed.
const UNBILLABLE: [&str; 1] = ["failed"];

#[derive(Deserialize)]
struct BatchObject {
    status: String,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    completed_at: Option<i64>,
    expired_at: Option<i64>,
    cancelled_at: Option<i64>,
}

#[derive(Deserialize)]
struct JobObject {
    status: String,
    model: Option<String>,
    trained_tokens: Option<u64>,
    finished_at: Option<i64>,
    #[serde(default)]
    result_files: Vec<String>,
}

impl Tracker {
    /// Starts the poll loop; it ends when `stop` is cancelled.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let tracker = Arc::clone(self);
        tokio::spawn(async move {
            let interval = Duration::from_secs(tracker.config.poll_interval_secs);
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                    () = tracker.wake.notified() => {}
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tracker.poll(true) => {}
                }
            }
        })
    }

    /// Polls every unfinished batch and job now, due or not, and returns how many
    /// (operators' "poll now", and tests).
    pub async fn poll_all(&self) -> usize {
        self.poll(false).await
    }

    async fn poll(&self, due_only: bool) -> usize {
        if self.needs_caller_key() {
            // Billed when their owners retrieve them (see `api::retrieved`).
            return 0;
        }
        let _pass = self.pass.lock().await;
        let now = now_ms();
        match store::drop_stale_pending(&self.store, now - STALE_PENDING_MS).await {
            Ok(0) => {}
            Ok(dropped) => tracing::warn!(dropped, "batch creates never confirmed: forgotten"),
            Err(error) => tracing::debug!(%error, "cannot clear stale batch creates"),
        }
        let active = match store::active(&self.store, due_only.then_some(now)).await {
            Ok(active) => active,
            Err(error) => {
                tracing::warn!(%error, "cannot read tracked batches; retrying next interval");
                return 0;
            }
        };
        let count = active.len();
        for tracked in active {
            self.poll_one(&tracked, None).await;
        }
        count
    }

    /// Polls one object; `auth` stands in for the upstream key (passthrough mode).
    pub(super) async fn poll_one(&self, tracked: &Tracked, auth: Option<&HeaderValue>) {
        let result = match tracked.object {
            Object::Batch => self.poll_batch(tracked, auth).await,
            Object::FineTuningJob => self.poll_job(tracked, auth).await,
            Object::File => Ok(()),
        };
        if let Err(error) = result {
            self.failed_poll(tracked, &error).await;
        }
    }

    async fn poll_batch(
        &self,
        tracked: &Tracked,
        auth: Option<&HeaderValue>,
    ) -> Result<(), BatchError> {
        let batch: BatchObject = self
            .get_json(&format!("/batches/{}", tracked.id), auth)
            .await?;
        let now = now_ms();
        for file in [&batch.output_file_id, &batch.error_file_id]
            .into_iter()
            .flatten()
        {
            self.own_file(tracked, file, now).await?;
        }
        let status = batch.status.as_str();
        let next = if BILLABLE.contains(&status) {
            billing::BILLING
        } else if UNBILLABLE.contains(&status) {
            billing::BILLED
        } else {
            billing::TRACKING
        };
        let update = PollUpdate {
            status: Some(status),
            billing: next,
            output_file_id: batch.output_file_id.as_deref(),
            attempts: 0,
            next_poll_ms: now + self.interval_ms(0),
        };
        store::update(&self.store, &tracked.id, &update, now).await?;
        match next {
            billing::BILLING => {}
            billing::BILLED => {
                return self
                    .finish(tracked, "failed upstream: nothing to bill")
                    .await;
            }
            _ => return Ok(()),
        }
        let ts_ms = [batch.completed_at, batch.expired_at, batch.cancelled_at]
            .into_iter()
            .flatten()
            .next()
            .map_or(now, |secs| secs.saturating_mul(1000));
        if let Some(file) = &batch.output_file_id {
            let billed = bill_output(self, tracked, file, ts_ms, auth).await?;
            tracing::info!(
                batch = %tracked.id,
                status,
                billed = billed.cursor.billed,
                failed = billed.cursor.failed,
                malformed = billed.cursor.malformed,
                resumed = billed.resumed,
                "batch output billed"
            );
        }
        self.finish(tracked, "billed").await
    }

    async fn poll_job(
        &self,
        tracked: &Tracked,
        auth: Option<&HeaderValue>,
    ) -> Result<(), BatchError> {
        let job: JobObject = self
            .get_json(&format!("/fine_tuning/jobs/{}", tracked.id), auth)
            .await?;
        let now = now_ms();
        for file in &job.result_files {
            self.own_file(tracked, file, now).await?;
        }
        let terminal = matches!(job.status.as_str(), "succeeded" | "failed" | "cancelled");
        let update = PollUpdate {
            status: Some(&job.status),
            billing: if terminal {
                billing::BILLING
            } else {
                billing::TRACKING
            },
            output_file_id: None,
            attempts: 0,
            next_poll_ms: now + self.interval_ms(0),
        };
        store::update(&self.store, &tracked.id, &update, now).await?;
        if !terminal {
            return Ok(());
        }
        let trained = job.trained_tokens.unwrap_or(0);
        let mut rows = Vec::new();
        if job.status == "succeeded" && trained > 0 {
            let base = job
                .model
                .or_else(|| tracked.model.clone())
                .unwrap_or_default();
            let ts_ms = job
                .finished_at
                .map_or(now, |secs| secs.saturating_mul(1000));
            rows.push(self.training_row(tracked, &base, trained, ts_ms));
        }
        // The row and the end of tracking in one transaction: a restart between them
        // would otherwise poll again, and the row id would skip the second insert anyway.
        let binds = [
            Bind::Text(billing::BILLED.to_owned()),
            Bind::Int(now_ms()),
            Bind::Text(tracked.id.clone()),
        ];
        let then = Then {
            sql: CLOSE,
            binds: &binds,
        };
        self.store.insert_then(&rows, &then).await?;
        if let Some(reservation) = &tracked.reservation_id {
            store::release(&self.store, reservation).await?;
        }
        tracing::info!(job = %tracked.id, status = %job.status, trained, "fine-tuning job billed");
        Ok(())
    }

    fn training_row(&self, tracked: &Tracked, base: &str, trained: u64, ts_ms: i64) -> LedgerRow {
        let price = self.pricer.price_training(base, trained);
        if let Some(price) = &price {
            self.metrics.job_spend.cell(&["training"]).add(price.cost);
        }
        LedgerRow {
            id: format!("training:{}", tracked.id),
            request_id: tracked.id.clone(),
            upstream_request_id: None,
            ts_ms,
            caller: tracked.caller.clone(),
            upstream: self.upstream().map(|u| u.name.clone()).unwrap_or_default(),
            endpoint: "fine_tuning.jobs".to_owned(),
            model_requested: Some(base.to_owned()),
            model_answered: None,
            service_tier_requested: None,
            service_tier: None,
            streamed: false,
            usage: Usage {
                prompt_tokens: trained,
                ..Usage::default()
            },
            usage_source: UsageSource::Upstream,
            status: 200,
            outcome: Outcome::Ok,
            latency_ms: 0,
            ttfb_ms: None,
            price,
            key_id: Some(tracked.key_id.clone()),
            team_id: tracked.team_id.clone(),
            kind: Kind::Training,
            route: crate::ledger::RowRoute::default(),
            provider: "openai".to_owned(),
            tokenizer: None,
        }
    }

    /// Ends a batch's billing and frees its budget reservation.
    async fn finish(&self, tracked: &Tracked, why: &str) -> Result<(), BatchError> {
        let binds = [
            Bind::Text(billing::BILLED.to_owned()),
            Bind::Int(now_ms()),
            Bind::Text(tracked.id.clone()),
        ];
        self.store
            .insert_then(
                &[],
                &Then {
                    sql: CLOSE,
                    binds: &binds,
                },
            )
            .await?;
        if let Some(reservation) = &tracked.reservation_id {
            store::release(&self.store, reservation).await?;
        }
        tracing::debug!(id = %tracked.id, why, "batch tracking finished");
        Ok(())
    }

    /// A failed poll: back off; after `lost_after_attempts` 404s in a row, report the
    /// object lost and stop polling it.
    async fn failed_poll(&self, tracked: &Tracked, error: &BatchError) {
        self.metrics
            .batch_poll_errors
            .with_label_values(&[error.label()])
            .inc();
        let attempts = tracked.attempts.saturating_add(1);
        let now = now_ms();
        let lost = error.is_not_found() && attempts >= self.config.lost_after_attempts;
        let update = if lost {
            self.metrics
                .batch_lost
                .with_label_values(&[tracked.object.as_str()])
                .inc();
            tracing::error!(
                id = %tracked.id,
                object = tracked.object.as_str(),
                key = %tracked.caller,
                attempts,
                %error,
                "the upstream lost a tracked batch or job: marked lost, nothing more will be billed for it"
            );
            PollUpdate {
                status: Some("lost"),
                billing: billing::LOST,
                output_file_id: None,
                attempts,
                next_poll_ms: i64::MAX,
            }
        } else {
            tracing::warn!(id = %tracked.id, attempts, %error, "batch poll failed; backing off");
            PollUpdate {
                status: None,
                billing: &tracked.billing,
                output_file_id: None,
                attempts,
                next_poll_ms: now + self.interval_ms(attempts),
            }
        };
        if let Err(error) = store::update(&self.store, &tracked.id, &update, now).await {
            tracing::warn!(%error, id = %tracked.id, "cannot record a failed batch poll");
        }
        if lost {
            if let Some(reservation) = &tracked.reservation_id {
                if let Err(error) = store::release(&self.store, reservation).await {
                    tracing::warn!(%error, "cannot release a lost batch's reservation");
                }
            }
        }
    }

    /// The wait before the next poll after `attempts` failures: the interval, doubled
    /// per failure, capped.
    fn interval_ms(&self, attempts: u32) -> i64 {
        let base = self.config.poll_interval_secs;
        let secs = base
            .saturating_mul(1u64 << attempts.min(20))
            .min(self.config.max_backoff_secs.max(base));
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Output, error and result files belong to whoever owns the batch or job.
    async fn own_file(&self, tracked: &Tracked, file: &str, now: i64) -> Result<(), BatchError> {
        let new = store::NewObject {
            id: file.to_owned(),
            object: Object::File,
            owner: tracked.owner.clone(),
            key_id: tracked.key_id.clone(),
            team_id: tracked.team_id.clone(),
            caller: tracked.caller.clone(),
            created_ms: now,
            billing: billing::NONE,
            endpoint: None,
            model: None,
            input_file_id: None,
            enqueued_tokens: 0,
            reservation_id: None,
        };
        store::insert(&self.store, &new, now).await?;
        Ok(())
    }

    pub(super) fn upstream(&self) -> Result<&Upstream, BatchError> {
        self.upstreams.route(None).ok_or(BatchError::NoUpstream)
    }

    /// A GET to the upstream with its key, or with `auth` where tollgate has none.
    pub(super) fn get(
        &self,
        upstream: &Upstream,
        path: &str,
        auth: Option<&HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        upstream
            .client
            .get(upstream.url(path, None))
            .headers(upstream.request_headers(&headers, false, self.mode))
            .timeout(upstream.total_timeout)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        auth: Option<&HeaderValue>,
    ) -> Result<T, BatchError> {
        let upstream = self.upstream()?;
        let unreachable = |source| BatchError::Unreachable {
            path: path.to_owned(),
            source,
        };
        let response = self
            .get(upstream, path, auth)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(BatchError::Status {
                path: path.to_owned(),
                status: status.as_u16(),
            });
        }
        let body = response.bytes().await.map_err(unreachable)?;
        serde_json::from_slice(&body).map_err(|source| BatchError::Json {
            path: path.to_owned(),
            source,
        })
    }
}
