//! The one TOML shape of the built-in catalog, an operator's prices file and the config's
//! `[pricing]` section, so a line can move between them unchanged:
//!
//! ```toml
//! [models."gpt-4o-mini"]
//! input = "0.15"          # USD per 1M tokens; a string, an integer or a float
//! cached_input = "0.075"
//! output = "0.60"
//!
//! [aliases]
//! "my-azure-deployment" = "gpt-4o-mini"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PricingError;
use super::money::Rate;

/// `[pricing.models."name"]`: any subset of a model's fields. On a model the catalog
/// already has, only the given fields change; a new model needs `input` and `output`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelPriceOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Rate>,
    /// `[models."name".long_context]`: rates above a prompt size (replaced whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_context: Option<super::catalog::LongContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_input: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_output: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ft_input: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ft_cached_input: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ft_output: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `[models."name".flex]`: the flex service tier's sheet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flex: Option<TierSheetOverride>,
    /// `[models."name".priority]`: the priority service tier's sheet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<TierSheetOverride>,
    /// The flex sheet of this base model's `ft:` models (none unless configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ft_flex: Option<TierSheetOverride>,
    /// The priority sheet of this base model's `ft:` models (none unless configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ft_priority: Option<TierSheetOverride>,
}

/// A service tier's rates per 1M tokens, with their own date and source: any subset on
/// a sheet the model already has; `input` and `output` at least for a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierSheetOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The `[pricing]` tables of the config, and the whole of a prices file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingOverrides {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelPriceOverride>,
    /// Extra names for a model, e.g. an Azure deployment name. The target may be a
    /// catalog model, a dated snapshot of one, or an `ft:` name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, String>,
}

// === impl PricingOverrides ===

impl PricingOverrides {
    /// Parses a prices file (or any text of the `[pricing]` shape). Errors name `origin`,
    /// the line, and the model and field at fault.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, PricingError> {
        let deserializer =
            super::money::exact_toml(text).map_err(|error| PricingError::Syntax {
                origin: origin.to_owned(),
                line: line_of(text, error.span()),
                message: error.message().to_owned(),
            })?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let (model, field) = model_and_field(error.path());
            let inner = error.inner();
            PricingError::Field {
                origin: origin.to_owned(),
                line: line_of(text, inner.span()),
                model,
                field,
                reason: inner.message().to_owned(),
            }
        })
    }

    /// Writes the overrides in the catalog's own TOML shape (rates as decimal strings).
    pub fn to_toml(&self) -> Result<String, PricingError> {
        Ok(toml::to_string(self)?)
    }
}

/// Splits a serde path such as `models.gpt-4o.input` into model and field; other paths
/// (`aliases.x`, a misspelt top-level table) become the field.
fn model_and_field(path: &serde_path_to_error::Path) -> (Option<String>, String) {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    match segments.as_slice() {
        [
            Segment::Map { key: table },
            Segment::Map { key: model },
            rest @ ..,
        ] if table == "models" => {
            let field = rest
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(".");
            (Some(model.clone()), field)
        }
        _ => (None, path.to_string()),
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let start = span?.start;
    let before = text.get(..start)?;
    Some(before.bytes().filter(|&b| b == b'\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Catalog;

    #[track_caller]
    fn field_error(text: &str) -> (Option<usize>, Option<String>, String, String) {
        let error = PricingOverrides::from_toml(text, "prices.toml")
            .and_then(|o| Catalog::builtin().merge(&o, "prices.toml"));
        match error {
            Err(PricingError::Field {
                origin,
                line,
                model,
                field,
                reason,
            }) => {
                assert_eq!(origin, "prices.toml");
                (line, model, field, reason)
            }
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_prices_name_file_model_and_field() {
        let cases = [
            (
                "[models.\"gpt-4o\"]\ninput = \"-0.15\"",
                "gpt-4o",
                "input",
                "negative",
            ),
            (
                "[models.\"gpt-4o\"]\noutput = -1",
                "gpt-4o",
                "output",
                "negative",
            ),
            (
                "[models.x]\ninput = \"cheap\"\noutput = \"1\"",
                "x",
                "input",
                "not a decimal",
            ),
            (
                "[models.x]\ninput = \"0.0000001\"",
                "x",
                "input",
                "6 decimal places",
            ),
            ("[models.x]\ninput = nan", "x", "input", "finite"),
            ("[models.x]\ninput = -inf", "x", "input", "finite"),
            ("[models.x]\ninput = true", "x", "input", "price in USD"),
            (
                "[models.x]\ninput = 1\noutput = 1\nas_of = \"2026-02-30\"",
                "x",
                "as_of",
                "date",
            ),
            (
                "[models.x]\ninput = 1\noutput = 1\nft_input = 2",
                "x",
                "ft_output",
                "ft_input",
            ),
            (
                "[models.\"ft:gpt-4o\"]\ninput = 1\noutput = 1",
                "ft:gpt-4o",
                "name",
                "base model",
            ),
            ("[models.x]\nctx = 5", "x", "", "unknown field `ctx`"),
        ];
        for (text, model, field, reason) in cases {
            let (line, got_model, got_field, got_reason) = field_error(text);
            assert_eq!(got_model.as_deref(), Some(model), "{text}");
            assert!(got_field.contains(field), "{text}: field {got_field}");
            assert!(got_reason.contains(reason), "{text}: reason {got_reason}");
            if field == "input" || field == "output" {
                assert_eq!(line, Some(2), "{text}");
            }
        }
        let error = field_error("[models.\"gpt-4o\"]\ninput = \"-0.15\"");
        let shown = PricingError::Field {
            origin: "prices.toml".into(),
            line: error.0,
            model: error.1,
            field: error.2,
            reason: error.3,
        }
        .to_string();
        assert_eq!(
            shown,
            "prices.toml:2: model `gpt-4o`, field `input`: invalid price `-0.15`: \
             negative amounts are not allowed"
        );
    }

    #[test]
    fn other_catalog_errors() {
        let new_model = PricingOverrides::from_toml("[models.new]\ninput = 1", "c.toml").unwrap();
        let error = Catalog::builtin().merge(&new_model, "c.toml").unwrap_err();
        assert!(
            matches!(&error, PricingError::MissingField { origin, model, field: "output" }
                if origin == "c.toml" && model == "new"),
            "{error}"
        );
        let alias = PricingOverrides::from_toml("[aliases]\nmine = \"gpt-9\"", "c.toml").unwrap();
        let error = Catalog::builtin().merge(&alias, "c.toml").unwrap_err();
        assert!(matches!(error, PricingError::Alias { .. }), "{error}");
        let shadow = PricingOverrides::from_toml("[aliases]\ngpt-4o = \"gpt-4.1\"", "c").unwrap();
        assert!(Catalog::builtin().merge(&shadow, "c").is_err());
        let error = PricingOverrides::from_toml("[models.x\ninput = 1", "c.toml").unwrap_err();
        assert!(
            matches!(error, PricingError::Syntax { line: Some(1), .. }),
            "{error}"
        );
        let error = PricingOverrides::from_toml("[modles.x]\ninput = 1", "c.toml").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `modles`"),
            "{error}"
        );
    }
}
