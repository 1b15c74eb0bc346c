//! Import of the community price map LiteLLM maintains
//! (`model_prices_and_context_window.json`): a JSON object keyed by model name whose
//! entries give USD **per token** as JSON floats. Pure: text in, overrides out; write
//! them with [`LiteLlmImport::to_toml`] and load them as a prices file.
//!
//! Conversion, done once per rate: the float is read through its shortest decimal form
//! (`1.5e-07` → `"0.00000015"`, the text LiteLLM wrote), then USD per token × 10¹² =
//! micro-USD per 1M tokens, rounded to the nearest micro-dollar with halves rounded up.
//! Every OpenAI rate lands exactly; only sub-micro-dollar digits can be rounded away.

use serde_json::{Map, Value};

use super::PricingError;
use super::money::{COST_DECIMALS, DecimalError, Rate, parse_scaled};
use super::overrides::{ModelPriceOverride, PricingOverrides, TierSheetOverride};
use super::resolve::fine_tuned_base;

/// The key LiteLLM uses to document the format; not a model.
const SAMPLE_SPEC: &str = "sample_spec";

/// Modes priced per token in and out; images, audio and the rest use other units.
const TOKEN_MODES: [&str; 4] = ["chat", "completion", "embedding", "responses"];

/// The result of an import: the entries as catalog overrides, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteLlmImport {
    pub overrides: PricingOverrides,
    /// Source entries used, `ft:` entries folded into their base model included.
    pub imported: usize,
    pub skipped: Vec<Skipped>,
}

/// An entry the import left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub model: String,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("the entry is not a JSON object")]
    NotAnObject,
    #[error("provider `{0}` was not asked for")]
    OtherProvider(String),
    #[error("mode `{0}` is not priced per token")]
    NotTokenPriced(String),
    #[error("no input_cost_per_token and output_cost_per_token")]
    MissingCost,
    #[error("`{field}`: {reason}")]
    InvalidCost {
        field: &'static str,
        reason: DecimalError,
    },
    #[error("fine-tuned entry whose base model `{0}` was not imported")]
    FineTunedWithoutBase(String),
}

/// Converts LiteLLM's price map. `providers` keeps only entries whose
/// `litellm_provider` is listed (empty keeps all). `origin` names the file in errors.
///
/// `ft:BASE…` entries become the `ft_*` rates of BASE; `max_input_tokens` becomes
/// `context_window`; `source` is set to `litellm` and `as_of` left for the operator.
pub fn import_litellm(
    json: &str,
    origin: &str,
    providers: &[&str],
) -> Result<LiteLlmImport, PricingError> {
    let entries: Map<String, Value> =
        serde_json::from_str(json).map_err(|error| PricingError::Import {
            origin: origin.to_owned(),
            reason: error.to_string(),
        })?;
    let mut import = LiteLlmImport {
        overrides: PricingOverrides::default(),
        imported: 0,
        skipped: Vec::new(),
    };
    let mut fine_tuned = Vec::new();
    for (name, entry) in &entries {
        if name == SAMPLE_SPEC {
            continue;
        }
        match convert(entry, providers) {
            Ok(prices) => match fine_tuned_base(name) {
                Some(base) => fine_tuned.push((name, base, prices)),
                None => {
                    import.overrides.models.insert(name.clone(), prices);
                    import.imported += 1;
                }
            },
            Err(reason) => import.skipped.push(Skipped {
                model: name.clone(),
                reason,
            }),
        }
    }
    // Second pass: a fine-tuned entry only has a home once its base is known.
    for (name, base, prices) in fine_tuned {
        match import.overrides.models.get_mut(base) {
            Some(base_prices) => {
                base_prices.ft_input = prices.input;
                base_prices.ft_cached_input = prices.cached_input;
                base_prices.ft_output = prices.output;
                import.imported += 1;
            }
            None => import.skipped.push(Skipped {
                model: name.clone(),
                reason: SkipReason::FineTunedWithoutBase(base.to_owned()),
            }),
        }
    }
    // A stable report whatever order the JSON map keeps.
    import.skipped.sort_by(|a, b| a.model.cmp(&b.model));
    Ok(import)
}

