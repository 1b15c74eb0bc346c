//! Service tier sheets: a model's flex and priority rates (and `ft_flex` /
//! `ft_priority` for its `ft:` models), each dated and sourced apart from the standard
//! prices, and the pricing of a request by the tier that served it.

use super::catalog::Catalog;
use super::cost::{Priced, UnitRates, Variant, priced};
use super::money::Rate;
use super::overrides::TierSheetOverride;
use super::tier::ServiceTier;
use crate::metering::Usage;

/// One service tier's rates per 1M tokens, dated and sourced apart from the model's
/// standard prices (tier prices change on their own schedule). No `cached_input`:
/// cached tokens pay the sheet's `input`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TierSheet {
    pub input: Rate,
    pub cached_input: Option<Rate>,
    pub output: Rate,
    pub as_of: Option<String>,
    pub source: Option<String>,
}

// === impl TierSheet ===

impl TierSheet {
    /// Lays `o` over the sheet in `slot`, or starts one there; `name` prefixes the
    /// missing field a new sheet reports.
    pub(super) fn apply(
        slot: &mut Option<Self>,
        o: &TierSheetOverride,
        name: &'static str,
    ) -> Result<(), &'static str> {
        let sheet = match slot {
            Some(sheet) => sheet,
            None => {
                let missing = |field: &str| match (name, field) {
                    ("flex", "input") => "flex.input",
                    ("flex", _) => "flex.output",
                    ("priority", "input") => "priority.input",
                    ("priority", _) => "priority.output",
                    ("ft_flex", "input") => "ft_flex.input",
                    ("ft_flex", _) => "ft_flex.output",
                    (_, "input") => "ft_priority.input",
                    _ => "ft_priority.output",
                };
                slot.insert(Self {
                    input: o.input.ok_or_else(|| missing("input"))?,
                    cached_input: None,
                    output: o.output.ok_or_else(|| missing("output"))?,
                    as_of: None,
                    source: None,
                })
            }
        };
        if let Some(input) = o.input {
            sheet.input = input;
        }
        if let Some(output) = o.output {
            sheet.output = output;
        }
        for (slot, value) in [(&mut sheet.as_of, &o.as_of), (&mut sheet.source, &o.source)] {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        if o.cached_input.is_some() {
            sheet.cached_input = o.cached_input;
        }
        Ok(())
    }

    pub(super) fn rates(&self) -> UnitRates {
        UnitRates {
            input: self.input,
            cached_input: self.cached_input.unwrap_or(self.input),
            output: self.output,
            cache_write: None,
        }
    }
}

// === impl Catalog ===

