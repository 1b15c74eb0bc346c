//! Which figures apply to a key and a model: the built-in tiers from the product brief,
//! custom tiers and per-model figures from config, and the key's own overrides.

use std::collections::BTreeMap;

use crate::auth::Identity;
use crate::config::{LimitsConfig, RateFigures};

/// The brief's usage tiers: (name, RPM, TPM, RPD); none sets a TPD.
const BUILTIN: [(&str, u64, u64, Option<u64>); 6] = [
    ("free", 500, 200_000, Some(500)),
    ("tier-1", 500, 200_000, Some(10_000)),
    ("tier-2", 5_000, 2_000_000, None),
    ("tier-3", 5_000, 4_000_000, None),
    ("tier-4", 10_000, 10_000_000, None),
    ("tier-5", 30_000, 150_000_000, None),
];

/// A tier's figures, for every model and for single ones.
#[derive(Debug, Clone, Default)]
struct Tier {
    figures: RateFigures,
    models: BTreeMap<String, RateFigures>,
    compiled: ModelFigures,
}

/// Per-model figures with their globs compiled once, not per request.
#[derive(Debug, Clone, Default)]
struct ModelFigures {
    exact: BTreeMap<String, RateFigures>,
    globs: Vec<(glob::Pattern, RateFigures)>,
}

impl ModelFigures {
    fn new(models: &BTreeMap<String, RateFigures>) -> Self {
        let globs = models
            .iter()
            .filter(|(pattern, _)| pattern.contains(['*', '?', '[']))
            .filter_map(|(pattern, figures)| Some((glob::Pattern::new(pattern).ok()?, *figures)))
            .collect();
        Self {
            exact: models.clone(),
            globs,
        }
    }

    /// The figures for `model`: an exact name first, else the first glob that matches.
    fn get(&self, model: &str) -> Option<&RateFigures> {
        self.exact.get(model).or_else(|| {
            self.globs
                .iter()
                .find(|(glob, _)| glob.matches(model))
                .map(|(_, figures)| figures)
        })
    }
}

/// Every tier by name, resolved once from config.
#[derive(Debug, Clone)]
pub struct Tiers {
    tiers: BTreeMap<String, Tier>,
    default_tier: String,
    /// Config's per-model figures, for every tier.
    models: ModelFigures,
}

impl Tiers {
    pub fn new(config: &LimitsConfig) -> Self {
        let mut tiers: BTreeMap<String, Tier> = BUILTIN
            .iter()
            .map(|&(name, rpm, tpm, rpd)| {
                let figures = RateFigures {
                    rpm: Some(rpm),
                    tpm: Some(tpm),
                    rpd,
                    tpd: None,
                };
                (
                    name.to_owned(),
                    Tier {
                        figures,
                        ..Tier::default()
                    },
                )
            })
            .collect();
        for (name, custom) in &config.tiers {
            let tier = tiers.entry(name.clone()).or_default();
            tier.figures = tier.figures.overlaid(&custom.figures());
            tier.models.extend(custom.models.clone());
        }
        for tier in tiers.values_mut() {
            tier.compiled = ModelFigures::new(&tier.models);
        }
        Self {
            tiers,
            default_tier: config.default_tier.clone(),
            models: ModelFigures::new(&config.models),
        }
    }

    /// The tier that applies: the key's own, else its team's, else the default. A name
    /// no longer configured falls back to the default.
    pub fn tier_of(&self, identity: &Identity) -> &str {
        let named = identity
            .key
            .as_ref()
            .and_then(|entry| entry.key.tier.as_deref().or(entry.team.tier.as_deref()));
        match named.and_then(|name| self.tiers.get_key_value(name)) {
            Some((name, _)) => name,
            None => &self.default_tier,
        }
    }