impl LiteLlmImport {
    /// Catalog TOML for a prices file, headed by what was imported and skipped.
    pub fn to_toml(&self) -> Result<String, PricingError> {
        let mut text = format!(
            "# Imported from LiteLLM model_prices_and_context_window.json: {} entries, {} skipped.\n\
             # USD per token × 10^12 = micro-USD per 1M tokens, rounded half up; add as_of.\n\n",
            self.imported,
            self.skipped.len()
        );
        text.push_str(&self.overrides.to_toml()?);
        Ok(text)
    }
}

fn convert(entry: &Value, providers: &[&str]) -> Result<ModelPriceOverride, SkipReason> {
    let entry = entry.as_object().ok_or(SkipReason::NotAnObject)?;
    let text = |key: &str| entry.get(key).and_then(Value::as_str);
    if let Some(provider) = text("litellm_provider") {
        if !providers.is_empty() && !providers.contains(&provider) {
            return Err(SkipReason::OtherProvider(provider.to_owned()));
        }
    }
    if let Some(mode) = text("mode") {
        if !TOKEN_MODES.contains(&mode) {
            return Err(SkipReason::NotTokenPriced(mode.to_owned()));
        }
    }
    let rate = |field: &'static str| -> Result<Option<Rate>, SkipReason> {
        entry
            .get(field)
            .map(|value| {
                per_token(value).map_err(|reason| SkipReason::InvalidCost { field, reason })
            })
            .transpose()
    };
    let (Some(input), Some(output)) = (
        rate("input_cost_per_token")?,
        rate("output_cost_per_token")?,
    ) else {
        return Err(SkipReason::MissingCost);
    };
    // LiteLLM suffixes a service tier's costs with its name; a tier is imported only
    // with both its input and output rates, as any sheet needs.
    let sheet = |tier: &str| -> Result<Option<TierSheetOverride>, SkipReason> {
        let field = |name: &str| -> &'static str {
            match (name, tier) {
                ("input", "flex") => "input_cost_per_token_flex",
                ("output", "flex") => "output_cost_per_token_flex",
                ("cached", "flex") => "cache_read_input_token_cost_flex",
                ("input", _) => "input_cost_per_token_priority",
                ("output", _) => "output_cost_per_token_priority",
                _ => "cache_read_input_token_cost_priority",
            }
        };
        let (Some(input), Some(output)) = (rate(field("input"))?, rate(field("output"))?) else {
            return Ok(None);
        };
        Ok(Some(TierSheetOverride {
            input: Some(input),
            cached_input: rate(field("cached"))?,
            output: Some(output),
            source: Some("litellm".to_owned()),
            ..TierSheetOverride::default()
        }))
    };
    // Gemini-style prompt-length tiers: LiteLLM writes the dearer rates with an
    // `_above_200k_tokens` suffix; both input and output are needed for a sheet.
    let long_context = match (
        rate("input_cost_per_token_above_200k_tokens")?,
        rate("output_cost_per_token_above_200k_tokens")?,
    ) {
        (Some(input), Some(output)) => Some(super::catalog::LongContext {
            above: 200_000,
            input,
            cached_input: rate("cache_read_input_token_cost_above_200k_tokens")?,
            output,
            cache_write: rate("cache_creation_input_token_cost_above_200k_tokens")?,
        }),
        _ => None,
    };
    Ok(ModelPriceOverride {
        input: Some(input),
        output: Some(output),
        cached_input: rate("cache_read_input_token_cost")?,
        cache_write: rate("cache_creation_input_token_cost")?,
        long_context,
        batch_input: rate("input_cost_per_token_batches")?,
        batch_output: rate("output_cost_per_token_batches")?,
        context_window: entry.get("max_input_tokens").and_then(token_count),
        max_output_tokens: entry.get("max_output_tokens").and_then(token_count),
        source: Some("litellm".to_owned()),
        flex: sheet("flex")?,
        priority: sheet("priority")?,
        ..ModelPriceOverride::default()
    })
}

