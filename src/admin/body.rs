//! Admin request bodies: parsed with errors that name the bad field, and the
//! "absent leaves it, null clears it" reading that updates need.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::budgets::{self, Budget, Period};
use crate::clock;
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
    let period = match period {
        Some(Some(text)) => Some(Period::parse(&text).ok_or_else(|| {
            bad(
                "budget_period",
                format!("`{text}` is not one of daily, weekly, monthly, total"),
            )
        })?),
        _ => None,
    };
    match usd {
        Some(None) => Ok(Some(None)),
        Some(Some(value)) => {
            let text = match &value {
                // serde_json prints a float by its shortest round-trip form (`0.1`), so
                // the decimal the client wrote is what gets parsed, never a binary float.
                Value::Number(number) => number.to_string(),
                Value::String(text) => text.clone(),
                _ => return Err(bad("budget_usd", "must be a number or a decimal string")),
            };
            let limit_micros = budgets::parse_usd(&text).map_err(|m| bad("budget_usd", m))?;
            Ok(Some(Some(Budget {
                limit_micros,
                period: period
                    .or(current.map(|b| b.period))
                    .unwrap_or(Period::Monthly),
            })))
        }
        None => match (period, current) {
            (Some(period), Some(current)) => Ok(Some(Some(Budget { period, ..current }))),
            (Some(_), None) => Err(bad("budget_period", "set budget_usd with it")),
            (None, _) => Ok(None),
        },
    }
}

/// A tier name, checked against the known tiers.
pub fn tier(
    value: Option<Option<String>>,
    tiers: &[String],
) -> Result<Option<Option<String>>, ApiError> {
    if let Some(Some(name)) = &value {
        if !tiers.iter().any(|tier| tier == name) {
            return Err(bad(
                "tier",
                format!("unknown tier `{name}`; known tiers: {}", tiers.join(", ")),
            ));
        }
    }
    Ok(value)
}

/// `expires_at` as an RFC 3339 timestamp or Unix seconds.
pub fn expiry(value: Option<Option<Value>>, now_ms: i64) -> Result<Option<Option<i64>>, ApiError> {
    match value {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(value)) => {
            let text = match value {
                Value::Number(number) => number.to_string(),
                Value::String(text) => text,
                _ => {
                    return Err(bad(
                        "expires_at",
                        "must be an RFC 3339 timestamp or Unix seconds",
                    ));
                }
            };
            clock::parse_time(&text, now_ms)
                .map(|ms| Some(Some(ms)))
                .map_err(|m| bad("expires_at", m))
        }
    }
}

/// A name: non-empty, at most 128 characters, no control characters.
pub fn name(param: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 128 || value.chars().any(char::is_control) {
        return Err(bad(param, "must be 1 to 128 printable characters"));
    }
    Ok(value.to_owned())
}
