//! Model name → catalog entry. Upstreams answer with dated snapshots
//! (`gpt-4o-mini-2024-07-18`, `gpt-3.5-turbo-0125`) and fine-tuned names
//! (`ft:gpt-4o-mini-2024-07-18:acme::abc123`); the catalog lists families. Resolution
//! borrows from the catalog and never allocates: it runs once per metered request.

use super::catalog::{Catalog, ModelPrices};

/// A name resolved to a catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The catalog key whose prices apply.
    pub key: &'a str,
    pub prices: &'a ModelPrices,
    /// The name was an `ft:` model (directly or through an alias): charge `ft_*` rates.
    pub fine_tuned: bool,
}

impl Catalog {
    /// Resolves, in order: the exact catalog name; an alias; a dated snapshot of a
    /// catalog family (`-YYYY-MM-DD`, or `-MMDD` as in `gpt-4-0613`) unless the snapshot
    /// is itself listed (the exact match wins); an `ft:BASE:org:suffix:id[:ckpt-step-N]`
    /// name, by its BASE (itself possibly a snapshot). `None`: unknown model.
    pub fn resolve(&self, name: &str) -> Option<Resolved<'_>> {
        if let Some(found) = self.exact(name) {
            return Some(found);
        }
        if let Some(target) = self.aliases.get(name) {
            return self.resolve_target(target);
        }
        self.resolve_target(name)
    }

    /// Resolution without aliases: alias targets go through this, so aliases never chain
    /// and can never loop.
    pub(super) fn resolve_target(&self, name: &str) -> Option<Resolved<'_>> {
        match fine_tuned_base(name) {
            Some(base) => self.family(base).map(|found| Resolved {
                fine_tuned: true,
                ..found
            }),
            None => self.family(name),
        }
    }

    fn family(&self, name: &str) -> Option<Resolved<'_>> {
        self.exact(name)
            .or_else(|| strip_date(name).and_then(|family| self.exact(family)))
            .or_else(|| strip_mmdd(name).and_then(|family| self.exact(family)))
    }

    fn exact(&self, name: &str) -> Option<Resolved<'_>> {
        self.models
            .get_key_value(name)
            .map(|(key, prices)| Resolved {
                key: key.as_str(),
                prices,
                fine_tuned: false,
            })
    }

    /// Up to three catalog names (models and aliases) close to `name`, closest first, for
    /// "unknown model; did you mean …" messages. Off the hot path: allocates freely.
    pub fn suggest(&self, name: &str) -> Vec<&str> {
        let wanted = fine_tuned_base(name).unwrap_or(name);
        let wanted = strip_date(wanted)
            .or_else(|| strip_mmdd(wanted))
            .unwrap_or(wanted);
        let budget = (wanted.len() / 3).max(2);
        let mut ranked: Vec<(usize, usize, &str)> = self
            .models
            .keys()
            .chain(self.aliases.keys())
            .map(String::as_str)
            .filter_map(|candidate| {
                let distance = edit_distance(wanted, candidate);
                let shared = common_prefix(wanted, candidate);
                // A long shared prefix ("gpt-4o-mini-latest" / "gpt-4o-mini") is a
                // good hint even when the tails differ a lot.
                let prefix_hint = shared >= 5 && shared * 2 >= candidate.len().min(wanted.len());
                (distance <= budget || prefix_hint).then_some((
                    distance,
                    usize::MAX - shared,
                    candidate,
                ))
            })
            .collect();
        ranked.sort_unstable();
        ranked
            .into_iter()
            .take(3)
            .map(|(_, _, candidate)| candidate)
            .collect()
    }
}

/// The BASE of `ft:BASE:org:suffix:id[:ckpt-step-N]` (also accepts a bare `ft:BASE`).
pub(super) fn fine_tuned_base(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("ft:")?;
    let base = rest.split_once(':').map_or(rest, |(base, _)| base);
    (!base.is_empty()).then_some(base)
}

/// `gpt-4.1-2025-04-14` → `gpt-4.1`.
fn strip_date(name: &str) -> Option<&str> {
    strip_suffix_pattern(name, b"-dddd-dd-dd")
        // Anthropic dates its snapshots without dashes: `claude-haiku-4-5-20251001`.
        .or_else(|| strip_suffix_pattern(name, b"-dddddddd"))
}

/// `gpt-3.5-turbo-0125` → `gpt-3.5-turbo`; `gpt-4-0613` → `gpt-4`.
fn strip_mmdd(name: &str) -> Option<&str> {
    strip_suffix_pattern(name, b"-dddd")
}

/// Strips a suffix matching `pattern`, where `d` is any ASCII digit and other bytes
/// match themselves. Leaves at least one byte of family name.
fn strip_suffix_pattern<'a>(name: &'a str, pattern: &[u8]) -> Option<&'a str> {
    let cut = name
        .len()
        .checked_sub(pattern.len())
        .filter(|&cut| cut > 0)?;
    let suffix = name.as_bytes().get(cut..)?;
    let matches = suffix.iter().zip(pattern).all(|(&byte, &want)| match want {
        b'd' => byte.is_ascii_digit(),
        want => byte == want,
    });
    // The suffix is ASCII, so `cut` is a char boundary.
    matches.then(|| name.get(..cut)).flatten()
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