/// USD per token (a JSON number) → micro-USD per 1M tokens.
fn per_token(value: &Value) -> Result<Rate, DecimalError> {
    let Value::Number(number) = value else {
        return Err(DecimalError::NotANumber);
    };
    if let Some(usd) = number.as_u64() {
        return usd
            .checked_mul(1_000_000_000_000)
            .map(Rate::from_micros_per_million)
            .ok_or(DecimalError::Overflow);
    }
    let usd = number.as_f64().ok_or(DecimalError::NotANumber)?;
    if !usd.is_finite() {
        return Err(DecimalError::NotFinite);
    }
    if usd < 0.0 {
        return Err(DecimalError::Negative);
    }
    let micros = round_scaled(&format!("{usd}"), COST_DECIMALS)?;
    u64::try_from(micros)
        .map(Rate::from_micros_per_million)
        .map_err(|_| DecimalError::Overflow)
}

/// Like `parse_scaled`, but digits past `scale` round the last kept digit, halves up.
fn round_scaled(text: &str, scale: u32) -> Result<u128, DecimalError> {
    let places = scale as usize;
    let Some((whole, frac)) = text.split_once('.').filter(|(_, frac)| frac.len() > places) else {
        return parse_scaled(text, scale);
    };
    let (kept, dropped) = frac.split_at(places);
    if !dropped.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecimalError::NotANumber);
    }
    let truncated = parse_scaled(&format!("{whole}.{kept}"), scale)?;
    // Only the first dropped digit decides "half or more".
    let round_up = dropped.bytes().next().is_some_and(|digit| digit >= b'5');
    truncated
        .checked_add(u128::from(round_up))
        .ok_or(DecimalError::Overflow)
}

