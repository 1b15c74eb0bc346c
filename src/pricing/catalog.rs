//! The price catalog: every model's rates per 1M tokens, the built-in list embedded from
//! `prices/catalog.toml`, and the merge of operator overrides on top of it. The TOML
//! shape shared by all three lives in [`super::overrides`].

use std::collections::BTreeMap;

use super::PricingError;
use super::money::Rate;
use super::overrides::{ModelPriceOverride, PricingOverrides};
use super::sheet::TierSheet;

/// Where errors in the embedded catalog point.
pub const BUILTIN_ORIGIN: &str = "prices/catalog.toml (built-in)";

const BUILTIN_TOML: &str = include_str!("../../prices/catalog.toml");

/// One model's rates (USD per 1M tokens, as [`Rate`]s) and limits.
///
/// Optional rates fall back when priced: no `cached_input` charges cached tokens at
/// `input`; no `batch_*` rate is half the standard one; no `ft_cached_input` charges at
/// `ft_input`. A model without `ft_input`/`ft_output` has no fine-tuned price, so its
/// `ft:` models are unknown rather than guessed. A model without a service tier's sheet
/// (`flex`, `priority`) does not offer that tier: requests served at it are priced at
/// standard, and counted. `ft:` models have tier sheets only where `ft_flex` /
/// `ft_priority` say so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelPrices {
    pub input: Rate,
    pub cached_input: Option<Rate>,
    pub output: Rate,
    /// Prompt tokens written to the provider's cache (Anthropic's 5-minute writes);
    /// without it, writes pay `input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Rate>,
    /// The sheet charged, for the whole request, above a prompt size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
    pub batch_input: Option<Rate>,
    pub batch_output: Option<Rate>,
    pub ft_input: Option<Rate>,
    pub ft_cached_input: Option<Rate>,
    pub ft_output: Option<Rate>,
    /// Per 1M training tokens of a fine-tuning job.
    pub training: Option<Rate>,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// The day the prices were read from `source` (`YYYY-MM-DD`).
    pub as_of: Option<String>,
    /// Where the prices come from, e.g. `brief` or `openai-pricing-page`.
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flex: Option<TierSheet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<TierSheet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ft_flex: Option<TierSheet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ft_priority: Option<TierSheet>,
}

/// Rates that apply to a whole request once its prompt is longer than `above` tokens
/// (Gemini 2.5 Pro above 200k). No `cached_input` or `cache_write`: they pay `input`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    pub above: u64,
    pub input: Rate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Rate>,
    pub output: Rate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Rate>,
}

impl LongContext {
    pub(super) fn rates(&self) -> super::UnitRates {
        super::UnitRates {
            input: self.input,
            cached_input: self.cached_input.unwrap_or(self.input),
            output: self.output,
            cache_write: self.cache_write,
        }
    }
}

/// Prices by model name. Built once at start-up, then shared read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub(super) models: BTreeMap<String, ModelPrices>,
    pub(super) aliases: BTreeMap<String, String>,
}

// === impl ModelPrices ===

