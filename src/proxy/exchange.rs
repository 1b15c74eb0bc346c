//! One metered exchange from admission to its ledger row. Built when the request is
//! admitted (taking its row slot), finished exactly once by whoever sees the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::price::Pricer;
use crate::config::{DisconnectPolicy, ProviderKind};
use crate::ledger::{Kind, LedgerRow, Outcome, PendingRow, RowPrice, RowRoute};
use crate::limits::Admission;
use crate::metering::{Endpoint, Usage, UsageSource, tokens};
use crate::metrics::{Caller, InFlight, Metrics, OTHER_MODEL, Observation};
use crate::pricing::tier;

pub struct Exchange {
    /// The ledger row's id, taken at admission: a budget reservation carries the same
    /// id, and the row settles it.
    pub id: String,
    pub pending: PendingRow,
    pub pricer: Arc<Pricer>,
    pub request_id: String,
    pub caller: String,
    /// The caller as metric labels (team name, key prefix).
    pub labels: Caller,
    pub metrics: Metrics,
    /// Counts the request in flight until its row is queued.
    pub _in_flight: InFlight,
    pub key_id: String,
    pub team_id: Option<String>,
    pub upstream: String,
    /// The kind of the upstream that was called, for the row and its tokenizer note.
    pub provider: ProviderKind,
    pub endpoint: Endpoint,
    pub model_requested: Option<String>,
    /// `service_tier` as the client sent it (see `MeteredRequest::service_tier`).
    pub service_tier_requested: Option<String>,
    pub streamed: bool,
    pub hide_usage: bool,
    /// The request body as sent upstream, for counting the prompt when the upstream
    /// reports no usage (rare: it is parsed again only then).
    pub request: Bytes,
    pub ts_ms: i64,
    pub started: Instant,
    /// When the request left for the upstream: before it is tollgate's time, after it
    /// the upstream's.
    pub forwarded: Instant,
    pub deadline: Instant,
    pub policy: DisconnectPolicy,
    /// The output tokens the rate-limit charge reserved (the request's cap, or the
    /// default): a request costs at least these, as at OpenAI.
    pub reserved_output: u64,
    /// The rate-limit charge, settled with the real usage when the exchange ends;
    /// dropping it (however the exchange ends) frees the key's in-flight place.
    pub limits: Option<Admission>,
    /// How routing served it: alias, attempt number, downgrade.
    pub route: RowRoute,
    /// Candidates to mirror a successful non-streamed answer's request to.
    pub shadow: Option<Box<super::shadow::ShadowJob>>,
}

/// How the exchange ended.
#[derive(Debug, Default)]
pub struct Finish {
    pub status: u16,
    pub outcome: Option<Outcome>,
    pub usage: Usage,
    pub source: Option<UsageSource>,
    pub model_answered: Option<String>,
    /// The tier the upstream said served the request (a stream's last word on it).
    pub service_tier: Option<String>,
    pub upstream_request_id: Option<String>,
    pub ttfb: Option<Duration>,
    /// tollgate's time after the upstream's last byte (pricing a buffered answer).
    pub tail: Duration,
}

