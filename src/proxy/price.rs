//! Pricing on the request path: the catalog, the unknown-model policy, the service
//! tier a row is priced at, and the once-per-model (and per model and tier) warnings
//! for what it cannot price.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::config::{PricingConfig, UnknownModelPolicy};
use crate::error::ApiError;
use crate::ledger::RowPrice;
use crate::metering::Usage;
use crate::metrics::{Metrics, OTHER_MODEL};
use crate::pricing::{AutoTier, Catalog, Cost, Priced, tier};

/// Distinct unpriced model names given their own metric label (and warning); names
/// beyond these are counted under `other`, so clients inventing names can grow
/// neither the scrape nor this process's memory.
const MAX_UNPRICED_NAMES: usize = 100;

pub struct Pricer {
    catalog: Catalog,
    metrics: Metrics,
    policy: UnknownModelPolicy,
    enforce_context_window: bool,
    auto_tier: AutoTier,
    warned: Mutex<HashSet<String>>,
    /// (catalog model, tier label) pairs warned about: bounded by the catalog's size
    /// times the tier labels, whatever clients send.
    warned_tiers: Mutex<HashSet<(String, &'static str)>>,
    /// The upstreams, for the model a client's name stands for (`azure/gpt-4o` is
    /// `gpt-4o`; an Azure deployment is the model it serves).
    names: Option<std::sync::Arc<crate::proxy::upstream::Upstreams>>,
    /// Models warned about once for answers tollgate had to count itself.
    warned_estimates: Mutex<HashSet<String>>,
}

impl Pricer {
    pub fn new(catalog: Catalog, config: &PricingConfig, metrics: Metrics) -> Self {
        Self {
            catalog,
            metrics,
            policy: config.unknown_model,
            enforce_context_window: config.enforce_context_window,
            auto_tier: config.auto_service_tier,
            warned: Mutex::default(),
            warned_tiers: Mutex::default(),
            names: None,
            warned_estimates: Mutex::default(),
        }
    }

    /// Prices models by the name their upstream serves them as.
    #[must_use]
    pub fn with_names(
        mut self,
        upstreams: std::sync::Arc<crate::proxy::upstream::Upstreams>,
    ) -> Self {
        self.names = Some(upstreams);
        self
    }

    /// Warns, once per model (up to a bound of names), that an answer carried no usage
    /// tollgate could read: its row holds an estimate, never a silent zero.
    pub fn warn_estimated(&self, model: &str, provider: &str, upstream: &str) {
        let first = self.warned_estimates.lock().is_ok_and(|mut warned| {
            warned.len() < MAX_UNPRICED_NAMES && warned.insert(model.to_owned())
        });
        if first {
            tracing::warn!(
                model,
                provider,
                upstream,
                "an answer carried no usage tollgate could read: its tokens are counted by \
                 tollgate and the row is marked estimated"
            );
        }
    }

    /// The name `model` is priced as.
    pub fn real<'a>(&'a self, model: Option<&'a str>) -> Option<&'a str> {
        let model = model?;
        Some(self.names.as_ref().map_or(model, |u| u.real_model(model)))
    }