impl ModelPrices {
    /// A new entry from an override; the error is the missing required field.
    fn from_override(o: &ModelPriceOverride) -> Result<Self, &'static str> {
        let mut prices = Self {
            input: o.input.ok_or("input")?,
            cached_input: None,
            output: o.output.ok_or("output")?,
            cache_write: None,
            long_context: None,
            batch_input: None,
            batch_output: None,
            ft_input: None,
            ft_cached_input: None,
            ft_output: None,
            training: None,
            context_window: None,
            max_output_tokens: None,
            as_of: None,
            source: None,
            flex: None,
            priority: None,
            ft_flex: None,
            ft_priority: None,
        };
        prices.apply(o)?;
        Ok(prices)
    }

    /// Lays `o` over this entry; the error is a missing required field of a new sheet.
    fn apply(&mut self, o: &ModelPriceOverride) -> Result<(), &'static str> {
        fn set<T: Clone>(slot: &mut T, value: Option<&T>) {
            if let Some(value) = value {
                slot.clone_from(value);
            }
        }
        fn set_opt<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        set(&mut self.input, o.input.as_ref());
        set(&mut self.output, o.output.as_ref());
        set_opt(&mut self.cached_input, &o.cached_input);
        set_opt(&mut self.cache_write, &o.cache_write);
        set_opt(&mut self.long_context, &o.long_context);
        set_opt(&mut self.batch_input, &o.batch_input);
        set_opt(&mut self.batch_output, &o.batch_output);
        set_opt(&mut self.ft_input, &o.ft_input);
        set_opt(&mut self.ft_cached_input, &o.ft_cached_input);
        set_opt(&mut self.ft_output, &o.ft_output);
        set_opt(&mut self.training, &o.training);
        set_opt(&mut self.context_window, &o.context_window);
        set_opt(&mut self.max_output_tokens, &o.max_output_tokens);
        set_opt(&mut self.as_of, &o.as_of);
        set_opt(&mut self.source, &o.source);
        for (slot, given, name) in [
            (&mut self.flex, &o.flex, "flex"),
            (&mut self.priority, &o.priority, "priority"),
            (&mut self.ft_flex, &o.ft_flex, "ft_flex"),
            (&mut self.ft_priority, &o.ft_priority, "ft_priority"),
        ] {
            if let Some(given) = given {
                TierSheet::apply(slot, given, name)?;
            }
        }
        Ok(())
    }

    /// Checks that need the merged entry: a fine-tuned price is both rates or neither,
    /// and a fine-tuned tier sheet needs the fine-tuned price it is a tier of.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let dates = [
            ("as_of", self.as_of.as_ref()),
            (
                "flex.as_of",
                self.flex.as_ref().and_then(|s| s.as_of.as_ref()),
            ),
            (
                "priority.as_of",
                self.priority.as_ref().and_then(|s| s.as_of.as_ref()),
            ),
            (
                "ft_flex.as_of",
                self.ft_flex.as_ref().and_then(|s| s.as_of.as_ref()),
            ),
            (
                "ft_priority.as_of",
                self.ft_priority.as_ref().and_then(|s| s.as_of.as_ref()),
            ),
        ];
        for (field, as_of) in dates {
            if let Some(as_of) = as_of.filter(|as_of| !is_date(as_of)) {
                return Err((field, format!("`{as_of}` is not a YYYY-MM-DD date")));
            }
        }
        for (field, sheet) in [
            ("ft_flex", &self.ft_flex),
            ("ft_priority", &self.ft_priority),
        ] {
            if sheet.is_some() && self.ft_input.is_none() {
                return Err((field, "needs ft_input and ft_output as well".into()));
            }
        }
        match (self.ft_input, self.ft_output) {
            (Some(_), None) => Err(("ft_output", "ft_input is set but ft_output is not".into())),
            (None, Some(_)) => Err(("ft_input", "ft_output is set but ft_input is not".into())),
            (None, None) if self.ft_cached_input.is_some() => Err((
                "ft_cached_input",
                "needs ft_input and ft_output as well".into(),
            )),
            _ => Ok(()),
        }
    }
}

// === impl Catalog ===

