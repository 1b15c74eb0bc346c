//! `[pricing]`: where prices come from beyond the built-in catalog, and what to do with
//! a model none of them lists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pricing::{AutoTier, Catalog, ModelPriceOverride, PricingError, PricingOverrides};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    /// A prices file (the catalog's TOML shape, e.g. written by `tollgate prices import`),
    /// merged over the built-in catalog; `[pricing.models]` below wins over both.
    pub file: Option<PathBuf>,
    /// What happens to a request for a model no catalog prices.
    pub unknown_model: UnknownModelPolicy,
    /// Refuse, before forwarding (and billing), a request whose prompt estimate plus
    /// output cap exceeds the model's context window in the catalog. Costs a tokenizer
    /// pass over every request's prompt.
    pub enforce_context_window: bool,
    /// The tier OpenAI serves `service_tier: "auto"` (and requests naming no tier) at
    /// on this deployment's project: `default`, unless the project is opted into
    /// priority processing. Budgets reserve such requests at this tier's rates; rows
    /// are priced at the tier the response names whatever this says.
    pub auto_service_tier: AutoTier,
    /// Per-model overrides or additions, per 1M tokens.
    pub models: BTreeMap<String, ModelPriceOverride>,
    /// Provider names (an Azure deployment, say) → catalog model.
    pub aliases: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownModelPolicy {
    /// Forward it; the row keeps its tokens with the cost marked unknown (NULL), never
    /// a silent $0, until `tollgate prices reprice` fills it in.
    #[default]
    Record,
    /// Refuse it with a 400 before anything is forwarded.
    Reject,
}

impl PricingConfig {
    /// The effective catalog: built-in < `file` < `[pricing.models]`/`[pricing.aliases]`.
    /// Errors name the file, the model and the field.
    pub fn catalog(&self) -> Result<Catalog, PricingError> {
        let mut catalog = Catalog::builtin();
        if let Some(path) = &self.file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| PricingError::Import {
                origin: origin.clone(),
                reason: format!("cannot read the prices file: {error}"),
            })?;
            let file = PricingOverrides::from_toml(&text, &origin)?;
            catalog = catalog.merge(&file, &origin)?;
        }
        let config = PricingOverrides {
            models: self.models.clone(),
            aliases: self.aliases.clone(),
        };
        catalog.merge(&config, "[pricing] in the config")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::pricing::AutoTier;

    #[test]
    fn the_auto_tier_is_default_or_priority_and_a_bad_one_is_named() {
        let config = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(config.pricing.auto_service_tier, AutoTier::Default);
        let config =
            Config::from_toml("[pricing]\nauto_service_tier = \"priority\"\n", "t.toml").unwrap();
        assert_eq!(config.pricing.auto_service_tier, AutoTier::Priority);
        let error = Config::from_toml("[pricing]\nauto_service_tier = \"flex\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("pricing.auto_service_tier"), "{error}");
        let error = Config::from_toml(
            "[pricing.models.\"gpt-5\".flex]\ninput = \"cheap\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("pricing.models.gpt-5.flex.input"), "{error}");
    }
}