/// Levenshtein distance over bytes (model names are ASCII in practice).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.as_bytes().iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::PricingOverrides;

    #[test]
    fn names_resolve_to_catalog_keys() {
        let catalog = Catalog::builtin();
        // (name, key, fine-tuned)
        let table = [
            ("gpt-4o-mini", "gpt-4o-mini", false),
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", false),
            ("gpt-4.1-2025-04-14", "gpt-4.1", false),
            ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano", false),
            ("gpt-3.5-turbo-0125", "gpt-3.5-turbo", false),
            ("gpt-4-0613", "gpt-4", false),
            // A snapshot with its own price is listed and wins over its family.
            ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13", false),
            ("gpt-4o-2024-08-06", "gpt-4o", false),
            ("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106", false),
            (
                "ft:gpt-4o-mini-2024-07-18:acme::abc123",
                "gpt-4o-mini",
                true,
            ),
            (
                "ft:gpt-4.1-nano-2025-04-14:acme:x:id:ckpt-step-88",
                "gpt-4.1-nano",
                true,
            ),
            (
                "ft:gpt-4o-2024-08-06:my-org:custom_suffix:7q8mpxmy",
                "gpt-4o",
                true,
            ),
            ("ft:gpt-4o-mini", "gpt-4o-mini", true),
            ("claude-haiku-4.5", "claude-haiku-4-5", false),
            ("claude-haiku-4-5-20251001", "claude-haiku-4-5", false),
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", false),
            ("claude-opus-4-1-20250805", "claude-opus-4-1", false),
            ("o3-mini-2025-01-31", "o3-mini", false),
            ("gpt-5-nano-2025-08-07", "gpt-5-nano", false),
        ];
        for (name, key, fine_tuned) in table {
            let resolved = catalog
                .resolve(name)
                .unwrap_or_else(|| panic!("{name} unknown"));
            assert_eq!(
                (resolved.key, resolved.fine_tuned),
                (key, fine_tuned),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_names_stay_unknown() {
        let catalog = Catalog::builtin();
        for name in [
            "",
            "gpt-9",
            "ft:",
            "ft::acme::x",
            "ft:gpt-9-2025-01-01:acme::x",
            "-2024-07-18",
            "gpt-4o-mini-2024-07",
            "gpt-4o-mini-24-07-18",
            "my-gpt-4o-mini",
            "GPT-4O-MINI",
            "gpt-4o-mini:ft",
        ] {
            assert_eq!(catalog.resolve(name), None, "{name:?}");
        }
    }

    #[test]
    fn aliases_resolve_to_models_snapshots_and_fine_tunes() {
        let overrides = PricingOverrides::from_toml(
            r#"
            [aliases]
            "my-azure-deployment" = "gpt-4o-mini"
            "pinned" = "gpt-4.1-2025-04-14"
            "support-bot" = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
            "#,
            "tollgate.toml",
        )
        .unwrap();
        let catalog = Catalog::builtin()
            .merge(&overrides, "tollgate.toml")
            .unwrap();
        let table = [
            ("my-azure-deployment", "gpt-4o-mini", false),
            ("pinned", "gpt-4.1", false),
            ("support-bot", "gpt-4o-mini", true),
        ];
        for (name, key, fine_tuned) in table {
            let resolved = catalog.resolve(name).unwrap();
            assert_eq!(
                (resolved.key, resolved.fine_tuned),
                (key, fine_tuned),
                "{name}"
            );
        }
        // Aliases do not chain.
        let chained =
            PricingOverrides::from_toml("[aliases]\nagain = \"pinned\"", "c.toml").unwrap();
        assert!(catalog.merge(&chained, "c.toml").is_err());
    }

    #[test]
    fn suggestions() {
        let catalog = Catalog::builtin();
        let table: [(&str, &[&str]); 6] = [
            ("gpt4o-mini", &["gpt-4o-mini"]),
            ("gpt-4o-mni", &["gpt-4o-mini"]),
            ("gpt-4o-mini-latest", &["gpt-4o-mini"]),
            ("ft:gpt-4o-mni-2024-07-18:acme::x", &["gpt-4o-mini"]),
            ("o3-mimi", &["o3-mini", "o1-mini", "o4-mini"]),
            ("zzzzzzzzzzzzzzzz", &[]),
        ];
        for (name, want) in table {
            let got = catalog.suggest(name);
            assert!(got.len() <= 3, "{name}: {got:?}");
            assert_eq!(&got[..want.len().min(got.len())], want, "{name}: {got:?}");
            if want.is_empty() {
                assert!(got.is_empty(), "{name}: {got:?}");
            }
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("gpt-4o", "gpt-4o"), 0);
        assert_eq!(strip_date("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_date("2024-08-06"), None);
        assert_eq!(strip_mmdd("gpt-4-0613"), Some("gpt-4"));
        assert_eq!(strip_mmdd("-0613"), None);
        assert_eq!(strip_mmdd("gpt-4o-mini-é613"), None);
        assert_eq!(
            fine_tuned_base("ft:davinci-002:org:suf:id"),
            Some("davinci-002")
        );
        assert_eq!(fine_tuned_base("gpt-4o"), None);
    }
}
