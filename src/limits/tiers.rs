//! Which figures apply to a key and a model: the built-in tiers from the product brief,
//! custom tiers and per-model figures from config, and the key's own overrides.

use std::collections::BTreeMap;

use super::Limits;
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

/// A tier's figures, for every model and for single ones, and its totals across models.
#[derive(Debug, Clone, Default)]
struct Tier {
    figures: RateFigures,
    models: BTreeMap<String, RateFigures>,
    compiled: ModelFigures,
    key_total: RateFigures,
    team_total: RateFigures,
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
            tier.key_total = custom.key_total;
            tier.team_total = custom.team_total;
        }
        for tier in tiers.values_mut() {
            tier.compiled = ModelFigures::new(&tier.models);
            tier.key_total = config.key_total.overlaid(&tier.key_total);
            tier.team_total = config.team_total.overlaid(&tier.team_total);
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
        self.named_or_default(named)
    }

    /// The team's tier: its own, else the default. Its keys' tiers play no part, or the
    /// team total would depend on which key asked.
    fn team_tier_of(&self, identity: &Identity) -> &str {
        let named = identity
            .key
            .as_ref()
            .and_then(|entry| entry.team.tier.as_deref());
        self.named_or_default(named)
    }

    fn named_or_default(&self, named: Option<&str>) -> &str {
        match named.and_then(|name| self.tiers.get_key_value(name)) {
            Some((name, _)) => name,
            None => &self.default_tier,
        }
    }

    /// Every limit on `identity`'s request for `model`: per model, and the totals
    /// across all models of its key and (in keys mode) of its team.
    pub fn limits(&self, identity: &Identity, model: &str) -> Limits {
        let key_total = self
            .tiers
            .get(self.tier_of(identity))
            .map(|tier| tier.key_total)
            .unwrap_or_default();
        let team_total = match identity.team_id {
            Some(_) => self
                .tiers
                .get(self.team_tier_of(identity))
                .map(|tier| tier.team_total)
                .unwrap_or_default(),
            None => RateFigures::default(),
        };
        Limits {
            model: self.figures(identity, model),
            key_total,
            team_total,
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
    use super::*;
    use crate::config::TierConfig;

    fn identity(key_tier: Option<&str>, team_tier: Option<&str>, rpm: Option<u64>) -> Identity {
        Identity::for_test(|key, team| {
            key.tier = key_tier.map(str::to_owned);
            key.rpm = rpm;
            team.tier = team_tier.map(str::to_owned);
        })
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
        // No totals unless configured.
        let limits = tiers.limits(&gold, "o3");
        assert!(limits.key_total.is_empty() && limits.team_total.is_empty());
        // A built-in tier overridden field by field.
        let plain = identity(None, None, None);
        assert_eq!(
            tiers.figures(&plain, "o3"),
            figures(Some(500), Some(30_000), Some(10_000))
        );
    }

    #[test]
    fn totals_layer_config_then_tier_and_the_team_total_follows_the_team_tier() {
        let mut config = LimitsConfig {
            key_total: figures(Some(1_000), Some(50_000), None),
            team_total: figures(Some(2_000), None, None),
            ..LimitsConfig::default()
        };
        config.tiers.insert(
            "gold".into(),
            TierConfig {
                key_total: figures(None, Some(80_000), None),
                team_total: figures(Some(9_000), None, Some(100_000)),
                ..TierConfig::default()
            },
        );
        let tiers = Tiers::new(&config);
        // The key's tier sets its key total; the team's tier its team total.
        let key_gold = tiers.limits(&identity(Some("gold"), None, None), "m");
        assert_eq!(key_gold.key_total, figures(Some(1_000), Some(80_000), None));
        assert_eq!(key_gold.team_total, figures(Some(2_000), None, None));
        let team_gold = tiers.limits(&identity(None, Some("gold"), None), "m");
        assert_eq!(
            team_gold.key_total,
            figures(Some(1_000), Some(80_000), None)
        );
        assert_eq!(
            team_gold.team_total,
            figures(Some(9_000), None, Some(100_000))
        );
        // A caller without a team (passthrough) has no team total.
        let mut loner = identity(None, None, None);
        loner.team_id = None;
        loner.key = None;
        let limits = tiers.limits(&loner, "m");
        assert!(limits.team_total.is_empty());
        assert_eq!(limits.key_total, figures(Some(1_000), Some(50_000), None));
    }
}