impl Catalog {
    /// The catalog shipped in the binary (`prices/catalog.toml`).
    #[expect(
        clippy::expect_used,
        reason = "the embedded file is constant and `builtin_catalog_is_valid` checks it"
    )]
    pub fn builtin() -> Self {
        Self::from_toml(BUILTIN_TOML, BUILTIN_ORIGIN).expect("the built-in price catalog is valid")
    }

    /// A complete catalog from TOML text: every model needs `input` and `output`.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, PricingError> {
        Self::default().merge(&PricingOverrides::from_toml(text, origin)?, origin)
    }

    /// Lays `overrides` over this catalog: given fields replace, absent ones stay, new
    /// models and aliases are added. Apply in order built-in, prices file, config so the
    /// later source wins.
    pub fn merge(
        mut self,
        overrides: &PricingOverrides,
        origin: &str,
    ) -> Result<Self, PricingError> {
        for (name, entry) in &overrides.models {
            check_model_name(origin, name)?;
            let missing = |field| PricingError::MissingField {
                origin: origin.to_owned(),
                model: name.clone(),
                field,
            };
            let prices = match self.models.get_mut(name) {
                Some(prices) => {
                    prices.apply(entry).map_err(missing)?;
                    prices
                }
                None => {
                    let prices = ModelPrices::from_override(entry).map_err(missing)?;
                    self.models.entry(name.clone()).or_insert(prices)
                }
            };
            prices
                .check()
                .map_err(|(field, reason)| PricingError::Field {
                    origin: origin.to_owned(),
                    line: None,
                    model: Some(name.clone()),
                    field: field.to_owned(),
                    reason,
                })?;
        }
        for (alias, target) in &overrides.aliases {
            let problem = if self.models.contains_key(alias) {
                Some("a model of the same name hides the alias")
            } else if self.resolve_target(target).is_none() {
                Some("the target is not a priced model (nor a snapshot or ft: name of one)")
            } else {
                None
            };
            if let Some(reason) = problem {
                return Err(PricingError::Alias {
                    origin: origin.to_owned(),
                    alias: alias.clone(),
                    target: target.clone(),
                    reason,
                });
            }
            self.aliases.insert(alias.clone(), target.clone());
        }
        Ok(self)
    }

    /// The entry stored under exactly `name` (no alias or snapshot resolution).
    pub fn get(&self, name: &str) -> Option<&ModelPrices> {
        self.models.get(name)
    }

    /// Every model, in name order.
    pub fn models(&self) -> impl Iterator<Item = (&str, &ModelPrices)> {
        self.models
            .iter()
            .map(|(name, prices)| (name.as_str(), prices))
    }

    /// Every alias and its target, in name order.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases
            .iter()
            .map(|(alias, target)| (alias.as_str(), target.as_str()))
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// `ft:` names are resolved to their base model, whose `ft_*` fields hold the price; a
/// catalog key starting with `ft:` would silently never be used that way.
fn check_model_name(origin: &str, name: &str) -> Result<(), PricingError> {
    let reason = if name.trim().is_empty() {
        "a model name must not be empty"
    } else if name.starts_with("ft:") {
        "put fine-tuned prices in the base model's ft_input / ft_cached_input / ft_output"
    } else {
        return Ok(());
    };
    Err(PricingError::Field {
        origin: origin.to_owned(),
        line: None,
        model: Some(name.to_owned()),
        field: "name".to_owned(),
        reason: reason.to_owned(),
    })
}

