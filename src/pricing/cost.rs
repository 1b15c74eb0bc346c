//! Usage × rates = cost. One formula for every variant:
//!
//! `(prompt − cached − written) × input + cached × cached_input + written × cache_write
//!  + completion × output`
//!
//! `written` are prompt tokens a provider wrote to its prompt cache (Anthropic bills
//! them above plain input; OpenAI and Gemini report none, so their term is zero). A
//! model with a long-context sheet (Gemini 2.5 Pro) is charged that sheet's rates,
//! for every token of the request, when its prompt is above the sheet's threshold.
//!
//! Reasoning tokens are part of `completion` and are never added again. The variants
//! only choose the three unit rates: batch charges its input rate for every prompt token
//! (cached ones too: no further discount), fine-tuned models use the base model's `ft_*`
//! rates, and a fine-tuned batch request pays half the fine-tuned rates. The flex and
//! priority service tiers charge their own sheets (`ft_flex` / `ft_priority` for `ft:`
//! models); a model without the sheet of the tier that served it pays standard.

use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, ModelPrices};
use super::money::{Cost, Rate};
use super::resolve::Resolved;
use super::tier::ServiceTier;
use crate::metering::Usage;

/// Which price list a request was charged from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Standard,
    Batch,
    FineTuned,
    FineTunedBatch,
    /// A fine-tuning job's trained tokens at the base model's training rate.
    Training,
    /// Served by the flex service tier, at the model's flex sheet.
    Flex,
    /// Served by the priority service tier, at the model's priority sheet.
    Priority,
    FineTunedFlex,
    FineTunedPriority,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Batch => "batch",
            Self::FineTuned => "fine_tuned",
            Self::FineTunedBatch => "fine_tuned_batch",
            Self::Training => "training",
            Self::Flex => "flex",
            Self::Priority => "priority",
            Self::FineTunedFlex => "fine_tuned_flex",
            Self::FineTunedPriority => "fine_tuned_priority",
        }
    }

    /// The variant of a realtime request served at `tier`, if that tier has a sheet of
    /// its own (flex and priority); `None` means the standard (or fine-tuned) list.
    pub(super) fn of_tier(fine_tuned: bool, tier: Option<ServiceTier>) -> Option<Self> {
        Some(match (tier?, fine_tuned) {
            (ServiceTier::Flex, false) => Self::Flex,
            (ServiceTier::Flex, true) => Self::FineTunedFlex,
            (ServiceTier::Priority, false) => Self::Priority,
            (ServiceTier::Priority, true) => Self::FineTunedPriority,
            _ => return None,
        })
    }

    pub(super) fn of(fine_tuned: bool, batch: bool) -> Self {
        match (fine_tuned, batch) {
            (false, false) => Self::Standard,
            (false, true) => Self::Batch,
            (true, false) => Self::FineTuned,
            (true, true) => Self::FineTunedBatch,
        }
    }
}

/// The three rates a request is charged at, stored on the ledger row beside the cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRates {
    pub input: Rate,
    pub cached_input: Rate,
    pub output: Rate,
    /// Prompt tokens written to the provider's cache; `None`: they pay `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Rate>,
}

/// A priced request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced<'a> {
    pub cost: Cost,
    /// The catalog key whose rates were charged (`gpt-4o-mini` for
    /// `ft:gpt-4o-mini-2024-07-18:acme::abc123`).
    pub model: &'a str,
    pub variant: Variant,
    pub rates: UnitRates,
    /// The tier that served the request has no sheet for this model (a tier it does
    /// not offer, `scale`, or a name no one defines): it was charged at standard.
    pub tier_unpriced: bool,
}

// === impl UnitRates ===

impl UnitRates {
    /// The rate cache writes are charged at.
    pub fn cache_write(&self) -> Rate {
        self.cache_write.unwrap_or(self.input)
    }

    /// Exact cost of `usage`. Cached tokens beyond the prompt (a malformed report) are
    /// capped at the prompt, so a prompt is never charged more than in full.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage
            .cache_write_tokens
            .min(usage.prompt_tokens.saturating_sub(cached));
        let uncached = usage
            .prompt_tokens
            .saturating_sub(cached)
            .saturating_sub(written);
        // Each product fits u128; their sum could only overflow past ~10¹⁹ tokens, so
        // saturating is a formality that keeps this function total.
        let pico = self
            .input
            .cost(uncached)
            .as_pico()
            .saturating_add(self.cached_input.cost(cached).as_pico())
            .saturating_add(self.cache_write().cost(written).as_pico())
            .saturating_add(self.output.cost(usage.completion_tokens).as_pico());
        Cost::from_pico(pico)
    }
}

// === impl ModelPrices ===