    /// Refuses, before anything is forwarded, a model no catalog prices when the policy
    /// says so. A request without a model is the upstream's to refuse.
    pub fn admit(&self, model: Option<&str>) -> Result<(), ApiError> {
        let model = self.real(model);
        match model {
            Some(model)
                if self.policy == UnknownModelPolicy::Reject
                    && self.catalog.resolve(model).is_none() =>
            {
                Err(ApiError::UnpricedModel {
                    model: model.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The `model` label of metrics: the catalog's name for `model` (snapshots and
    /// fine-tuned names fold into their family), or `other` for anything it does not
    /// price, so callers inventing names cannot multiply the series.
    pub fn model_label(&self, model: Option<&str>) -> &str {
        self.real(model)
            .and_then(|model| self.catalog.resolve(model))
            .map_or(OTHER_MODEL, |resolved| resolved.key)
    }

    /// The context window to enforce for `model`, when enforcement is on and the
    /// catalog knows the window.
    pub fn context_window(&self, model: Option<&str>) -> Option<u64> {
        if !self.enforce_context_window {
            return None;
        }
        self.catalog
            .resolve(self.real(model)?)?
            .prices
            .context_window
    }

    /// What `usage` would cost at `model`'s standard rates, with no warning or metric
    /// (for estimates before forwarding); `None` when the model has no price.
    pub fn estimate(&self, model: Option<&str>, usage: &Usage) -> Option<crate::pricing::Cost> {
        self.catalog
            .price(None, self.real(model), usage, false)
            .map(|priced| priced.cost)
    }

    /// What a budget reserves for `usage` on a request asking for `requested` tier:
    /// the rates of the dearest tier it can be billed at ([`tier::worst_case`]), or
    /// standard where the model lacks that tier's sheet. No warning or metric.
    pub fn estimate_reserve(
        &self,
        model: Option<&str>,
        requested: Option<&str>,
        usage: &Usage,
    ) -> Option<Cost> {
        let tier = tier::worst_case(requested, self.auto_tier);
        self.catalog
            .price_served(None, self.real(model), usage, tier.as_str())
            .map(|priced| priced.cost)
    }

    /// A realtime row's price at the tier that served it (see [`tier::served`]). A tier
    /// the model has no sheet for is priced at standard, counted in
    /// `tollgate_unpriced_tier_total` and warned about once per model and tier; a model
    /// with no price at all is handled as by `price`.
    pub fn price_served(
        &self,
        answered: Option<&str>,
        requested: Option<&str>,
        usage: &Usage,
        served: &str,
    ) -> Option<RowPrice> {
        match self
            .catalog
            .price_served(answered, self.real(requested), usage, served)
        {
            Some(priced) => {
                if priced.tier_unpriced {
                    self.unpriced_tier(priced.model, served);
                }
                Some(row_price(&priced))
            }
            None => self.price_as(answered, requested, usage, false),
        }
    }

    fn unpriced_tier(&self, model: &str, served: &str) {
        let label = tier::label(served);
        self.metrics
            .unpriced_tiers
            .with_label_values(&[model, label])
            .inc();
        let first = self
            .warned_tiers
            .lock()
            .map(|mut warned| warned.insert((model.to_owned(), label)))
            .unwrap_or(false);
        if first {
            let hint = match label {
                "flex" | "priority" => {
                    format!(
                        "add [pricing.models.\"{model}\".{label}] if the tier bills differently"
                    )
                }
                _ => "only flex and priority have sheets of their own".to_owned(),
            };
            tracing::warn!(
                model,
                service_tier = tier::recorded(served),
                %hint,
                "served at a service tier the model has no rates for: priced at standard"
            );
        }
    }

    /// The row's price: by the model the upstream answered with, else the one asked
    /// for. `None` (unpriced) is logged once per model, so operators see what to add.
    pub fn price(
        &self,
        answered: Option<&str>,
        requested: Option<&str>,
        usage: &Usage,
    ) -> Option<RowPrice> {
        self.price_as(answered, requested, usage, false)
    }

    /// A batch line's price: batch rates (fine-tuned batch rates for an `ft:` model).
    pub fn price_batch(
        &self,
        answered: Option<&str>,
        requested: Option<&str>,
        usage: &Usage,
    ) -> Option<RowPrice> {
        self.price_as(answered, requested, usage, true)
    }

    /// What a batch of `usage` would cost at `model`'s batch rates, with no warning or
    /// metric (for admission); `None` when the model has no price.
    pub fn estimate_batch(&self, model: Option<&str>, usage: &Usage) -> Option<Cost> {
        self.catalog
            .price(None, self.real(model), usage, true)
            .map(|priced| priced.cost)
    }

    /// A fine-tuning job's price: trained tokens at the base model's training rate.
    /// `None` (unknown model, or no training rate) is warned about.
    pub fn price_training(&self, base_model: &str, trained_tokens: u64) -> Option<RowPrice> {
        let priced = self.catalog.price_training(base_model, trained_tokens);
        if priced.is_none() {
            self.metrics
                .unpriced_requests
                .with_label_values(&[base_model])
                .inc();
            tracing::warn!(
                model = base_model,
                "fine-tuning job's base model has no training price: its row records trained \
                 tokens with an unknown cost; add `training` under [pricing.models]"
            );
        }
        priced.as_ref().map(row_price)
    }

    fn price_as(
        &self,
        answered: Option<&str>,
        requested: Option<&str>,
        usage: &Usage,
        batch: bool,
    ) -> Option<RowPrice> {
        if let Some(priced) = self
            .catalog
            .price(answered, self.real(requested), usage, batch)
        {
            return Some(row_price(&priced));
        }
        let model = answered.or(requested).unwrap_or("");
        let (known, first) = match self.warned.lock() {
            Ok(warned) if warned.contains(model) => (true, false),
            Ok(mut warned) if warned.len() < MAX_UNPRICED_NAMES => {
                (true, warned.insert(model.to_owned()))
            }
            _ => (false, false),
        };
        let label = if known { model } else { OTHER_MODEL };
        self.metrics
            .unpriced_requests
            .with_label_values(&[label])
            .inc();
        if first {
            let suggestions = self.catalog.suggest(model).join(", ");
            tracing::warn!(
                model,
                %suggestions,
                "model has no price: its rows record tokens with an unknown cost; add it under \
                 [pricing.models] and run `tollgate prices reprice`"
            );
        }
        None
    }
}

fn row_price(priced: &Priced<'_>) -> RowPrice {
    RowPrice {
        cost: priced.cost,
        model: priced.model.to_owned(),
        variant: priced.variant,
        rates: priced.rates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpriced_names_get_labels_up_to_a_bound_then_share_one() {
        let config = PricingConfig::default();
        let metrics = Metrics::new().unwrap();
        let pricer = Pricer::new(config.catalog().unwrap(), &config, metrics.clone());
        let usage = Usage::default();
        for i in 0..MAX_UNPRICED_NAMES + 5 {
            assert!(
                pricer
                    .price(None, Some(&format!("house-{i}")), &usage)
                    .is_none()
            );
        }
        pricer.price(None, Some("house-0"), &usage);
        let count = |model: &str| metrics.unpriced_requests.with_label_values(&[model]).get();
        assert_eq!(count("house-0"), 2, "a known name keeps its label");
        assert_eq!(count(OTHER_MODEL), 5);
        assert!(pricer.price(None, Some("gpt-4o-mini"), &usage).is_some());
        assert_eq!(
            pricer.model_label(Some("gpt-4o-mini-2024-07-18")),
            "gpt-4o-mini"
        );
        assert_eq!(pricer.model_label(Some("house-0")), OTHER_MODEL);
    }
}