impl Catalog {
    /// Prices a realtime request served at `tier` (the name the response gave, or what
    /// stands in for it: see [`super::tier::served`]), resolving the model as `price`
    /// does. Flex and priority charge the model's sheet for that tier; `default` the
    /// standard rates; a tier the model has no sheet for (or `scale`, or an unknown
    /// name) also the standard rates, with `tier_unpriced` set so it can be counted.
    /// `None` as for `price`.
    pub fn price_served(
        &self,
        answered: Option<&str>,
        requested: Option<&str>,
        usage: &Usage,
        tier: &str,
    ) -> Option<Priced<'_>> {
        let resolved = self.resolve_answered(answered, requested)?;
        let known = ServiceTier::parse(tier);
        if let Some(variant) = Variant::of_tier(resolved.fine_tuned, known) {
            if let Some(priced) = priced(resolved, variant, usage, false) {
                return Some(priced);
            }
        }
        let standard = Variant::of(resolved.fine_tuned, false);
        priced(
            resolved,
            standard,
            usage,
            known != Some(ServiceTier::Default),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::catalog::is_date;
    use crate::pricing::{PricingError, PricingOverrides};

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
    fn builtin_tier_sheets_are_dated_sourced_and_ordered() {
        let catalog = Catalog::builtin();
        let mut sheets = 0;
        for (name, p) in catalog.models() {
            assert_eq!((&p.ft_flex, &p.ft_priority), (&None, &None), "{name}");
            for (tier, sheet) in [("flex", &p.flex), ("priority", &p.priority)] {
                let Some(sheet) = sheet else { continue };
                sheets += 1;
                let as_of = sheet.as_of.as_deref().unwrap_or_default();
                assert!(is_date(as_of), "{name} {tier}: as_of {as_of:?}");
                assert!(sheet.source.is_some(), "{name} {tier}: no source");
                let cached = sheet.cached_input.unwrap_or(sheet.input);
                let standard_cached = p.cached_input.unwrap_or(p.input);
                if tier == "flex" {
                    // Flex is the batch sheet, with the cache discount on top.
                    let batch = p.rates(crate::pricing::Variant::Batch).unwrap();
                    assert_eq!((sheet.input, sheet.output), (batch.input, batch.output));
                    assert!(cached < sheet.input && cached < standard_cached, "{name}");
                } else {
                    assert!(sheet.input > p.input && sheet.output > p.output, "{name}");
                    assert!(cached >= standard_cached, "{name}");
                }
            }
        }
        assert_eq!(sheets, 16, "5 flex and 11 priority sheets");
        // (model, flex in/cached/out, priority in/cached/out), as OpenAI lists them.
        type Sheet = Option<[&'static str; 3]>;
        let table: [(&str, Sheet, Sheet); 6] = [
            ("gpt-4o-mini", None, Some(["0.25", "0.125", "1"])),
            ("gpt-4.1", None, Some(["3.5", "0.875", "14"])),
            (
                "gpt-5",
                Some(["0.625", "0.0625", "5"]),
                Some(["2.5", "0.25", "20"]),
            ),
            ("gpt-5-nano", Some(["0.025", "0.0025", "0.2"]), None),
            ("o3", Some(["1", "0.25", "4"]), Some(["3.5", "0.875", "14"])),
            (
                "o4-mini",
                Some(["0.55", "0.138", "2.2"]),
                Some(["2", "0.5", "8"]),
            ),
        ];
        let show = |sheet: &Option<TierSheet>| {
            sheet.as_ref().map(|s| {
                [s.input, s.cached_input.unwrap_or(s.input), s.output].map(|r| r.to_string())
            })
        };
        for (name, flex, priority) in table {
            let p = catalog.get(name).unwrap();
            let want = |t: Option<[&str; 3]>| t.map(|t| t.map(str::to_owned));
            assert_eq!(show(&p.flex), want(flex), "{name} flex");
            assert_eq!(show(&p.priority), want(priority), "{name} priority");
        }
    }

    #[test]
    fn tier_sheets_merge_field_by_field_and_new_ones_need_their_rates() {
        let config = PricingOverrides::from_toml(
            r#"
            [models."gpt-5".flex]
            output = "4.50"
            source = "our invoice"
            [models."gpt-4o-mini".flex]
            input = "0.075"
            output = "0.30"
            [models."gpt-4o-mini".ft_priority]
            input = "0.50"
            output = "2.00"
            as_of = "2026-11-30"
            "#,
            "tollgate.toml",
        )
        .unwrap();
        let catalog = Catalog::builtin().merge(&config, "tollgate.toml").unwrap();
        let flex = catalog.get("gpt-5").unwrap().flex.clone().unwrap();
        assert_eq!(
            (flex.input, flex.cached_input, flex.output),
            (rate("0.625"), Some(rate("0.0625")), rate("4.50")),
            "untouched fields stay"
        );
        assert_eq!(flex.as_of.as_deref(), Some("2026-12-02"));
        assert_eq!(flex.source.as_deref(), Some("our invoice"));
        let mini = catalog.get("gpt-4o-mini").unwrap();
        assert_eq!(mini.flex.as_ref().map(|s| s.cached_input), Some(None));
        assert!(mini.ft_priority.is_some());

        let cases = [
            ("[models.\"gpt-4o-mini\".flex]\ninput = 1", "flex.output"),
            ("[models.\"gpt-4o-mini\".flex]\noutput = 1", "flex.input"),
            (
                "[models.new]\ninput = 1\noutput = 1\n[models.new.priority]\ninput = 2",
                "priority.output",
            ),
            (
                "[models.\"gpt-5\".ft_flex]\ninput = 1\noutput = 1",
                "ft_flex",
            ),
            (
                "[models.\"gpt-5\".priority]\nas_of = \"2026-13-01\"",
                "priority.as_of",
            ),
            (
                "[models.\"gpt-5\".flex]\nbatch_input = 1",
                "flex.batch_input",
            ),
        ];
        for (text, field) in cases {
            let error = PricingOverrides::from_toml(text, "c.toml")
                .and_then(|o| Catalog::builtin().merge(&o, "c.toml"))
                .unwrap_err();
            let shown = error.to_string();
            let named = match &error {
                PricingError::MissingField { field, .. } => (*field).to_owned(),
                PricingError::Field { field, reason, .. } => format!("{field} {reason}"),
                other => panic!("{text}: {other}"),
            };
            assert!(
                named.contains(field) || shown.contains(field),
                "{text}: {shown}"
            );
            assert!(shown.contains("c.toml"), "{shown}");
        }
    }

    #[test]
    fn each_served_tier_is_charged_its_own_sheet() {
        let overrides = crate::pricing::PricingOverrides::from_toml(
            "[models.\"gpt-4o-mini\".ft_flex]\ninput = \"0.15\"\noutput = \"0.60\"",
            "t.toml",
        )
        .unwrap();
        let catalog = Catalog::builtin().merge(&overrides, "t.toml").unwrap();
        let ft = "ft:gpt-4o-mini-2024-07-18:acme::abc123";
        let u = usage(10_000, 4_000, 1_000, 0);
        // (model, served tier, variant, tier unpriced, cost), hand-computed:
        let table = [
            // gpt-5 flex: 6,000 × 0.625 + 4,000 × 0.0625 + 1,000 × 5 = 3,750 + 250 + 5,000 µ$
            ("gpt-5", "flex", Variant::Flex, false, "0.009"),
            // priority: 6,000 × 2.5 + 4,000 × 0.25 + 1,000 × 20 = 15,000 + 1,000 + 20,000
            (
                "gpt-5-2025-08-07",
                "priority",
                Variant::Priority,
                false,
                "0.036",
            ),
            // default: 6,000 × 1.25 + 4,000 × 0.125 + 1,000 × 10 = 7,500 + 500 + 10,000
            ("gpt-5", "default", Variant::Standard, false, "0.018"),
            // o4-mini flex: 6,000 × 0.55 + 4,000 × 0.138 + 1,000 × 2.2 = 3,300 + 552 + 2,200
            ("o4-mini", "flex", Variant::Flex, false, "0.006052"),
            // gpt-4o-mini offers no flex: standard, 6,000 × 0.15 + 4,000 × 0.075 + 600
            ("gpt-4o-mini", "flex", Variant::Standard, true, "0.0018"),
            // …but priority: 6,000 × 0.25 + 4,000 × 0.125 + 1,000 × 1 = 1,500 + 500 + 1,000
            ("gpt-4o-mini", "priority", Variant::Priority, false, "0.003"),
            // gpt-5-nano has no priority sheet.
            ("gpt-5-nano", "priority", Variant::Standard, true, "0.00072"),
            // No sheet for scale, auto or made-up names: standard, and said so.
            ("gpt-5", "scale", Variant::Standard, true, "0.018"),
            ("gpt-5", "auto", Variant::Standard, true, "0.018"),
            ("gpt-5", "FLEX", Variant::Standard, true, "0.018"),
            // An ft: model's tiers are its own sheets: ft_flex here, and no ft_priority
            // (the base model's priority sheet is not a fine-tuned price).
            // 10,000 × 0.15 (no cached rate: input) + 1,000 × 0.60 = 1,500 + 600
            (ft, "flex", Variant::FineTunedFlex, false, "0.0021"),
            // 6,000 × 0.30 + 4,000 × 0.15 + 1,000 × 1.20 = 1,800 + 600 + 1,200
            (ft, "priority", Variant::FineTuned, true, "0.0036"),
        ];
        for (model, tier, variant, unpriced, cost) in table {
            let priced = catalog.price_served(Some(model), None, &u, tier).unwrap();
            assert_eq!(
                (
                    priced.variant,
                    priced.tier_unpriced,
                    priced.cost.to_string()
                ),
                (variant, unpriced, cost.to_owned()),
                "{model} {tier}"
            );
        }
        // Without a fine-tuned price there is no fine-tuned tier either.
        assert_eq!(
            catalog.price_served(Some("ft:o3-2025-04-16:acme::x"), None, &u, "flex"),
            None
        );
        // The requested model is the fallback, as for `price`.
        let priced = catalog
            .price_served(Some("mystery"), Some("o3"), &u, "flex")
            .unwrap();
        assert_eq!((priced.model, priced.variant), ("o3", Variant::Flex));
        // A served `default` is exactly what `price` charges.
        assert_eq!(
            catalog.price_served(Some("gpt-4.1"), None, &u, "default"),
            catalog.price(Some("gpt-4.1"), None, &u, false)
        );
    }
}