impl ModelPrices {
    /// The rates `variant` charges a request of `prompt_tokens`: the long-context
    /// sheet's standard rates above its threshold, else as `rates`.
    pub fn rates_for(&self, variant: Variant, prompt_tokens: u64) -> Option<UnitRates> {
        match &self.long_context {
            Some(long) if variant == Variant::Standard && prompt_tokens > long.above => {
                Some(long.rates())
            }
            _ => self.rates(variant),
        }
    }

    /// The unit rates of `variant`; `None` for a fine-tuned variant of a model without
    /// fine-tuned rates (its price is unknown, not the base price).
    pub fn rates(&self, variant: Variant) -> Option<UnitRates> {
        let mut rates = self.variant_rates(variant)?;
        // Only the standard sheet knows a cache-write rate; elsewhere writes pay input.
        rates.cache_write = match variant {
            Variant::Standard => self.cache_write,
            _ => None,
        };
        Some(rates)
    }

    fn variant_rates(&self, variant: Variant) -> Option<UnitRates> {
        let rates = match variant {
            Variant::Standard => UnitRates {
                input: self.input,
                cached_input: self.cached_input.unwrap_or(self.input),
                output: self.output,
                cache_write: None,
            },
            Variant::Batch => {
                let input = self.batch_input.unwrap_or(self.input.half());
                UnitRates {
                    input,
                    cached_input: input,
                    output: self.batch_output.unwrap_or(self.output.half()),
                    cache_write: None,
                }
            }
            Variant::FineTuned => {
                let input = self.ft_input?;
                UnitRates {
                    input,
                    cached_input: self.ft_cached_input.unwrap_or(input),
                    output: self.ft_output?,
                    cache_write: None,
                }
            }
            Variant::FineTunedBatch => {
                let input = self.ft_input?.half();
                UnitRates {
                    input,
                    cached_input: input,
                    output: self.ft_output?.half(),
                    cache_write: None,
                }
            }
            // Trained tokens are carried as prompt tokens; a job has no output to bill.
            Variant::Training => {
                let training = self.training?;
                UnitRates {
                    input: training,
                    cached_input: training,
                    output: Rate::ZERO,
                    cache_write: None,
                }
            }
            Variant::Flex => self.flex.as_ref()?.rates(),
            Variant::Priority => self.priority.as_ref()?.rates(),
            // A fine-tuned tier is a tier of a fine-tuned price: without one, unknown.
            Variant::FineTunedFlex => self.ft_input.and(self.ft_flex.as_ref())?.rates(),
            Variant::FineTunedPriority => self.ft_input.and(self.ft_priority.as_ref())?.rates(),
        };
        Some(rates)
    }
}

// === impl Catalog ===

impl Catalog {
    /// Prices a request by the model the upstream answered with, or by the requested
    /// model when the answer names none or names one the catalog cannot resolve. `None`:
    /// neither resolves, or the model is fine-tuned and its base has no `ft_*` rates.
    pub fn price(
        &self,
        answered: Option<&str>,
        requested: Option<&str>,
        usage: &Usage,
        batch: bool,
    ) -> Option<Priced<'_>> {
        let resolved = self.resolve_answered(answered, requested)?;
        priced(
            resolved,
            Variant::of(resolved.fine_tuned, batch),
            usage,
            false,
        )
    }

    /// The answered name when the catalog resolves it, else the requested one.
    pub(super) fn resolve_answered(
        &self,
        answered: Option<&str>,
        requested: Option<&str>,
    ) -> Option<Resolved<'_>> {
        answered
            .and_then(|name| self.resolve(name))
            .or_else(|| requested.and_then(|name| self.resolve(name)))
    }

    /// Cost of a fine-tuning job: `trained_tokens` (epochs included, as OpenAI reports
    /// them) × the base model's training rate. `None`: unknown model or no training rate.
    pub fn training_cost(&self, base_model: &str, trained_tokens: u64) -> Option<Cost> {
        self.price_training(base_model, trained_tokens)
            .map(|priced| priced.cost)
    }

    /// A fine-tuning job priced as a row: `trained_tokens` as prompt tokens at the
    /// base model's training rate.
    pub fn price_training(&self, base_model: &str, trained_tokens: u64) -> Option<Priced<'_>> {
        let resolved = self.resolve(base_model)?;
        let rates = resolved.prices.rates(Variant::Training)?;
        let usage = Usage {
            prompt_tokens: trained_tokens,
            ..Usage::default()
        };
        Some(Priced {
            cost: rates.cost(&usage),
            model: resolved.key,
            variant: Variant::Training,
            rates,
            tier_unpriced: false,
        })
    }
}

pub(super) fn priced<'a>(
    resolved: Resolved<'a>,
    variant: Variant,
    usage: &Usage,
    tier_unpriced: bool,
) -> Option<Priced<'a>> {
    let rates = resolved.prices.rates_for(variant, usage.prompt_tokens)?;
    Some(Priced {
        cost: rates.cost(usage),
        model: resolved.key,
        variant,
        rates,
        tier_unpriced,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod provider_tests;
