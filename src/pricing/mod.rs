//! What a request costs. Pure: text in, catalog out; usage in, exact cost out. No I/O,
//! no HTTP types, no floats for money.
//!
//! - [`money`]: [`Rate`] (micro-USD per 1M tokens) and [`Cost`] (pico-USD), so
//!   `tokens × rate` is exact and sums never drift.
//! - [`catalog`]: the built-in price list (`prices/catalog.toml`) and the merge
//!   `built-in < prices file < config`.
//! - [`overrides`]: the TOML shape of all three, as serde structs the config embeds.
//! - [`resolve`]: model name → catalog entry: exact, alias, dated snapshot, `ft:` name.
//! - [`cost`]: the priced variants (standard, batch, fine-tuned, fine-tuned batch, and
//!   the flex and priority service tiers of either).
//! - [`sheet`]: the flex and priority sheets, and pricing by the tier that served.
//! - [`tier`]: which service tier a row is priced at, and a reservation reserved at.
//! - [`import`]: LiteLLM's `model_prices_and_context_window.json` → catalog TOML.
//!
//! Start-up builds the catalog once:
//!
//! ```
//! use tollgate::metering::Usage;
//! use tollgate::pricing::{Catalog, PricingOverrides, Variant};
//!
//! let config = PricingOverrides::from_toml(
//!     r#"
//!     aliases = { "my-deployment" = "gpt-4o-mini" }
//!     [models."gpt-4o-mini"]
//!     output = 0.65
//!     "#,
//!     "tollgate.toml",
//! )?;
//! let catalog = Catalog::builtin().merge(&config, "tollgate.toml")?;
//!
//! let usage = Usage { prompt_tokens: 2006, cached_tokens: 1920, completion_tokens: 300, ..Usage::default() };
//! let priced = catalog
//!     .price(Some("gpt-4o-mini-2024-07-18"), Some("my-deployment"), &usage, false)
//!     .ok_or("unknown model")?;
//! assert_eq!(priced.model, "gpt-4o-mini");
//! assert_eq!(priced.variant, Variant::Standard);
//! // 86 × 0.15 + 1920 × 0.075 + 300 × 0.65 per 1M tokens
//! assert_eq!(priced.cost.to_string(), "0.0003519");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod catalog;
pub mod cost;
pub mod import;
pub mod money;
pub mod overrides;
pub mod resolve;
pub mod sheet;
pub mod table;
pub mod tier;

pub use catalog::{BUILTIN_ORIGIN, Catalog, ModelPrices};
pub use cost::{Priced, UnitRates, Variant};
pub use import::{LiteLlmImport, SkipReason, Skipped, import_litellm};
pub use money::{Cost, DecimalError, Rate, exact_toml};
pub use overrides::{ModelPriceOverride, PricingOverrides, TierSheetOverride};
pub use resolve::Resolved;
pub use sheet::TierSheet;
pub use tier::{AutoTier, ServiceTier};

/// A price catalog, prices file or override that cannot be used. Every variant names the
/// file (`origin`) and, where there is one, the model and the field.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The text is not valid TOML.
    #[error("{origin}{}: {message}", at_line(*line))]
    Syntax {
        origin: String,
        line: Option<usize>,
        message: String,
    },
    /// A field has a bad value, an unknown name, or contradicts another field.
    #[error("{origin}{}: {}: {reason}", at_line(*line), place(model.as_deref(), field))]
    Field {
        origin: String,
        line: Option<usize>,
        model: Option<String>,
        field: String,
        reason: String,
    },
    /// A model (or a model's tier sheet) that is not in the catalog yet lacks a rate
    /// every model (or sheet) needs.
    #[error(
        "{origin}: model `{model}`: `{field}` is required for a model or tier sheet the catalog does not have yet"
    )]
    MissingField {
        origin: String,
        model: String,
        field: &'static str,
    },
    /// An alias that cannot be used.
    #[error("{origin}: alias `{alias}` → `{target}`: {reason}")]
    Alias {
        origin: String,
        alias: String,
        target: String,
        reason: &'static str,
    },
    /// The LiteLLM price map is not a JSON object of model entries.
    #[error("{origin}: not a LiteLLM price map: {reason}")]
    Import { origin: String, reason: String },
    /// Overrides could not be written as TOML.
    #[error("cannot write catalog TOML: {0}")]
    Write(#[from] toml::ser::Error),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(":{line}")).unwrap_or_default()
}

fn place(model: Option<&str>, field: &str) -> String {
    match model {
        Some(model) => format!("model `{model}`, field `{field}`"),
        None => format!("`{field}`"),
    }
}
