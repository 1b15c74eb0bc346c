//! Money as integers. A [`Rate`] is micro-USD per 1M tokens, a [`Cost`] is pico-USD, so
//! `tokens × rate` is a cost in pico-USD with no division and no rounding anywhere: a
//! ledger summed over a year equals the sum of its rows to the last pico-dollar.

use std::fmt;
use std::iter::Sum;
use std::ops::Add;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Decimal places of a [`Rate`] written in USD per 1M tokens (micro-USD).
pub const RATE_DECIMALS: u32 = 6;
/// Decimal places of a [`Cost`] written in USD (pico-USD).
pub const COST_DECIMALS: u32 = 12;

/// Why a decimal string is not a valid price or cost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// The value is not a plain decimal number such as `0.15`.
    #[error("not a decimal number")]
    NotANumber,
    /// The value is below zero.
    #[error("negative amounts are not allowed")]
    Negative,
    /// The value is NaN or infinite.
    #[error("not a finite number")]
    NotFinite,
    /// The value has more decimal places than the unit can hold exactly.
    #[error("more than {max_places} decimal places")]
    TooPrecise { max_places: u32 },
    /// The value does not fit the integer unit.
    #[error("too large")]
    Overflow,
}

/// A price per 1M tokens in integer micro-USD: $0.15/1M is `150_000`.
///
/// Six decimal places of USD per 1M tokens cover every published OpenAI rate
/// ($0.005/1M is the finest so far) with room to spare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    pub const ZERO: Self = Self(0);

    pub const fn from_micros_per_million(micros: u64) -> Self {
        Self(micros)
    }

    pub const fn micros_per_million(self) -> u64 {
        self.0
    }

    /// Parses USD per 1M tokens written as a decimal (`"0.15"`), at most 6 places.
    pub fn from_usd_per_million(text: &str) -> Result<Self, DecimalError> {
        let micros = parse_scaled(text, RATE_DECIMALS)?;
        u64::try_from(micros)
            .map(Self)
            .map_err(|_| DecimalError::Overflow)
    }

    /// The cost of `tokens` at this rate. Exact: u64 × u64 always fits u128.
    pub const fn cost(self, tokens: u64) -> Cost {
        Cost(tokens as u128 * self.0 as u128)
    }

    /// Half this rate, rounded up to the micro-dollar. Batch prices are derived this way
    /// only when the catalog lists none; every published rate is even, so the rounding
    /// never triggers for them, and rounding up keeps a derived rate from undercharging.
    pub const fn half(self) -> Self {
        Self(self.0.div_ceil(2))
    }

    /// USD per 1M tokens, trailing zeros trimmed: `150_000` → `"0.15"`.
    pub fn to_decimal_string(self) -> String {
        format_scaled(u128::from(self.0), RATE_DECIMALS)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

impl FromStr for Rate {
    type Err = DecimalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_usd_per_million(text)
    }
}

// A string keeps the catalog free of floats when written back out (LiteLLM import).
impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal_string())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RateVisitor)
    }
}

struct RateVisitor;

impl RateVisitor {
    fn parsed<E: de::Error>(text: &str) -> Result<Rate, E> {
        // TOML's float keywords arrive as their text (see `exact_toml`).
        let keyword = text.trim_start_matches(['+', '-']);
        let parsed = if keyword == "nan" || keyword == "inf" {
            Err(DecimalError::NotFinite)
        } else {
            Rate::from_usd_per_million(text)
        };
        parsed.map_err(|reason| E::custom(format_args!("invalid price `{text}`: {reason}")))
    }
}

impl Visitor<'_> for RateVisitor {
    type Value = Rate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a price in USD per 1M tokens, such as \"0.15\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Rate, E> {
        Self::parsed(text)
    }

    fn visit_u64<E: de::Error>(self, usd: u64) -> Result<Rate, E> {
        usd.checked_mul(1_000_000)
            .map(Rate)
            .ok_or_else(|| E::custom(format_args!("invalid price `{usd}`: too large")))
    }

    fn visit_i64<E: de::Error>(self, usd: i64) -> Result<Rate, E> {
        match u64::try_from(usd) {
            Ok(usd) => self.visit_u64(usd),
            Err(_) => Err(E::custom(format_args!(
                "invalid price `{usd}`: {}",
                DecimalError::Negative
            ))),
        }
    }
}

