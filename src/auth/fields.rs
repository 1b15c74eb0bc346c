//! The rules for the settable fields of keys and teams, shared by the admin API and the
//! CLI so both refuse the same values in the same words. Each caller names the field
//! its own way: `budget_usd` in a JSON body, `--budget-usd` on the command line.

use super::budget::{self, Budget};
use crate::clock::{self, Period};
use crate::error::ApiError;

/// A settable field of a key or team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Tier,
    BudgetUsd,
    BudgetPeriod,
    AllowedModels,
    ExpiresAt,
}

impl Field {
    /// The field's name in admin API bodies.
    pub fn param(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Tier => "tier",
            Self::BudgetUsd => "budget_usd",
            Self::BudgetPeriod => "budget_period",
            Self::AllowedModels => "allowed_models",
            Self::ExpiresAt => "expires_at",
        }
    }

    /// The command-line flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Name => "--name",
            Self::Tier => "--tier",
            Self::BudgetUsd => "--budget-usd",
            Self::BudgetPeriod => "--budget-period",
            Self::AllowedModels => "--allowed-models",
            Self::ExpiresAt => "--expires-at",
        }
    }
}

/// A value a field does not accept. The text never names the field: the caller does.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("must be 1 to 128 printable characters")]
    Name,
    #[error("unknown tier `{tier}`; known tiers: {}", known.join(", "))]
    UnknownTier { tier: String, known: Vec<String> },
    /// The amount, as `budget::parse_usd` explains it (sign, exponent, too many places).
    #[error("{reason}")]
    BudgetUsd { reason: String },
    #[error("`{period}` is not one of daily, weekly, monthly, total")]
    BudgetPeriod { period: String },
    #[error("there is no budget amount to apply it to; set one with it")]
    PeriodWithoutAmount,
    #[error("`{pattern}` is not a model name or glob")]
    ModelPattern { pattern: String },
    /// The time, as `clock::parse_deadline` explains it.
    #[error("{reason}")]
    ExpiresAt { reason: String },
}