    /// The figures for `identity` on `model`. From weakest to strongest: the tier's,
    /// config's for the model, the tier's for the model, the key's own columns.
    pub fn figures(&self, identity: &Identity, model: &str) -> RateFigures {
        let tier = self.tiers.get(self.tier_of(identity));
        let mut figures = tier.map(|t| t.figures).unwrap_or_default();
        if let Some(over) = self.models.get(model) {
            figures = figures.overlaid(over);
        }
        if let Some(over) = tier.and_then(|t| t.compiled.get(model)) {
            figures = figures.overlaid(over);
        }
        if let Some(entry) = &identity.key {
            let key = &entry.key;
            figures = figures.overlaid(&RateFigures {
                rpm: key.rpm,
                tpm: key.tpm,
                rpd: key.rpd,
                tpd: None,
            });
        }
        figures
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::{KeyEntry, KeyRecord, TeamRecord};
    use crate::config::TierConfig;

    fn identity(key_tier: Option<&str>, team_tier: Option<&str>, rpm: Option<u64>) -> Identity {
        let team = TeamRecord {
            id: "team".into(),
            name: "t".into(),
            tier: team_tier.map(str::to_owned),
            budget: None,
            created_ms: 0,
            updated_ms: 0,
        };
        let key = KeyRecord {
            id: "key".into(),
            team_id: "team".into(),
            team: "t".into(),
            name: "k".into(),
            prefix: "tg-x".into(),
            hash: [0; 32],
            tier: key_tier.map(str::to_owned),
            rpm,
            tpm: None,
            rpd: None,
            budget: None,
            allowed_models: None,
            expires_ms: None,
            revoked_ms: None,
            created_ms: 0,
            updated_ms: 0,
        };
        Identity {
            key_id: "key".into(),
            team_id: Some("team".into()),
            display: "tg-x".into(),
            key: Some(Arc::new(KeyEntry {
                key,
                team: Arc::new(team),
            })),
        }
    }

    fn figures(rpm: Option<u64>, tpm: Option<u64>, rpd: Option<u64>) -> RateFigures {
        RateFigures {
            rpm,
            tpm,
            rpd,
            tpd: None,
        }
    }

    #[test]
    fn key_override_beats_key_tier_beats_team_tier_beats_default() {
        let tiers = Tiers::new(&LimitsConfig::default());
        let cases = [
            (
                identity(None, None, None),
                figures(Some(500), Some(200_000), Some(10_000)),
            ),
            (
                identity(None, Some("free"), None),
                figures(Some(500), Some(200_000), Some(500)),
            ),
            (
                identity(Some("tier-5"), Some("free"), None),
                figures(Some(30_000), Some(150_000_000), None),
            ),
            (
                identity(Some("tier-2"), Some("free"), Some(7)),
                figures(Some(7), Some(2_000_000), None),
            ),
            (
                identity(Some("gone"), None, None),
                figures(Some(500), Some(200_000), Some(10_000)),
            ),
        ];
        for (who, expected) in cases {
            assert_eq!(tiers.figures(&who, "gpt-4o"), expected, "{who:?}");
        }
    }

    #[test]
    fn custom_tiers_and_per_model_figures_layer_in_order() {
        let mut config = LimitsConfig::default();
        config.tiers.insert(
            "gold".into(),
            TierConfig {
                rpm: Some(100),
                tpd: Some(1_000_000),
                models: [("gpt-4o*".to_owned(), figures(None, Some(5_000), None))].into(),
                ..TierConfig::default()
            },
        );
        config.tiers.insert(
            "tier-1".into(),
            TierConfig {
                tpm: Some(30_000),
                ..TierConfig::default()
            },
        );
        config
            .models
            .insert("gpt-4o".into(), figures(Some(50), Some(9_000), None));
        let tiers = Tiers::new(&config);
        let gold = identity(Some("gold"), None, None);
        // Config's model figure (rpm 50) over the tier's; the tier's glob (tpm 5,000)
        // over config's model figure.
        assert_eq!(
            tiers.figures(&gold, "gpt-4o"),
            RateFigures {
                rpm: Some(50),
                tpm: Some(5_000),
                rpd: None,
                tpd: Some(1_000_000),
            }
        );
        assert_eq!(tiers.figures(&gold, "gpt-4o-mini").tpm, Some(5_000));
        assert_eq!(tiers.figures(&gold, "o3").rpm, Some(100));
        // A built-in tier overridden field by field.
        let plain = identity(None, None, None);
        assert_eq!(
            tiers.figures(&plain, "o3"),
            figures(Some(500), Some(30_000), Some(10_000))
        );
    }
}