/// A TOML deserializer that hands every float to serde as the text written in the
/// file, so `input = 0.15` is read as the decimal "0.15" and never passes through a
/// binary float. For tollgate's config and price files, whose only fractional fields
/// are money (a float anywhere else is refused as a string, naming its field).
pub fn exact_toml(text: &str) -> Result<toml::Deserializer<'_>, toml::de::Error> {
    let mut root = toml::de::DeTable::parse(text)?;
    for (_, value) in root.get_mut().iter_mut() {
        floats_as_text(value.get_mut());
    }
    Ok(toml::Deserializer::from(root))
}

fn floats_as_text(value: &mut toml::de::DeValue<'_>) {
    use toml::de::DeValue;
    match value {
        DeValue::Float(float) => {
            let text = float.as_str().to_owned();
            *value = DeValue::String(text.into());
        }
        DeValue::Array(array) => {
            for item in array.iter_mut() {
                floats_as_text(item.get_mut());
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter_mut() {
                floats_as_text(item.get_mut());
            }
        }
        DeValue::String(_) | DeValue::Integer(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

/// An amount of money in integer pico-USD (10⁻¹² USD): exactly `tokens × Rate`.
///
/// u128 holds 3.4 × 10²⁶ USD; nothing metered gets near it, yet every addition is still
/// checked: `a + b` is `Option<Cost>` and so is a sum of costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(u128);

impl Cost {
    pub const ZERO: Self = Self(0);

    pub const fn from_pico(pico: u128) -> Self {
        Self(pico)
    }

    pub const fn as_pico(self) -> u128 {
        self.0
    }

    pub const fn checked_add(self, other: Self) -> Option<Self> {
        match self.0.checked_add(other.0) {
            Some(sum) => Some(Self(sum)),
            None => None,
        }
    }

    /// Exact USD, trailing zeros trimmed: `195_000_000` pico → `"0.000195"`, zero → `"0"`.
    pub fn to_decimal_string(self) -> String {
        format_scaled(self.0, COST_DECIMALS)
    }

    /// Parses what [`Cost::to_decimal_string`] writes (up to 12 decimal places of USD).
    pub fn from_decimal_str(text: &str) -> Result<Self, DecimalError> {
        parse_scaled(text, COST_DECIMALS).map(Self)
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

// The exact decimal string: what reports and the spill file carry, never a float.
impl Serialize for Cost {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal_string())
    }
}

impl<'de> Deserialize<'de> for Cost {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_decimal_str(&text)
            .map_err(|reason| de::Error::custom(format_args!("invalid cost `{text}`: {reason}")))
    }
}

impl FromStr for Cost {
    type Err = DecimalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_decimal_str(text)
    }
}

impl Add for Cost {
    /// `None` on overflow, so a total can never wrap silently.
    type Output = Option<Cost>;

    fn add(self, other: Self) -> Option<Cost> {
        self.checked_add(other)
    }
}

/// `costs.sum::<Option<Cost>>()`: `None` if the total overflows.
impl Sum<Cost> for Option<Cost> {
    fn sum<I: Iterator<Item = Cost>>(mut iter: I) -> Self {
        iter.try_fold(Cost::ZERO, Cost::checked_add)
    }
}

impl<'a> Sum<&'a Cost> for Option<Cost> {
    fn sum<I: Iterator<Item = &'a Cost>>(iter: I) -> Self {
        iter.copied().sum()
    }
}

// === decimal text <-> scaled integers ===

/// Formats `value / 10^scale` as a decimal with trailing zeros (and a bare point) trimmed.
///
/// Every priced answer's cost header goes through here. A value that fits 64 bits (any
/// cost under $18M) is written digit by digit in 64-bit arithmetic: `u128`'s `Display`
/// divides in software, and the formatter's padding machinery costs more than the
/// digits.
fn format_scaled(value: u128, scale: u32) -> String {
    let Ok(small) = u64::try_from(value) else {
        return format_scaled_wide(value, scale);
    };
    let mut buf = [b'0'; 20];
    let mut start = buf.len();
    let mut rest = small;
    loop {
        start -= 1;
        buf[start] = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &buf[start..];
    let scale = scale as usize;
    let (whole, frac): (&[u8], &[u8]) = match digits.len().checked_sub(scale) {
        Some(split) if split > 0 => (&digits[..split], &digits[split..]),
        _ => (b"0", digits),
    };
    // Leading zeros of the fraction, when the value has fewer digits than the scale.
    let zeros = scale.saturating_sub(frac.len());
    let frac = match frac.iter().rposition(|&digit| digit != b'0') {
        Some(last) => &frac[..=last],
        None => &[],
    };
    let mut text = String::with_capacity(whole.len() + 1 + zeros + frac.len());
    for &digit in whole {
        text.push(char::from(digit));
    }
    if !frac.is_empty() {
        text.push('.');
        text.extend(std::iter::repeat_n('0', zeros));
        for &digit in frac {
            text.push(char::from(digit));
        }
    }
    text
}

/// `format_scaled` for values past 64 bits, with the formatter.
fn format_scaled_wide(value: u128, scale: u32) -> String {
    let unit = 10u128.pow(scale);
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a plain decimal (`12`, `0.15`) into `value × 10^scale`, refusing signs,
/// exponents, whitespace and more than `scale` decimal places rather than rounding.
pub(crate) fn parse_scaled(text: &str, scale: u32) -> Result<u128, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    if let Some(rest) = text.strip_prefix('-') {
        return match split_digits(rest) {
            Some(_) => Err(DecimalError::Negative),
            None => Err(DecimalError::NotANumber),
        };
    }
    let (whole, frac) = split_digits(text).ok_or(DecimalError::NotANumber)?;
    let places =
        u32::try_from(frac.len()).map_err(|_| DecimalError::TooPrecise { max_places: scale })?;
    if places > scale {
        return Err(DecimalError::TooPrecise { max_places: scale });
    }
    let whole = whole.parse::<u128>().map_err(|_| DecimalError::Overflow)?;
    let frac = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().map_err(|_| DecimalError::Overflow)?
    };
    whole
        .checked_mul(10u128.pow(scale))
        .and_then(|whole| whole.checked_add(frac * 10u128.pow(scale - places)))
        .ok_or(DecimalError::Overflow)
}

/// Splits `123.45` into `("123", "45")`; `None` unless both sides are ASCII digits and
/// the whole part is present (a fraction after a point must be present too).
fn split_digits(text: &str) -> Option<(&str, &str)> {
    let (whole, frac) = match text.split_once('.') {
        Some((whole, frac)) if !frac.is_empty() => (whole, frac),
        Some(_) => return None,
        None => (text, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (!whole.is_empty() && all_digits(whole) && all_digits(frac)).then_some((whole, frac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_decimal_writer_agrees_with_the_formatter() {
        let mut values: Vec<u128> = vec![0, 1, 9, 10, 11, 100, 101, 999_999, 1_000_000, 1_000_001];
        values.extend((0..=20).map(|power| 10u128.pow(power)));
        values.extend((1..=20).map(|power| 10u128.pow(power) - 1));
        values.extend([
            450_000_000,
            123_456_789_012,
            1_000_000_000_000,
            15_000_000_000_001,
        ]);
        values.extend([u128::from(u64::MAX), u128::from(u64::MAX) + 1, u128::MAX]);
        // A deterministic spread of the rest of the range.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(u128::from(x >> (x % 64)));
        }
        for scale in [0, 1, 6, 12, 19, 20, 25] {
            for &value in &values {
                assert_eq!(
                    format_scaled(value, scale),
                    format_scaled_wide(value, scale),
                    "{value} at scale {scale}"
                );
            }
        }
    }

    #[test]
    fn rates_parse_exactly() {
        let cases = [
            ("0.15", 150_000),
            ("0.025", 25_000),
            ("2.50", 2_500_000),
            ("2.5", 2_500_000),
            ("10", 10_000_000),
            ("0.000001", 1),
            ("0", 0),
            ("600.00", 600_000_000),
            ("0.005", 5_000),
        ];
        for (text, micros) in cases {
            assert_eq!(
                Rate::from_usd_per_million(text),
                Ok(Rate::from_micros_per_million(micros)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_rates_are_refused() {
        let cases = [
            ("", DecimalError::Empty),
            ("-0.15", DecimalError::Negative),
            ("-1", DecimalError::Negative),
            ("abc", DecimalError::NotANumber),
            ("-abc", DecimalError::NotANumber),
            ("0.15 ", DecimalError::NotANumber),
            ("+0.15", DecimalError::NotANumber),
            ("1e-7", DecimalError::NotANumber),
            (".5", DecimalError::NotANumber),
            ("5.", DecimalError::NotANumber),
            ("1.2.3", DecimalError::NotANumber),
            ("NaN", DecimalError::NotANumber),
            ("0.0000001", DecimalError::TooPrecise { max_places: 6 }),
            ("99999999999999999999", DecimalError::Overflow),
        ];
        for (text, error) in cases {
            assert_eq!(Rate::from_usd_per_million(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn rate_display_trims_zeros() {
        let cases = [
            (150_000, "0.15"),
            (2_500_000, "2.5"),
            (10_000_000, "10"),
            (0, "0"),
            (1, "0.000001"),
        ];
        for (micros, text) in cases {
            assert_eq!(Rate::from_micros_per_million(micros).to_string(), text);
        }
    }

    #[test]
    fn cost_decimal_string_round_trips() {
        let cases = [
            (0, "0"),
            (195_000_000, "0.000195"),
            (1, "0.000000000001"),
            (3_000_000_000_000, "3"),
            (30_000_000_000, "0.03"),
            (1_234_567_890_123_456, "1234.567890123456"),
            (u128::MAX, "340282366920938463463374607.431768211455"),
        ];
        for (pico, text) in cases {
            let cost = Cost::from_pico(pico);
            assert_eq!(cost.to_decimal_string(), text);
            assert_eq!(cost.to_string(), text);
            assert_eq!(text.parse::<Cost>(), Ok(cost), "{text}");
        }
        // Zeros the formatter would trim still parse to the same amount.
        assert_eq!(
            Cost::from_decimal_str("0.030"),
            Ok(Cost::from_pico(30_000_000_000))
        );
        assert_eq!(
            Cost::from_decimal_str("0.0000000000001"),
            Err(DecimalError::TooPrecise { max_places: 12 })
        );
        assert_eq!(Cost::from_decimal_str("-0.01"), Err(DecimalError::Negative));
    }

    #[test]
    fn cost_addition_is_checked() {
        let a = Cost::from_pico(5);
        let b = Cost::from_pico(7);
        assert_eq!(a + b, Some(Cost::from_pico(12)));
        assert_eq!(Cost::from_pico(u128::MAX) + Cost::from_pico(1), None);
        let total: Option<Cost> = [a, b, a].into_iter().sum();
        assert_eq!(total, Some(Cost::from_pico(17)));
        let overflow: Option<Cost> = [Cost::from_pico(u128::MAX), a].iter().sum();
        assert_eq!(overflow, None);
        let empty: Option<Cost> = std::iter::empty::<Cost>().sum();
        assert_eq!(empty, Some(Cost::ZERO));
    }

    #[test]
    fn rate_times_tokens_is_pico_usd() {
        // 1,300 tokens at $0.15/1M = $0.000195.
        let cost = Rate::from_micros_per_million(150_000).cost(1_300);
        assert_eq!(cost.as_pico(), 195_000_000);
        assert_eq!(cost.to_decimal_string(), "0.000195");
        // The largest possible product still fits.
        let max = Rate::from_micros_per_million(u64::MAX).cost(u64::MAX);
        assert_eq!(max.as_pico(), u128::from(u64::MAX) * u128::from(u64::MAX));
    }

    #[test]
    fn half_rounds_up() {
        assert_eq!(
            Rate::from_micros_per_million(150_000)
                .half()
                .micros_per_million(),
            75_000
        );
        assert_eq!(
            Rate::from_micros_per_million(5).half().micros_per_million(),
            3
        );
    }
}

#[cfg(test)]
mod toml_tests {
    use serde::Deserialize;

    use super::{Rate, exact_toml};

    #[derive(Deserialize)]
    struct Prices {
        rates: Vec<Rate>,
        nested: Nested,
    }

    #[derive(Deserialize)]
    struct Nested {
        rate: Rate,
    }

    /// Bare TOML floats reach the price parser as the text written, in arrays and
    /// nested tables too: no binary rounding on the way (2.675 has no exact binary form).
    #[test]
    fn bare_floats_are_read_as_written() {
        let text = "rates = [0.15, 2.675, 3]\n[nested]\nrate = 0.000001\n";
        let prices = Prices::deserialize(exact_toml(text).unwrap()).unwrap();
        let micros: Vec<u64> = prices
            .rates
            .iter()
            .map(|r| r.micros_per_million())
            .collect();
        assert_eq!(micros, [150_000, 2_675_000, 3_000_000]);
        assert_eq!(prices.nested.rate.micros_per_million(), 1);
        // An exponent is not a plain decimal: refused, naming the text, not rounded.
        let error =
            Prices::deserialize(exact_toml("rates = [1e-6]\n[nested]\nrate = 1\n").unwrap())
                .err()
                .unwrap();
        assert!(
            error.to_string().contains("invalid price `1e-6`"),
            "{error}"
        );
    }
}