/// `YYYY-MM-DD` naming a real day of the Gregorian calendar.
pub(super) fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .filter(|part| part.iter().all(u8::is_ascii_digit))
            .and_then(|_| text.get(range)?.parse::<u32>().ok())
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unwrap_used, reason = "test helper")]
    fn rate(text: &str) -> Rate {
        text.parse().unwrap()
    }

    #[test]
    fn builtin_catalog_is_valid() {
        let catalog = Catalog::from_toml(BUILTIN_TOML, BUILTIN_ORIGIN).unwrap();
        assert!(catalog.len() >= 25, "{} models", catalog.len());
        for (name, prices) in catalog.models() {
            let as_of = prices
                .as_of
                .as_deref()
                .unwrap_or_else(|| panic!("{name}: no as_of"));
            assert!(is_date(as_of), "{name}: as_of {as_of}");
            assert!(prices.source.is_some(), "{name}: no source");
            assert!(prices.context_window.is_some(), "{name}: no context_window");
            // input and output are required fields; a chat model must charge for output.
            if !name.starts_with("text-embedding") {
                assert!(prices.output > Rate::ZERO, "{name}: free output");
            }
            assert!(prices.input > Rate::ZERO, "{name}: free input");
            if let Some(cached) = prices.cached_input {
                assert!(cached < prices.input, "{name}: cached not cheaper");
            }
        }
        for (alias, target) in catalog.aliases() {
            assert!(catalog.resolve(alias).is_some(), "{alias} → {target}");
        }
    }

    #[test]
    fn builtin_covers_the_brief() {
        let catalog = Catalog::builtin();
        // (model, input, cached, output, batch in, batch out)
        let table = [
            (
                "gpt-4o-mini",
                "0.15",
                Some("0.075"),
                "0.60",
                "0.075",
                "0.30",
            ),
            (
                "gpt-4.1-nano",
                "0.10",
                Some("0.025"),
                "0.40",
                "0.05",
                "0.20",
            ),
            ("gpt-4o", "2.50", Some("1.25"), "10.00", "1.25", "5.00"),
            ("gpt-4.1", "2.00", Some("0.50"), "8.00", "1.00", "4.00"),
            (
                "claude-haiku-4-5",
                "1.00",
                Some("0.10"),
                "5.00",
                "0.50",
                "2.50",
            ),
        ];
        for (name, input, cached, output, batch_in, batch_out) in table {
            let p = catalog.get(name).unwrap();
            assert_eq!(p.input, rate(input), "{name}");
            assert_eq!(p.cached_input, cached.map(rate), "{name}");
            assert_eq!(p.output, rate(output), "{name}");
            let batch = p.rates(crate::pricing::Variant::Batch).unwrap();
            assert_eq!(
                (batch.input, batch.output),
                (rate(batch_in), rate(batch_out)),
                "{name}"
            );
        }
        let mini = catalog.get("gpt-4o-mini").unwrap();
        assert_eq!(
            (
                mini.ft_input,
                mini.ft_cached_input,
                mini.ft_output,
                mini.training
            ),
            (
                Some(rate("0.30")),
                Some(rate("0.15")),
                Some(rate("1.20")),
                Some(rate("0.30"))
            )
        );
        // "output costs 4× input on gpt-4o-mini"
        assert_eq!(
            mini.output.micros_per_million(),
            4 * mini.input.micros_per_million()
        );
        assert!(catalog.get("gpt-4.1-nano").unwrap().ft_input.is_some());
        assert_eq!(
            catalog.get("claude-haiku-4-5").unwrap().context_window,
            Some(200_000)
        );
        for name in [
            "gpt-4.1-mini",
            "o1",
            "o1-mini",
            "o3",
            "o3-mini",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
            "text-embedding-3-large",
            "text-embedding-ada-002",
        ] {
            assert!(catalog.get(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn precedence_is_builtin_then_file_then_config() {
        let file = PricingOverrides::from_toml(
            r#"
            [models."gpt-4o-mini"]
            input = "0.20"
            output = 0.70
            [models."local-llama"]
            input = 0
            output = "0.01"
            "#,
            "prices.toml",
        )
        .unwrap();
        let config = PricingOverrides::from_toml(
            r#"
            [models."gpt-4o-mini"]
            input = "0.25"
            [aliases]
            "my-azure-deployment" = "gpt-4o-mini"
            "#,
            "tollgate.toml",
        )
        .unwrap();
        let catalog = Catalog::builtin()
            .merge(&file, "prices.toml")
            .unwrap()
            .merge(&config, "tollgate.toml")
            .unwrap();
        let mini = catalog.get("gpt-4o-mini").unwrap();
        assert_eq!(mini.input, rate("0.25"), "config beats the prices file");
        assert_eq!(
            mini.output,
            rate("0.70"),
            "the prices file beats the built-in"
        );
        assert_eq!(
            mini.cached_input,
            Some(rate("0.075")),
            "untouched fields stay"
        );
        assert_eq!(mini.as_of.as_deref(), Some("2026-04-01"));
        assert_eq!(catalog.get("local-llama").unwrap().output, rate("0.01"));
        assert_eq!(
            catalog.resolve("my-azure-deployment").unwrap().key,
            "gpt-4o-mini"
        );
        // Built-in still wins where nobody overrides.
        assert_eq!(catalog.get("gpt-4o").unwrap().input, rate("2.50"));
    }

    #[test]
    fn dates() {
        for ok in ["2026-04-01", "2024-02-29", "2000-02-29", "1999-12-31"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "2026-4-01",
            "2026-13-01",
            "2023-02-29",
            "1900-02-29",
            "2026-04-00",
            "",
            "2026/04/01",
            "２０２６-04-01",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }
}