impl Exchange {
    /// Prices the exchange and writes its row (through the background writer) and its
    /// log line.
    pub fn finish(self, finish: Finish) -> impl Future<Output = ()> + Send + 'static {
        let price = self.price(&finish);
        self.finish_priced(finish, price)
    }

    /// What the usage in `finish` costs, by the answered model, else the requested one,
    /// at the rates of the tier that served it.
    pub fn price(&self, finish: &Finish) -> Option<RowPrice> {
        self.pricer.price_served(
            finish.model_answered.as_deref(),
            self.model_requested.as_deref(),
            &finish.usage,
            self.served_tier(finish),
        )
    }

    /// The tier the row is priced at and records: see [`tier::served`].
    fn served_tier<'a>(&'a self, finish: &'a Finish) -> &'a str {
        tier::served(
            finish.service_tier.as_deref(),
            self.service_tier_requested.as_deref(),
        )
    }

    /// As `finish`, with a price already computed (the buffered relay puts it in the
    /// response's headers first).
    ///
    /// Everything but queueing the row happens when this is called; the future only
    /// waits for queue space. It is awaited inside every relay's future, so an
    /// `async fn` here would hold the exchange and the row in that future (twice each,
    /// as argument and local), and every spawn and box of it would copy them.
    pub fn finish_priced(
        mut self,
        finish: Finish,
        price: Option<RowPrice>,
    ) -> impl Future<Output = ()> + Send + 'static {
        if let Some(admission) = self.limits.take() {
            // The prompt as the upstream counted it (the admission may have charged its
            // bound), and at least the output reserved.
            let usage = &finish.usage;
            let output = usage.completion_tokens.max(self.reserved_output);
            admission.settle_to(usage.prompt_tokens.saturating_add(output));
        }
        let outcome = finish.outcome.unwrap_or(Outcome::Ok);
        let source = finish.source.unwrap_or(UsageSource::Estimated);
        let served = self.served_tier(&finish).to_owned();
        let latency = self.started.elapsed();
        // Formatted only when the line is logged: the default filter drops it.
        let cost = tracing::field::display(CostText(price.as_ref()));
        tracing::info!(
            request_id = %self.request_id,
            caller = %self.caller,
            team = %self.labels.team,
            team_id = self.team_id.as_deref().unwrap_or(""),
            upstream = %self.upstream,
            endpoint = self.endpoint.as_str(),
            model = self.model_requested.as_deref().unwrap_or(""),
            attempt = self.route.attempt,
            service_tier = served.as_str(),
            status = finish.status,
            outcome = outcome.as_str(),
            prompt_tokens = finish.usage.prompt_tokens,
            cached_tokens = finish.usage.cached_tokens,
            completion_tokens = finish.usage.completion_tokens,
            reasoning_tokens = finish.usage.reasoning_tokens,
            usage_source = source.as_str(),
            cost_usd = cost,
            latency_ms = millis(latency),
            "request"
        );
        let before_upstream = self.forwarded.saturating_duration_since(self.started);
        self.metrics.observe(&Observation {
            provider: self.provider.as_str(),
            caller: &self.labels,
            model: price
                .as_ref()
                .map_or(OTHER_MODEL, |price| price.model.as_str()),
            endpoint: self.endpoint.as_str(),
            service_tier: tier::label(&served),
            status: finish.status,
            usage: &finish.usage,
            cost: price.as_ref().map(|price| price.cost),
            duration: latency,
            upstream_ttfb: finish.ttfb.map(|ttfb| ttfb.saturating_sub(before_upstream)),
            overhead: before_upstream + finish.tail,
        });
        let tokenizer = (source == UsageSource::Estimated && finish.status < 400).then(|| {
            let model = finish
                .model_answered
                .as_deref()
                .or(self.model_requested.as_deref())
                .unwrap_or_default();
            tokenizer_note(self.provider, model)
        });
        let row = LedgerRow {
            id: self.id,
            provider: self.provider.as_str().to_owned(),
            tokenizer,
            request_id: self.request_id,
            upstream_request_id: finish.upstream_request_id,
            ts_ms: self.ts_ms,
            caller: self.caller,
            upstream: self.upstream,
            endpoint: self.endpoint.as_str().to_owned(),
            model_requested: self.model_requested,
            model_answered: finish.model_answered,
            service_tier_requested: self.service_tier_requested,
            service_tier: Some(served),
            streamed: self.streamed,
            usage: finish.usage,
            usage_source: source,
            status: finish.status,
            outcome,
            latency_ms: millis(latency),
            ttfb_ms: finish.ttfb.map(millis),
            price,
            key_id: Some(self.key_id),
            team_id: self.team_id,
            kind: Kind::Realtime,
            route: self.route,
        };
        let queued = self.pending.record(row);
        let in_flight = self._in_flight;
        async move {
            queued.await;
            drop(in_flight);
        }
    }

    /// Counts usage locally: the prompt from the request, the completion from what was
    /// generated. Reasoning and cached tokens cannot be seen from outside and stay 0.
    /// Always on a blocking thread: the first count also loads the tokenizer (tens of
    /// milliseconds), and estimates are rare enough that the hop costs nothing.
    pub async fn estimate(&self, answered_model: Option<&str>, generated: String) -> Usage {
        let model = answered_model
            .or(self.model_requested.as_deref())
            .unwrap_or_default()
            .to_owned();
        self.pricer
            .warn_estimated(&model, self.provider.as_str(), &self.upstream);
        let (endpoint, request) = (self.endpoint, self.request.clone());
        tokio::task::spawn_blocking(move || count(endpoint, &model, &request, &generated))
            .await
            .unwrap_or_else(|error| {
                tracing::error!(%error, "token counting failed");
                Usage::default()
            })
    }
}

pub(super) fn count(endpoint: Endpoint, model: &str, request: &[u8], generated: &str) -> Usage {
    let prompt = serde_json::from_slice::<Value>(request)
        .map(|json| tokens::count_prompt(endpoint, model, &json))
        .unwrap_or(0);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: if generated.is_empty() {
            0
        } else {
            tokens::count_text(model, generated)
        },
        ..Usage::default()
    }
}

/// A row's cost as the log line shows it: exact decimal dollars, empty when unpriced.
struct CostText<'a>(Option<&'a RowPrice>);

impl std::fmt::Display for CostText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(price) => f.write_str(&price.cost.to_decimal_string()),
            None => Ok(()),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Which tokenizer an estimate was counted with. tiktoken is OpenAI's own; for other
/// providers its count only approximates theirs, and the row says so.
pub fn tokenizer_note(provider: ProviderKind, model: &str) -> String {
    let encoding = tokens::encoding_for_model(model).as_str();
    if provider.tiktoken_native() {
        encoding.to_owned()
    } else {
        format!("{encoding} (approximation)")
    }
}
