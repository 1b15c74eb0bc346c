//! A key's or team's spending cap as stored: an exact USD amount per calendar period.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::clock::Period;
use crate::pricing::Cost;

/// Micro-USD in one USD, and pico-USD in one micro-USD.
pub(crate) const PICO_PER_MICRO: u128 = 1_000_000;

/// A spending cap: `limit_micros` micro-USD per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit_micros: u64,
    pub period: Period,
}

impl Budget {
    pub fn limit(self) -> Cost {
        Cost::from_pico(u128::from(self.limit_micros) * PICO_PER_MICRO)
    }
}

// Flattened into keys and teams as `"budget_usd": "12.5", "budget_period": "monthly"`.
impl Serialize for Budget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("budget_usd", &self.limit())?;
        map.serialize_entry("budget_period", self.period.as_str())?;
        map.end()
    }
}

/// Parses a USD amount (`"12.50"`, `12.5`, `100`) to micro-USD, exactly: more than six
/// decimal places, a sign or an exponent is refused rather than rounded.
pub fn parse_usd(text: &str) -> Result<u64, String> {
    let cost = Cost::from_decimal_str(text.trim())
        .map_err(|reason| format!("`{text}` is not a USD amount ({reason})"))?;
    if cost.as_pico() % PICO_PER_MICRO != 0 {
        return Err(format!("`{text}` has more than 6 decimal places"));
    }
    u64::try_from(cost.as_pico() / PICO_PER_MICRO).map_err(|_| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Period;

    #[test]
    fn usd_amounts_parse_exactly() {
        assert_eq!(parse_usd("12.5"), Ok(12_500_000));
        assert_eq!(parse_usd("0.000001"), Ok(1));
        assert_eq!(parse_usd("100"), Ok(100_000_000));
        assert!(parse_usd("0.0000001").is_err());
        assert!(parse_usd("-1").is_err());
        assert!(parse_usd("1e3").is_err());
        assert!(parse_usd("").is_err());
    }

    #[test]
    fn budgets_serialise_as_exact_decimal_strings() {
        let budget = Budget {
            limit_micros: 12_500_000,
            period: Period::Weekly,
        };
        assert_eq!(
            serde_json::to_value(budget).unwrap(),
            serde_json::json!({"budget_usd": "12.5", "budget_period": "weekly"})
        );
    }
}
