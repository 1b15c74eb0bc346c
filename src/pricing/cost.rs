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
mod tests {
    use super::*;

    #[allow(clippy::unwrap_used, reason = "test helper")]
    fn rate(text: &str) -> Rate {
        text.parse().unwrap()
    }

    fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: reasoning,
            cache_write_tokens: 0,
        }
    }

    #[test]
    fn variants_on_gpt_4o_mini() {
        let catalog = Catalog::builtin();
        let ft = "ft:gpt-4o-mini-2024-07-18:acme::abc123";
        // Hand-computed, micro-USD per 1M × tokens = pico-USD:
        // (name, batch, usage, variant, (input, cached, output), cost)
        let table = [
            // 10,000 × 0.15 + 1,000 × 0.60 = 1,500 + 600 → $0.0021
            (
                "gpt-4o-mini",
                false,
                usage(10_000, 0, 1_000, 0),
                Variant::Standard,
                ("0.15", "0.075", "0.60"),
                "0.0021",
            ),
            // 5,904 × 0.15 + 4,096 × 0.075 + 1,000 × 0.60 = 885.6 + 307.2 + 600 → $0.0017928
            (
                "gpt-4o-mini",
                false,
                usage(10_000, 4_096, 1_000, 0),
                Variant::Standard,
                ("0.15", "0.075", "0.60"),
                "0.0017928",
            ),
            // 10,000 × 0.075 + 1,000 × 0.30 = 750 + 300 → $0.00105
            (
                "gpt-4o-mini",
                true,
                usage(10_000, 0, 1_000, 0),
                Variant::Batch,
                ("0.075", "0.075", "0.30"),
                "0.00105",
            ),
            // cached + batch is billed as batch: the same $0.00105
            (
                "gpt-4o-mini",
                true,
                usage(10_000, 4_096, 1_000, 0),
                Variant::Batch,
                ("0.075", "0.075", "0.30"),
                "0.00105",
            ),
            // 10,000 × 0.30 + 1,000 × 1.20 = 3,000 + 1,200 → $0.0042
            (
                ft,
                false,
                usage(10_000, 0, 1_000, 0),
                Variant::FineTuned,
                ("0.30", "0.15", "1.20"),
                "0.0042",
            ),
            // 5,904 × 0.30 + 4,096 × 0.15 + 1,000 × 1.20 = 1,771.2 + 614.4 + 1,200 → $0.0035856
            (
                ft,
                false,
                usage(10_000, 4_096, 1_000, 0),
                Variant::FineTuned,
                ("0.30", "0.15", "1.20"),
                "0.0035856",
            ),
            // 10,000 × 0.15 + 1,000 × 0.60 (half the fine-tuned rates) → $0.0021
            (
                ft,
                true,
                usage(10_000, 4_096, 1_000, 0),
                Variant::FineTunedBatch,
                ("0.15", "0.15", "0.60"),
                "0.0021",
            ),
            // 800 of the 1,000 completion tokens are reasoning: still 1,000 × 0.60 → $0.0021
            (
                "gpt-4o-mini",
                false,
                usage(10_000, 0, 1_000, 800),
                Variant::Standard,
                ("0.15", "0.075", "0.60"),
                "0.0021",
            ),
            // Anthropic's cache hits: 5,904 × 1.00 + 4,096 × 0.10 + 1,000 × 5.00
            // = 5,904 + 409.6 + 5,000 → $0.0113136
            (
                "claude-haiku-4-5",
                false,
                usage(10_000, 4_096, 1_000, 0),
                Variant::Standard,
                ("1.00", "0.10", "5.00"),
                "0.0113136",
            ),
            // Cached beyond the prompt is capped: 100 × 0.075 + 10 × 0.60 = 7.5 + 6 → $0.0000135
            (
                "gpt-4o-mini",
                false,
                usage(100, 500, 10, 0),
                Variant::Standard,
                ("0.15", "0.075", "0.60"),
                "0.0000135",
            ),
            (
                "gpt-4o-mini",
                false,
                usage(0, 0, 0, 0),
                Variant::Standard,
                ("0.15", "0.075", "0.60"),
                "0",
            ),
        ];
        for (name, batch, usage, variant, (input, cached, output), cost) in table {
            let priced = catalog.price(Some(name), None, &usage, batch).unwrap();
            let model = if name.starts_with("claude") {
                name
            } else {
                "gpt-4o-mini"
            };
            assert_eq!(priced.model, model, "{name}");
            assert_eq!(priced.variant, variant, "{name} {usage:?}");
            assert_eq!(
                priced.rates,
                UnitRates {
                    input: rate(input),
                    cached_input: rate(cached),
                    output: rate(output),
                    cache_write: name.starts_with("claude").then(|| rate("1.25")),
                },
                "{name} {usage:?}"
            );
            assert_eq!(priced.cost.to_string(), cost, "{name} {usage:?}");
        }
    }

    #[test]
    fn common_workloads() {
        let catalog = Catalog::builtin();
        // (what, model, batch, usage, cost)
        let table = [
            // Chatbot reply with a cached system prompt (the reference's example usage):
            // 86 × 0.15 + 1,920 × 0.075 + 300 × 0.60 = 12.9 + 144 + 180 = 336.9 µ$ → $0.0003369
            (
                "chatbot reply",
                "gpt-4o-mini-2024-07-18",
                false,
                usage(2_006, 1_920, 300, 0),
                "0.0003369",
            ),
            // Classification: 350 × 0.10 + 5 × 0.40 = 35 + 2 = 37 µ$
            (
                "classification",
                "gpt-4.1-nano",
                false,
                usage(350, 0, 5, 0),
                "0.000037",
            ),
            // Extraction through the batch API: 3,000 × 0.075 + 400 × 0.30 = 225 + 120 µ$
            (
                "extraction",
                "gpt-4o-mini",
                true,
                usage(3_000, 0, 400, 0),
                "0.000345",
            ),
            // Routing: 120 × 0.10 + 1 × 0.40 = 12 + 0.4 = 12.4 µ$
            (
                "routing",
                "gpt-4.1-nano-2025-04-14",
                false,
                usage(120, 0, 1, 0),
                "0.0000124",
            ),
            // Summarization: 12,000 × 2.00 + 800 × 8.00 = 24,000 + 6,400 µ$ → $0.0304
            (
                "summarization",
                "gpt-4.1-2025-04-14",
                false,
                usage(12_000, 0, 800, 0),
                "0.0304",
            ),
            // Reasoning: 1,500 × 1.10 + 2,500 × 4.40 (2,000 of them reasoning, not added)
            // = 1,650 + 11,000 µ$ → $0.01265
            (
                "reasoning",
                "o4-mini-2025-04-16",
                false,
                usage(1_500, 0, 2_500, 2_000),
                "0.01265",
            ),
            // Embedding: 8,000 × 0.02 = 160 µ$
            (
                "embedding",
                "text-embedding-3-small",
                false,
                usage(8_000, 0, 0, 0),
                "0.00016",
            ),
            // Long context on gpt-4o with a big cache hit:
            // 2,048 × 2.50 + 98,304 × 1.25 + 1,000 × 10.00 = 5,120 + 122,880 + 10,000 µ$
            (
                "long context",
                "gpt-4o",
                false,
                usage(100_352, 98_304, 1_000, 0),
                "0.138",
            ),
        ];
        for (what, model, batch, usage, cost) in table {
            let priced = catalog.price(Some(model), None, &usage, batch).unwrap();
            assert_eq!(priced.cost.to_string(), cost, "{what}");
        }
    }

    #[test]
    fn answered_model_wins_and_requested_is_the_fallback() {
        let catalog = Catalog::builtin();
        let u = usage(1_000_000, 0, 0, 0);
        let cases = [
            (
                Some("gpt-4o-2024-08-06"),
                Some("gpt-4o-mini"),
                Some(("gpt-4o", "2.5")),
            ),
            (None, Some("gpt-4o-mini"), Some(("gpt-4o-mini", "0.15"))),
            (
                Some("mystery-model"),
                Some("gpt-4.1"),
                Some(("gpt-4.1", "2")),
            ),
            (Some("mystery-model"), None, None),
            (None, Some("gpt-9"), None),
            (None, None, None),
        ];
        for (answered, requested, want) in cases {
            let got = catalog
                .price(answered, requested, &u, false)
                .map(|p| (p.model, p.cost.to_string()));
            let want = want.map(|(model, cost)| (model, cost.to_owned()));
            assert_eq!(got, want, "{answered:?} / {requested:?}");
        }
    }

    #[test]
    fn fine_tuned_without_ft_rates_is_unknown() {
        let catalog = Catalog::builtin();
        let u = usage(100, 0, 100, 0);
        // o3 has no fine-tuned inference price in the catalog: not priced at base rates.
        assert_eq!(
            catalog.price(Some("ft:o3-2025-04-16:acme::x"), None, &u, false),
            None
        );
        assert_eq!(
            catalog.price(Some("ft:o3-2025-04-16:acme::x"), None, &u, true),
            None
        );
        // The answered name is known, so the requested alias is not consulted.
        assert_eq!(
            catalog.price(Some("ft:o3-2025-04-16:acme::x"), Some("o3"), &u, false),
            None
        );
        assert_eq!(
            catalog.price(Some("o3"), None, &u, false).map(|p| p.model),
            Some("o3")
        );
    }

    #[test]
    fn training() {
        let catalog = Catalog::builtin();
        let cases = [
            ("gpt-4o-mini", 10_000_000, Some("3")), // 10M × $0.30/1M = $3.00 exactly
            ("gpt-4o-mini-2024-07-18", 100_000, Some("0.03")), // 100K × $0.30/1M
            ("gpt-4.1-nano-2025-04-14", 1_000_000, Some("1.5")),
            ("gpt-4o-mini", 0, Some("0")),
            ("o3", 1_000_000, None),
            ("gpt-9", 1_000_000, None),
        ];
        for (model, tokens, want) in cases {
            let got = catalog.training_cost(model, tokens).map(|c| c.to_string());
            assert_eq!(got.as_deref(), want, "{model} {tokens}");
        }
        assert_eq!(
            catalog
                .training_cost("gpt-4o-mini", 10_000_000)
                .map(Cost::as_pico),
            Some(3_000_000_000_000)
        );
    }

    #[test]
    fn a_million_requests_sum_exactly() {
        let catalog = Catalog::builtin();
        let n: u64 = 1_000_000;
        let mut total = Some(Cost::ZERO);
        for i in 0..n {
            let u = usage(2_048 + i % 2_000, 128 * (i % 8), i % 500, 0);
            let priced = catalog.price(Some("gpt-4o-mini"), None, &u, false).unwrap();
            total = total.and_then(|t| t + priced.cost);
        }
        // Closed form: Σprompt = 2,048·10⁶ + 500·Σ_{k<2000}k = 3,047,500,000;
        // Σcached = 128 · 125,000 · Σ_{k<8}k = 448,000,000;
        // Σcompletion = 2,000 · Σ_{k<500}k = 249,500,000.
        let prompt: u128 = 2_048 * 1_000_000 + 500 * (1_999 * 2_000 / 2);
        let cached: u128 = 128 * 125_000 * 28;
        let completion: u128 = 2_000 * (499 * 500 / 2);
        assert_eq!(
            (prompt, cached, completion),
            (3_047_500_000, 448_000_000, 249_500_000)
        );
        let closed = (prompt - cached) * 150_000 + cached * 75_000 + completion * 600_000;
        assert_eq!(total, Some(Cost::from_pico(closed)));
        // (2,599.5M × 0.15 + 448M × 0.075 + 249.5M × 0.60) / 1M = $573.225
        assert_eq!(total.map(|t| t.to_string()).as_deref(), Some("573.225"));
    }

    #[test]
    fn derived_batch_rates_are_half() {
        let catalog = Catalog::builtin();
        let haiku = catalog.get("claude-haiku-4-5").unwrap();
        assert_eq!((haiku.batch_input, haiku.batch_output), (None, None));
        let batch = haiku.rates(Variant::Batch).unwrap();
        assert_eq!((batch.input, batch.output), (rate("0.50"), rate("2.50")));
        assert_eq!(Variant::FineTunedBatch.as_str(), "fine_tuned_batch");
    }
}