/// Token limits are integers, but LiteLLM writes some as floats (`128e3`) and its
/// `sample_spec` as prose; anything that is not a whole number is ignored.
fn token_count(value: &Value) -> Option<u64> {
    if let Some(count) = value.as_u64() {
        return Some(count);
    }
    let count = value.as_f64()?;
    // The cast is exact: a non-negative whole number below 2^53.
    let whole = count.is_finite() && count >= 0.0 && count.fract() == 0.0 && count < 9.0e15;
    whole.then_some(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::Usage;
    use crate::pricing::{Catalog, Variant};

    const SAMPLE: &str = r#"{
        "sample_spec": {
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "max_input_tokens": "max input tokens, if the provider specifies it",
            "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
            "mode": "one of: chat, embedding, completion, image_generation"
        },
        "gpt-4o-mini": {
            "cache_read_input_token_cost": 7.5e-08,
            "input_cost_per_token": 1.5e-07,
            "input_cost_per_token_batches": 7.5e-08,
            "litellm_provider": "openai",
            "max_input_tokens": 128000,
            "max_output_tokens": 16384,
            "mode": "chat",
            "output_cost_per_token": 6e-07,
            "output_cost_per_token_batches": 3e-07
        },
        "ft:gpt-4o-mini": {
            "cache_read_input_token_cost": 1.5e-07,
            "input_cost_per_token": 3e-07,
            "litellm_provider": "openai",
            "mode": "chat",
            "output_cost_per_token": 1.2e-06
        },
        "gpt-5": {
            "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-07,
            "input_cost_per_token_flex": 6.25e-07, "output_cost_per_token_flex": 5e-06,
            "cache_read_input_token_cost_flex": 6.25e-08,
            "input_cost_per_token_priority": 2.5e-06, "output_cost_per_token_priority": 2e-05,
            "litellm_provider": "openai", "mode": "chat"
        },
        "gpt-4o": {
            "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
            "input_cost_per_token_priority": 4.25e-06,
            "cache_read_input_token_cost": 1.25e-06, "max_input_tokens": 128e3,
            "litellm_provider": "openai", "mode": "chat"
        },
        "text-embedding-3-small": {
            "input_cost_per_token": 2e-08, "output_cost_per_token": 0,
            "litellm_provider": "openai", "mode": "embedding", "max_input_tokens": 8191
        },
        "bedrock/nova-pro": {
            "input_cost_per_token": 2.1875e-06, "output_cost_per_token": 1.75e-05,
            "cache_read_input_token_cost": 5.46875e-07, "litellm_provider": "bedrock_converse",
            "mode": "chat"
        },
        "thirds": {
            "input_cost_per_token": 3.3333333e-07, "output_cost_per_token": 1.0000005e-06,
            "litellm_provider": "openai", "mode": "chat"
        },
        "dall-e-3": { "litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04 },
        "no-output": { "input_cost_per_token": 1e-06, "litellm_provider": "openai", "mode": "chat" },
        "negative": { "input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06 },
        "stringy": { "input_cost_per_token": "0.000001", "output_cost_per_token": 1e-06 },
        "ft:davinci-002": { "input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06 },
        "weird": 42
    }"#;

    #[allow(clippy::unwrap_used, reason = "test helper")]
    fn rate(text: &str) -> Option<Rate> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn imports_a_sample() {
        let import = import_litellm(SAMPLE, "prices.json", &[]).unwrap();
        let models = &import.overrides.models;
        assert!(!models.contains_key(SAMPLE_SPEC));
        let names: Vec<&str> = models.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bedrock/nova-pro",
                "gpt-4o",
                "gpt-4o-mini",
                "gpt-5",
                "text-embedding-3-small",
                "thirds"
            ]
        );
        assert_eq!(import.imported, 7, "six models and one ft: entry");
        // A tier comes with its input and output rates, or not at all.
        let gpt5 = &models["gpt-5"];
        let flex = gpt5.flex.as_ref().unwrap();
        assert_eq!(
            (flex.input, flex.cached_input, flex.output),
            (rate("0.625"), rate("0.0625"), rate("5"))
        );
        let priority = gpt5.priority.as_ref().unwrap();
        assert_eq!(
            (priority.input, priority.cached_input, priority.output),
            (rate("2.5"), None, rate("20"))
        );
        assert_eq!(models["gpt-4o"].priority, None, "no priority output rate");
        assert_eq!(models["gpt-4o-mini"].flex, None);
        let mini = &models["gpt-4o-mini"];
        assert_eq!(
            (
                mini.input,
                mini.cached_input,
                mini.output,
                mini.batch_input,
                mini.batch_output
            ),
            (
                rate("0.15"),
                rate("0.075"),
                rate("0.60"),
                rate("0.075"),
                rate("0.30")
            )
        );
        assert_eq!(
            (mini.ft_input, mini.ft_cached_input, mini.ft_output),
            (rate("0.30"), rate("0.15"), rate("1.20"))
        );
        assert_eq!(
            (mini.context_window, mini.max_output_tokens),
            (Some(128_000), Some(16_384))
        );
        assert_eq!(mini.source.as_deref(), Some("litellm"));
        assert_eq!(
            models["gpt-4o"].context_window,
            Some(128_000),
            "128e3 is a whole number"
        );
        assert_eq!(models["text-embedding-3-small"].output, rate("0"));
        let nova = &models["bedrock/nova-pro"];
        assert_eq!(
            (nova.input, nova.cached_input),
            (rate("2.1875"), rate("0.546875"))
        );
        // 0.33333333 → 0.333333 (rounded down); 1.0000005 → 1.000001 (half rounds up).
        assert_eq!(
            (models["thirds"].input, models["thirds"].output),
            (rate("0.333333"), rate("1.000001"))
        );

        let skipped: Vec<(&str, &SkipReason)> = import
            .skipped
            .iter()
            .map(|s| (s.model.as_str(), &s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    "dall-e-3",
                    &SkipReason::NotTokenPriced("image_generation".into())
                ),
                (
                    "ft:davinci-002",
                    &SkipReason::FineTunedWithoutBase("davinci-002".into())
                ),
                (
                    "negative",
                    &SkipReason::InvalidCost {
                        field: "input_cost_per_token",
                        reason: DecimalError::Negative
                    }
                ),
                ("no-output", &SkipReason::MissingCost),
                (
                    "stringy",
                    &SkipReason::InvalidCost {
                        field: "input_cost_per_token",
                        reason: DecimalError::NotANumber
                    }
                ),
                ("weird", &SkipReason::NotAnObject),
            ]
        );
    }

    #[test]
    fn provider_filter() {
        let import = import_litellm(SAMPLE, "prices.json", &["bedrock_converse"]).unwrap();
        let names: Vec<&String> = import.overrides.models.keys().collect();
        assert_eq!(names, ["bedrock/nova-pro"]);
        assert!(
            import
                .skipped
                .iter()
                .any(|s| s.reason == SkipReason::OtherProvider("openai".into()))
        );
    }

    #[test]
    fn imported_toml_loads_as_a_prices_file() {
        let import = import_litellm(SAMPLE, "prices.json", &["openai"]).unwrap();
        let text = import.to_toml().unwrap();
        assert!(text.starts_with("# Imported from LiteLLM"), "{text}");
        assert!(text.contains("input = \"0.15\""), "{text}");
        assert!(!text.contains("e-0"), "no floats in the output: {text}");
        let overrides = PricingOverrides::from_toml(&text, "litellm.toml").unwrap();
        assert_eq!(overrides, import.overrides);
        let catalog = Catalog::builtin()
            .merge(&overrides, "litellm.toml")
            .unwrap();
        let usage = Usage {
            prompt_tokens: 10_000,
            cached_tokens: 4_096,
            completion_tokens: 1_000,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        };
        let priced = catalog
            .price(Some("ft:gpt-4o-mini:acme::x"), None, &usage, false)
            .unwrap();
        assert_eq!(
            (priced.variant, priced.cost.to_string().as_str()),
            (Variant::FineTuned, "0.0035856")
        );
    }

    #[test]
    fn not_a_price_map() {
        for text in ["[1, 2]", "{", ""] {
            let error = import_litellm(text, "prices.json", &[]).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("prices.json: not a LiteLLM price map"),
                "{error}"
            );
        }
    }

    #[test]
    fn per_token_conversion() {
        let cases = [
            (Value::from(1.5e-7), Ok(150_000)),
            (Value::from(0), Ok(0)),
            (Value::from(2), Ok(2_000_000_000_000)),
            (Value::from(1e-20), Ok(0)),
            (Value::from(4.9e-13), Ok(0)),
            (Value::from(5e-13), Ok(1)),
            (Value::from(-1), Err(DecimalError::Negative)),
            (Value::from("1"), Err(DecimalError::NotANumber)),
            (Value::from(1e30), Err(DecimalError::Overflow)),
        ];
        for (value, want) in cases {
            let got = per_token(&value).map(Rate::micros_per_million);
            assert_eq!(got, want, "{value}");
        }
    }
}

