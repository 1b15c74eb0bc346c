//! Service tiers: OpenAI bills the same tokens at different rates depending on the tier
//! that served them. A request may ask for `auto`, `default`, `flex`, `priority` (or the
//! legacy `scale`); the response's `service_tier` says which tier actually served it.
//!
//! Three decisions live here, pure, so the proxy, the CLI and the tests agree on them:
//! which tier a row is priced at ([`served`]), which tier a budget reservation is priced
//! at before the answer exists ([`worst_case`]), and the bounded metric label of a tier
//! name ([`label`]).

use serde::{Deserialize, Serialize};

// Metering cuts the raw value before anything prices it; the cut is re-exported here
// beside the tier decisions that read it.
pub use crate::metering::tier::{MAX_RECORDED_BYTES, recorded};

/// A service tier as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTier {
    /// The project's own setting decides (OpenAI's default when the field is absent).
    Auto,
    /// Standard processing at the standard rates.
    Default,
    /// Slower, cheaper: the flex sheet.
    Flex,
    /// Faster, dearer: the priority sheet.
    Priority,
    /// The legacy Scale Tier (prepaid capacity): no per-token sheet, priced at standard.
    Scale,
}

/// The `service_tier` label values, in a fixed order: every known name, then `other`.
pub const LABELS: [&str; 6] = ["auto", "default", "flex", "priority", "scale", OTHER];

/// The label of a tier name no one defines: a client sending made-up values, or an
/// upstream answering with one, cannot create series.
pub const OTHER: &str = "other";

impl ServiceTier {
    /// The exact (lowercase) name OpenAI uses; anything else is not a tier tollgate
    /// knows, and is priced at standard.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "auto" => Self::Auto,
            "default" => Self::Default,
            "flex" => Self::Flex,
            "priority" => Self::Priority,
            "scale" => Self::Scale,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Default => "default",
            Self::Flex => "flex",
            Self::Priority => "priority",
            Self::Scale => "scale",
        }
    }
}

/// The metric label of a tier name: its own name when OpenAI defines it, else `other`.
pub fn label(name: &str) -> &'static str {
    ServiceTier::parse(name).map_or(OTHER, ServiceTier::as_str)
}

/// The tier OpenAI serves `auto` (and a request naming no tier) at on the operator's
/// project: `default` unless the project is opted into priority processing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoTier {
    #[default]
    Default,
    Priority,
}

impl AutoTier {
    pub fn tier(self) -> ServiceTier {
        match self {
            Self::Default => ServiceTier::Default,
            Self::Priority => ServiceTier::Priority,
        }
    }
}

/// The tier a row is priced at: what the response says served it; when the response
/// names none (a compatible upstream that does not report tiers), the tier the request
/// asked for; `auto`, a malformed value or no tier at all, `default`.
pub fn served<'a>(answered: Option<&'a str>, requested: Option<&'a str>) -> &'a str {
    if let Some(answered) = answered {
        return answered;
    }
    match requested.and_then(ServiceTier::parse) {
        Some(ServiceTier::Auto) | None => ServiceTier::Default.as_str(),
        Some(_) => requested.unwrap_or_default(),
    }
}

/// The tier whose rates a budget reservation for a request asking for `requested` is
/// made at: the dearest tier, by OpenAI's documentation, it can be billed at.
///
/// - `priority`: priority. A priority request over the ramp rate may be served (and
///   billed) as `default`, which is cheaper, so priority is the worst case.
/// - `flex`: flex. OpenAI documents no fallback from flex to standard: when flex
///   capacity runs out the request gets a 429 and is not billed. A compatible upstream
///   that answers a flex request as `default` gets that row priced at standard (the
///   served tier wins) and its reservation settled to that cost; only requests in
///   flight at that moment can overshoot a budget, by the flex-to-standard difference.
/// - `auto` and no tier: the project's tier (`auto` runs at whatever the project is set
///   to, `default` unless it is opted into priority processing, which tollgate cannot
///   see: `pricing.auto_service_tier` says it).
/// - `default`, the legacy `scale` (no per-token sheet; billed at standard here) and
///   anything unknown or malformed: default, which is also what such a row is priced at.
///
/// A model without the chosen tier's sheet is reserved (and priced) at standard.
pub fn worst_case(requested: Option<&str>, auto: AutoTier) -> ServiceTier {
    match requested.map(ServiceTier::parse) {
        None | Some(Some(ServiceTier::Auto)) => auto.tier(),
        Some(Some(tier @ (ServiceTier::Flex | ServiceTier::Priority))) => tier,
        Some(Some(ServiceTier::Default | ServiceTier::Scale) | None) => ServiceTier::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_known_names_or_other() {
        for name in ["auto", "default", "flex", "priority", "scale"] {
            assert_eq!(label(name), name);
            assert!(LABELS.contains(&name));
        }
        for name in ["FLEX", "turbo", "", " flex", "5", "{\"a\":1}"] {
            assert_eq!(label(name), OTHER, "{name:?}");
        }
        assert_eq!(LABELS.last(), Some(&OTHER));
    }

    #[test]
    fn the_response_wins_then_a_named_request_then_default() {
        // (answered, requested, served)
        let cases = [
            (Some("default"), Some("auto"), "default"),
            (Some("default"), Some("flex"), "default"),
            (Some("flex"), Some("flex"), "flex"),
            (Some("priority"), None, "priority"),
            (Some("mystery"), Some("flex"), "mystery"),
            (None, Some("flex"), "flex"),
            (None, Some("priority"), "priority"),
            (None, Some("scale"), "scale"),
            (None, Some("auto"), "default"),
            (None, Some("turbo"), "default"),
            (None, Some("5"), "default"),
            (None, None, "default"),
        ];
        for (answered, requested, want) in cases {
            assert_eq!(
                served(answered, requested),
                want,
                "{answered:?} {requested:?}"
            );
        }
    }

    #[test]
    fn reservations_take_the_dearest_tier_a_request_can_be_billed_at() {
        use AutoTier as A;
        use ServiceTier as T;
        // (requested, project tier, reserved at)
        let cases = [
            (None, A::Default, T::Default),
            (None, A::Priority, T::Priority),
            (Some("auto"), A::Default, T::Default),
            (Some("auto"), A::Priority, T::Priority),
            (Some("default"), A::Priority, T::Default),
            (Some("flex"), A::Priority, T::Flex),
            (Some("priority"), A::Default, T::Priority),
            (Some("scale"), A::Priority, T::Default),
            (Some("FLEX"), A::Default, T::Default),
            (Some("true"), A::Priority, T::Default),
        ];
        for (requested, auto, want) in cases {
            assert_eq!(worst_case(requested, auto), want, "{requested:?} {auto:?}");
        }
    }
}
