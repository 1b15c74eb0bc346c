//! Admin request bodies: parsed with errors that name the bad field, and the
//! "absent leaves it, null clears it" reading that updates need.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::auth::fields::{self, Field};
use crate::budgets::Budget;
use crate::error::ApiError;

/// Parses a JSON body; a wrong type names its field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson {
            detail: "the body is empty".to_owned(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let param = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() || param == "." {
            ApiError::InvalidJson {
                detail: inner.to_string(),
            }
        } else {
            ApiError::BadParam {
                param,
                message: inner.to_string(),
            }
        }
    })
}

/// `Some(None)` for an explicit null, `Some(Some(v))` for a value; absent stays `None`
/// through `#[serde(default)]`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadParam {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// A budget from `budget_usd` (a JSON number or decimal string) and `budget_period`
/// (default monthly). `Some(None)` clears it.
pub fn budget(
    usd: Option<Option<Value>>,
    period: Option<Option<String>>,
    current: Option<Budget>,
) -> Result<Option<Option<Budget>>, ApiError> {
    let usd = match usd {
        // serde_json prints a float by its shortest round-trip form (`0.1`), so the
        // decimal the client wrote is what gets parsed, never a binary float.
        Some(Some(value)) => Some(Some(text(
            value,
            Field::BudgetUsd,
            "a number or a decimal string",
        )?)),
        Some(None) => Some(None),
        None => None,
    };
    Ok(fields::budget(
        usd.as_ref().map(Option::as_deref),
        period.as_ref().map(Option::as_deref),
        current,
    )?)
}

/// A tier name, checked against the known tiers.
pub fn tier(
    value: Option<Option<String>>,
    tiers: &[String],
) -> Result<Option<Option<String>>, ApiError> {
    Ok(fields::tier(value, tiers)?)
}

/// `expires_at` as a time `clock::parse_deadline` reads: RFC 3339, Unix seconds, a day,
/// or a span ahead of now.
pub fn expiry(value: Option<Option<Value>>, now_ms: i64) -> Result<Option<Option<i64>>, ApiError> {
    let value = match value {
        Some(Some(value)) => Some(Some(text(
            value,
            Field::ExpiresAt,
            "an RFC 3339 timestamp or Unix seconds",
        )?)),
        Some(None) => Some(None),
        None => None,
    };
    Ok(fields::expiry(
        value.as_ref().map(Option::as_deref),
        now_ms,
    )?)
}

/// A JSON number or string as the text the client wrote.
fn text(value: Value, field: Field, expected: &str) -> Result<String, ApiError> {
    match value {
        Value::Number(number) => Ok(number.to_string()),
        Value::String(text) => Ok(text),
        _ => Err(bad(field.param(), format!("must be {expected}"))),
    }
}

/// A name: non-empty, at most 128 characters, no control characters.
pub fn name(param: &str, value: &str) -> Result<String, ApiError> {
    fields::name(value).map_err(|error| bad(param, error.to_string()))
}
