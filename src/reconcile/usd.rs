//! Exact signed USD for comparing two sides' money. OpenAI's Costs API writes
//! `amount.value` as a JSON number (`0.8958740000000000`, `0.30000000000000004`,
//! `1.2e-05`), which serde_json would hand over as an f64: the raw text is read instead
//! and turned into an integer of 10⁻²⁴ USD, exact for every number a float prints with
//! its 17 significant digits down to a millionth of a cent. tollgate's own pico-USD
//! costs convert exactly; credits (negative amounts) are kept with their sign.

use std::fmt;

use crate::pricing::Cost;

/// Decimal places of a [`Usd`].
pub const PLACES: u32 = 24;
const PICO_TO_YOCTO: i128 = 1_000_000_000_000;

/// USD in integer 10⁻²⁴ units. i128 holds ±1.7 × 10¹⁴ USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i128);

/// Why an amount's text is not a number this can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("not a JSON number")]
    NotANumber,
    #[error("too large")]
    Overflow,
}

impl Usd {
    pub const ZERO: Self = Self(0);

    pub const fn from_units(units: i128) -> Self {
        Self(units)
    }

    pub const fn units(self) -> i128 {
        self.0
    }

    /// tollgate's pico-USD, exactly; `None` past ±1.7 × 10¹⁴ USD.
    pub fn from_cost(cost: Cost) -> Option<Self> {
        i128::try_from(cost.as_pico())
            .ok()?
            .checked_mul(PICO_TO_YOCTO)
            .map(Self)
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }

    /// Reads the text of a JSON number (`-0.5`, `12`, `1.25e-3`, `3E+2`). Digits below
    /// 10⁻²⁴ USD are rounded half to even: none of them can show on a bill.
    pub fn parse_json_number(text: &str) -> Result<Self, AmountError> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], parse_exponent(&rest[at + 1..])?),
            None => (rest, 0),
        };
        let (whole, fraction) = match mantissa.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (mantissa, ""),
        };
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero_ok = whole == "0" || !whole.starts_with('0');
        if !digits_only(whole)
            || !leading_zero_ok
            || (mantissa.contains('.') && !digits_only(fraction))
        {
            return Err(AmountError::NotANumber);
        }
        let digits: String = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        let fraction_len = i64::try_from(fraction.len()).map_err(|_| AmountError::Overflow)?;
        // value = digits × 10^(exponent − fraction_len); in units, × 10^PLACES more.
        let shift = exponent - fraction_len + i64::from(PLACES);
        let magnitude = scale(digits, shift)?;
        let magnitude = i128::try_from(magnitude).map_err(|_| AmountError::Overflow)?;
        Ok(Self(if negative { -magnitude } else { magnitude }))
    }

    /// Rounded half away from zero to `places` decimals, trailing zeros kept: what the
    /// table shows (`0.004050`). The exact figure is in `Display`.
    pub fn rounded(self, places: u32) -> String {
        let places = places.min(PLACES);
        let unit = 10i128.pow(PLACES - places);
        let magnitude = self.0.unsigned_abs();
        let unit = unit.unsigned_abs();
        let mut kept = magnitude / unit;
        if (magnitude % unit) * 2 >= unit {
            kept += 1;
        }
        let sign = if self.0 < 0 && kept > 0 { "-" } else { "" };
        if places == 0 {
            return format!("{sign}{kept}");
        }
        let base = 10u128.pow(places);
        let width = places as usize;
        format!("{sign}{}.{:0width$}", kept / base, kept % base)
    }
}

fn parse_exponent(text: &str) -> Result<i64, AmountError> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotANumber);
    }
    // Past ±10⁶ the value is either zero here or too large: no need to read further.
    let value: i64 = digits
        .get(..digits.len().min(7))
        .unwrap_or(digits)
        .parse()
        .map_err(|_| AmountError::NotANumber)?;
    Ok(if text.starts_with('-') { -value } else { value })
}