impl FieldError {
    pub fn field(&self) -> Field {
        match self {
            Self::Name => Field::Name,
            Self::UnknownTier { .. } => Field::Tier,
            Self::BudgetUsd { .. } => Field::BudgetUsd,
            Self::BudgetPeriod { .. } | Self::PeriodWithoutAmount => Field::BudgetPeriod,
            Self::ModelPattern { .. } => Field::AllowedModels,
            Self::ExpiresAt { .. } => Field::ExpiresAt,
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        ApiError::BadParam {
            param: error.field().param().to_owned(),
            message: error.to_string(),
        }
    }
}

/// A name: non-empty, at most 128 characters, no control characters; trimmed.
pub fn name(value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 128 || value.chars().any(char::is_control) {
        return Err(FieldError::Name);
    }
    Ok(value.to_owned())
}

/// A tier name, checked against the known tiers.
pub fn tier<S: AsRef<str>>(
    value: Option<Option<String>>,
    known: &[S],
) -> Result<Option<Option<String>>, FieldError> {
    if let Some(Some(name)) = &value {
        if !known.iter().any(|tier| tier.as_ref() == name) {
            return Err(FieldError::UnknownTier {
                tier: name.clone(),
                known: known.iter().map(|t| t.as_ref().to_owned()).collect(),
            });
        }
    }
    Ok(value)
}

/// A budget from a USD amount (a decimal, parsed exactly) and a period (default: the
/// current budget's, else monthly). `Some(None)` for the amount clears the budget; a
/// period alone re-periods the current budget.
pub fn budget(
    usd: Option<Option<&str>>,
    period: Option<Option<&str>>,
    current: Option<Budget>,
) -> Result<Option<Option<Budget>>, FieldError> {
    let period = match period {
        Some(Some(text)) => Some(Period::parse(text).ok_or_else(|| FieldError::BudgetPeriod {
            period: text.to_owned(),
        })?),
        _ => None,
    };
    match usd {
        Some(None) => Ok(Some(None)),
        Some(Some(text)) => {
            let limit_micros =
                budget::parse_usd(text).map_err(|reason| FieldError::BudgetUsd { reason })?;
            Ok(Some(Some(Budget {
                limit_micros,
                period: period
                    .or(current.map(|b| b.period))
                    .unwrap_or(Period::Monthly),
            })))
        }
        None => match (period, current) {
            (Some(period), Some(current)) => Ok(Some(Some(Budget { period, ..current }))),
            (Some(_), None) => Err(FieldError::PeriodWithoutAmount),
            (None, _) => Ok(None),
        },
    }
}

/// Model names or globs a key may call; an empty or unparsable pattern is refused.
pub fn allowed_models(
    value: Option<Option<Vec<String>>>,
) -> Result<Option<Option<Vec<String>>>, FieldError> {
    if let Some(Some(models)) = &value {
        if let Some(bad) = models
            .iter()
            .find(|m| m.is_empty() || glob::Pattern::new(m).is_err())
        {
            return Err(FieldError::ModelPattern {
                pattern: bad.clone(),
            });
        }
    }
    Ok(value)
}

/// An expiry: a span ahead of `now_ms` (`30d`), a UTC day, an RFC 3339 timestamp or
/// Unix seconds. `Some(None)` clears it.
pub fn expiry(value: Option<Option<&str>>, now_ms: i64) -> Result<Option<Option<i64>>, FieldError> {
    match value {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(text)) => clock::parse_deadline(text, now_ms)
            .map(|ms| Some(Some(ms)))
            .map_err(|reason| FieldError::ExpiresAt { reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_field_for_both_callers() {
        let known = ["tier-1"];
        let cases: Vec<(FieldError, &str, &str)> = vec![
            (name(" \t").unwrap_err(), "name", "--name"),
            (
                tier(Some(Some("gold".to_owned())), &known).unwrap_err(),
                "tier",
                "--tier",
            ),
            (
                budget(Some(Some("1.0000001")), None, None).unwrap_err(),
                "budget_usd",
                "--budget-usd",
            ),
            (
                budget(Some(Some("5")), Some(Some("yearly")), None).unwrap_err(),
                "budget_period",
                "--budget-period",
            ),
            (
                budget(None, Some(Some("daily")), None).unwrap_err(),
                "budget_period",
                "--budget-period",
            ),
            (
                allowed_models(Some(Some(vec!["[".to_owned()]))).unwrap_err(),
                "allowed_models",
                "--allowed-models",
            ),
            (
                expiry(Some(Some("soon")), 0).unwrap_err(),
                "expires_at",
                "--expires-at",
            ),
        ];
        for (error, param, flag) in cases {
            assert_eq!((error.field().param(), error.field().flag()), (param, flag));
        }
    }

    #[test]
    fn budgets_parse_exactly_and_keep_the_current_period() {
        let weekly = Budget {
            limit_micros: 1,
            period: Period::Weekly,
        };
        assert_eq!(
            budget(Some(Some("12.5")), None, Some(weekly)).unwrap(),
            Some(Some(Budget {
                limit_micros: 12_500_000,
                period: Period::Weekly
            }))
        );
        assert_eq!(
            budget(Some(Some("100")), None, None).unwrap(),
            Some(Some(Budget {
                limit_micros: 100_000_000,
                period: Period::Monthly
            }))
        );
        assert_eq!(budget(Some(None), None, Some(weekly)).unwrap(), Some(None));
        assert_eq!(budget(None, None, Some(weekly)).unwrap(), None);
    }

    #[test]
    fn an_expiry_span_is_ahead_of_now() {
        assert_eq!(
            expiry(Some(Some("1d")), 1_000).unwrap(),
            Some(Some(86_401_000))
        );
        assert_eq!(expiry(Some(None), 1_000).unwrap(), Some(None));
    }
}