#[cfg(test)]
mod provider_tests {
    use super::*;

    #[test]
    fn anthropic_cache_writes_and_gemini_long_context_are_imported() {
        let json = serde_json::json!({
            "claude-haiku-4-5": {"mode": "chat", "litellm_provider": "anthropic",
                "input_cost_per_token": 1e-06, "output_cost_per_token": 5e-06,
                "cache_read_input_token_cost": 1e-07,
                "cache_creation_input_token_cost": 1.25e-06},
            "gemini-2.5-pro": {"mode": "chat",
                "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
                "input_cost_per_token_above_200k_tokens": 2.5e-06,
                "output_cost_per_token_above_200k_tokens": 1.5e-05,
                "cache_read_input_token_cost_above_200k_tokens": 2.5e-07}
        });
        let haiku = convert(&json["claude-haiku-4-5"], &[]).unwrap();
        assert_eq!(
            haiku.cache_write.map(|r| r.to_string()).as_deref(),
            Some("1.25")
        );
        assert_eq!(haiku.long_context, None);
        let pro = convert(&json["gemini-2.5-pro"], &[]).unwrap();
        let long = pro.long_context.unwrap();
        assert_eq!(long.above, 200_000);
        let show = |r: Rate| r.to_string();
        assert_eq!(
            (
                show(long.input),
                long.cached_input.map(show),
                show(long.output)
            ),
            ("2.5".to_owned(), Some("0.25".to_owned()), "15".to_owned())
        );
    }
}