/// `digits × 10^shift` as an integer, rounding half to even when `shift` drops digits.
fn scale(digits: &str, shift: i64) -> Result<u128, AmountError> {
    if digits.is_empty() {
        return Ok(0);
    }
    if shift >= 0 {
        let shift = u32::try_from(shift).map_err(|_| AmountError::Overflow)?;
        let base: u128 = digits.parse().map_err(|_| AmountError::Overflow)?;
        return 10u128
            .checked_pow(shift)
            .and_then(|factor| base.checked_mul(factor))
            .ok_or(AmountError::Overflow);
    }
    let dropped = usize::try_from(-shift).unwrap_or(usize::MAX);
    if dropped > digits.len() {
        // Below half a unit: rounds to zero.
        return Ok(0);
    }
    let (kept, gone) = digits.split_at(digits.len() - dropped);
    let mut value: u128 = if kept.is_empty() {
        0
    } else {
        kept.parse().map_err(|_| AmountError::Overflow)?
    };
    let first = gone.as_bytes().first().copied().unwrap_or(b'0');
    let rest_nonzero = gone.bytes().skip(1).any(|b| b != b'0');
    let round_up = first > b'5' || (first == b'5' && (rest_nonzero || value % 2 == 1));
    if round_up {
        value = value.checked_add(1).ok_or(AmountError::Overflow)?;
    }
    Ok(value)
}

/// The exact amount, trailing zeros trimmed: `0.000195`, `-1.5`, `0`.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let unit = 10u128.pow(PLACES);
        let (whole, fraction) = (magnitude / unit, magnitude % unit);
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        let width = PLACES as usize;
        let digits = format!("{fraction:0width$}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl serde::Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> String {
        Usd::parse_json_number(text).unwrap().to_string()
    }

    #[test]
    fn json_numbers_are_read_exactly() {
        let cases = [
            ("0", "0"),
            ("0.06", "0.06"),
            ("0.8958740000000000", "0.895874"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1.2e-05", "0.000012"),
            ("1.2345678901234567e-05", "0.000012345678901234567"),
            ("3E+2", "300"),
            ("-2.5", "-2.5"),
            ("412.8", "412.8"),
            ("100000000000000", "100000000000000"),
            // Below 10⁻²⁴: half to even.
            ("1.5e-24", "0.000000000000000000000002"),
            ("2.5e-24", "0.000000000000000000000002"),
            ("2.51e-24", "0.000000000000000000000003"),
            ("4e-25", "0"),
            ("1e-400", "0"),
        ];
        for (text, exact) in cases {
            assert_eq!(usd(text), exact, "{text}");
        }
        // Never through an f64: 0.1 + 0.2 keeps every digit it was written with.
        assert_ne!(usd("0.30000000000000004"), usd("0.3"));
    }

    #[test]
    fn what_is_not_a_json_number_is_refused() {
        for text in [
            "", "-", ".5", "5.", "01", "1e", "1e+", "0x10", "NaN", "\"1\"", "1.2.3", " 1",
        ] {
            assert_eq!(
                Usd::parse_json_number(text),
                Err(AmountError::NotANumber),
                "{text:?}"
            );
        }
        assert_eq!(Usd::parse_json_number("1e300"), Err(AmountError::Overflow));
        assert_eq!(
            Usd::parse_json_number("1000000000000000"),
            Err(AmountError::Overflow),
            "past 1.7e14 USD"
        );
    }

    #[test]
    fn pico_costs_convert_exactly_and_round_only_for_display() {
        let cost = Usd::from_cost(Cost::from_pico(195_000_000)).unwrap();
        assert_eq!(cost.to_string(), "0.000195");
        assert_eq!(cost.rounded(6), "0.000195");
        assert_eq!(
            Usd::parse_json_number("0.0040445").unwrap().rounded(6),
            "0.004045"
        );
        assert_eq!(
            Usd::parse_json_number("-0.0000004").unwrap().rounded(6),
            "0.000000"
        );
        assert_eq!(
            Usd::parse_json_number("-1.25").unwrap().rounded(6),
            "-1.250000"
        );
        assert_eq!(Usd::from_cost(Cost::from_pico(u128::MAX)), None);
    }
}