#[cfg(test)]
mod provider_tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, written: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: 0,
            cache_write_tokens: written,
        }
    }

    fn cost(model: &str, usage: &Usage) -> String {
        Catalog::builtin()
            .price(Some(model), None, usage, false)
            .map(|p| p.cost.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn anthropic_cache_writes_pay_their_own_rate() {
        // 10,000 prompt: 2,000 read, 3,000 written, 5,000 plain; 1,000 out.
        // 5,000 × 1.00 + 2,000 × 0.10 + 3,000 × 1.25 + 1,000 × 5.00
        // = 5,000 + 200 + 3,750 + 5,000 micro → $0.01395
        assert_eq!(
            cost("claude-haiku-4-5", &usage(10_000, 2_000, 3_000, 1_000)),
            "0.01395"
        );
        // Sonnet: 5,000 × 3 + 2,000 × 0.30 + 3,000 × 3.75 + 1,000 × 15 → $0.04185
        assert_eq!(
            cost("claude-sonnet-4-5", &usage(10_000, 2_000, 3_000, 1_000)),
            "0.04185"
        );
        // Writes beyond what is left of the prompt are capped: all 100 tokens written.
        assert_eq!(cost("claude-opus-4-1", &usage(100, 0, 500, 0)), "0.001875");
    }

    #[test]
    fn gemini_pro_charges_the_long_context_sheet_above_200k() {
        // At the threshold: 200,000 × 1.25 + 1,000 × 10 → $0.26
        assert_eq!(cost("gemini-2.5-pro", &usage(200_000, 0, 0, 1_000)), "0.26");
        // One above: every token at the long rates. 200,001 × 2.50 + 1,000 × 15
        // = 500,002.5 + 15,000 micro → $0.5150025
        assert_eq!(
            cost("gemini-2.5-pro", &usage(200_001, 0, 0, 1_000)),
            "0.5150025"
        );
        // Cached above the threshold: 150,000 × 2.50 + 100,000 × 0.25 → $0.4
        assert_eq!(
            cost("gemini-2.5-pro", &usage(250_000, 100_000, 0, 0)),
            "0.4"
        );
        // Flash has no long-context sheet: 300,000 × 0.30 + 10,000 × 0.03 → $0.0903
        assert_eq!(
            cost("gemini-2.5-flash", &usage(310_000, 10_000, 0, 0)),
            "0.0903"
        );
    }
}
