//! `tollgate teams` and `tollgate keys`: the key store from the command line. Values are
//! checked by the same rules as the admin API (`fields`), and refusals name the flag.
//! Each command returns its output as text for `main` to print.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::budget::Budget;
use super::fields::{self, FieldError};
use super::store::{self, KeyRecord, TeamRecord};
use super::{AuthError, KeyFields, TeamFields};
use crate::cli::{KeyCreateArgs, KeysCommand, PlanArgs, RecordFormat, TeamsCommand};
use crate::clock::format_ms;
use crate::ledger::Store;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A flag's value breaks its field's rule; `flag` is how the user wrote the field.
    #[error("invalid {flag}: {source}")]
    Invalid {
        flag: &'static str,
        source: FieldError,
    },
    #[error("invalid --team: no team `{team}` (`tollgate teams list` shows them)")]
    UnknownTeam { team: String },
    #[error("no key `{key}`: name a key by its id or prefix, as `tollgate keys list` shows")]
    UnknownKey { key: String },
    #[error(transparent)]
    Store(#[from] AuthError),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<FieldError> for CommandError {
    fn from(source: FieldError) -> Self {
        Self::Invalid {
            flag: source.field().flag(),
            source,
        }
    }
}

/// `tiers`: the tier names a team may be given (built-in and configured).
pub async fn teams(
    command: &TeamsCommand,
    store: &Store,
    tiers: &[String],
    now_ms: i64,
) -> Result<String, CommandError> {
    match command {
        TeamsCommand::Create(args) => {
            // The name is positional, so it has no flag to name.
            let name = fields::name(&args.name).map_err(|source| CommandError::Invalid {
                flag: "team name",
                source,
            })?;
            let (tier, budget) = plan(&args.plan, tiers)?;
            let team_fields = TeamFields {
                name: None,
                tier,
                budget,
            };
            let team = store::create_team(store, &name, &team_fields, now_ms).await?;
            match args.format {
                RecordFormat::Json => Ok(serde_json::to_string_pretty(&team)?),
                RecordFormat::Table => Ok(format!(
                    "created team {}\n\n{}",
                    team.name,
                    fields_table(&team_lines(&team))
                )),
            }
        }
        TeamsCommand::List(args) => {
            let teams = store::list_teams(store).await?;
            match args.format {
                RecordFormat::Json => list_json(&teams),
                RecordFormat::Table => Ok(teams_table(&teams)),
            }
        }
    }
}

/// `tiers`: the tier names a key may be given (built-in and configured).
pub async fn keys(
    command: &KeysCommand,
    store: &Store,
    tiers: &[String],
    now_ms: i64,
) -> Result<String, CommandError> {
    match command {
        KeysCommand::Create(args) => create_key(args, store, tiers, now_ms).await,
        KeysCommand::List(args) => {
            let team = match &args.team {
                Some(team) => Some(find_team(store, team).await?),
                None => None,
            };
            let keys = store::list_keys(store, team.as_ref().map(|t| t.id.as_str())).await?;
            match args.format {
                RecordFormat::Json => list_json(&keys),
                RecordFormat::Table => Ok(keys_table(&keys, now_ms)),
            }
        }
        KeysCommand::Revoke { key: wanted } => {
            let key = match store::revoke_key(store, wanted, now_ms).await {
                Err(AuthError::NotFound { what: "key", .. }) => {
                    return Err(CommandError::UnknownKey {
                        key: wanted.clone(),
                    });
                }
                other => other?,
            };
            let when = key.revoked_ms.map(format_ms).unwrap_or_default();
            // Revoking twice keeps the first time, which is how an earlier revoke shows.
            Ok(if key.revoked_ms == Some(now_ms) {
                format!("revoked {} ({}) at {when}", key.prefix, key.name)
            } else {
                format!(
                    "{} ({}) was already revoked at {when}",
                    key.prefix, key.name
                )
            })
        }
    }
}

async fn create_key(
    args: &KeyCreateArgs,
    store: &Store,
    tiers: &[String],
    now_ms: i64,
) -> Result<String, CommandError> {
    let (tier, budget) = plan(&args.plan, tiers)?;
    let models = (!args.allowed_models.is_empty()).then(|| args.allowed_models.clone());
    let key_fields = KeyFields {
        name: args.name.as_deref().map(fields::name).transpose()?,
        tier,
        rpm: args.rpm.map(Some),
        tpm: args.tpm.map(Some),
        rpd: args.rpd.map(Some),
        budget,
        allowed_models: fields::allowed_models(models.map(Some))?,
        expires_ms: fields::expiry(args.expires_at.as_deref().map(Some), now_ms)?,
    };
    // Resolved first so an unknown team is refused as a flag, like any other value.
    let team = find_team(store, &args.team).await?;
    let (key, secret) = store::create_key(store, &team.id, &key_fields, now_ms).await?;
    match args.format {
        RecordFormat::Json => {
            let mut json = serde_json::to_value(&key)?;
            if let Some(object) = json.as_object_mut() {
                object.insert("key".to_owned(), Value::String(secret.expose().to_owned()));
            }
            Ok(serde_json::to_string_pretty(&json)?)
        }
        // The secret alone on the first line, for `| head -1`; this is its only showing.
        RecordFormat::Table => Ok(format!(
            "{}\n\nThe key above is shown only this once: tollgate keeps just its hash.\n\n{}",
            secret.expose(),
            fields_table(&key_lines(&key, now_ms))
        )),
    }
}

/// `--tier`, `--budget-usd` and `--budget-period`, checked, as store fields.
type Plan = (Option<Option<String>>, Option<Option<Budget>>);

fn plan(args: &PlanArgs, tiers: &[String]) -> Result<Plan, CommandError> {
    let tier = fields::tier(args.tier.clone().map(Some), tiers)?;
    let budget = fields::budget(
        args.budget_usd.as_deref().map(Some),
        args.budget_period.as_deref().map(Some),
        None,
    )?;
    Ok((tier, budget))
}

async fn find_team(store: &Store, team: &str) -> Result<TeamRecord, CommandError> {
    store::find_team(store, team)
        .await?
        .ok_or_else(|| CommandError::UnknownTeam {
            team: team.to_owned(),
        })
}

fn list_json<T: Serialize>(records: &[T]) -> Result<String, CommandError> {
    Ok(serde_json::to_string_pretty(&json!({ "data": records }))?)
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

fn budget_text(budget: Option<&Budget>) -> String {
    or_dash(budget.map(|b| format!("{} USD {}", b.limit(), b.period.as_str())))
}

fn status(key: &KeyRecord, now_ms: i64) -> &'static str {
    if key.revoked_ms.is_some() {
        "revoked"
    } else if key.expires_ms.is_some_and(|at| at <= now_ms) {
        "expired"
    } else {
        "active"
    }
}

fn team_lines(team: &TeamRecord) -> Vec<(&'static str, String)> {
    vec![
        ("id", team.id.clone()),
        ("name", team.name.clone()),
        ("tier", or_dash(team.tier.clone())),
        ("budget", budget_text(team.budget.as_ref())),
        ("created", format_ms(team.created_ms)),
    ]
}

fn key_lines(key: &KeyRecord, now_ms: i64) -> Vec<(&'static str, String)> {
    let limit = |value: Option<u64>| or_dash(value.map(|v| v.to_string()));
    vec![
        ("id", key.id.clone()),
        ("prefix", key.prefix.clone()),
        ("name", key.name.clone()),
        ("team", format!("{} ({})", key.team, key.team_id)),
        ("tier", or_dash(key.tier.clone())),
        ("rpm", limit(key.rpm)),
        ("tpm", limit(key.tpm)),
        ("rpd", limit(key.rpd)),
        ("budget", budget_text(key.budget.as_ref())),
        (
            "allowed_models",
            or_dash(key.allowed_models.as_ref().map(|m| m.join(","))),
        ),
        ("expires", or_dash(key.expires_ms.map(format_ms))),
        ("status", status(key, now_ms).to_owned()),
        ("created", format_ms(key.created_ms)),
    ]
}

fn fields_table(lines: &[(&str, String)]) -> String {
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|(field, value)| vec![(*field).to_owned(), value.clone()])
        .collect();
    columns(&rows)
}

fn teams_table(teams: &[TeamRecord]) -> String {
    let mut rows = vec![
        ["name", "id", "tier", "budget", "created"]
            .map(str::to_owned)
            .to_vec(),
    ];
    rows.extend(teams.iter().map(|team| {
        vec![
            team.name.clone(),
            team.id.clone(),
            or_dash(team.tier.clone()),
            budget_text(team.budget.as_ref()),
            format_ms(team.created_ms),
        ]
    }));
    columns(&rows)
}

fn keys_table(keys: &[KeyRecord], now_ms: i64) -> String {
    let mut rows = vec![
        [
            "prefix",
            "name",
            "team",
            "tier",
            "rpm",
            "tpm",
            "rpd",
            "budget",
            "allowed_models",
            "expires",
            "status",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let limit = |value: Option<u64>| or_dash(value.map(|v| v.to_string()));
    rows.extend(keys.iter().map(|key| {
        vec![
            key.prefix.clone(),
            key.name.clone(),
            key.team.clone(),
            or_dash(key.tier.clone()),
            limit(key.rpm),
            limit(key.tpm),
            limit(key.rpd),
            budget_text(key.budget.as_ref()),
            or_dash(key.allowed_models.as_ref().map(|m| m.join(","))),
            or_dash(key.expires_ms.map(format_ms)),
            status(key, now_ms).to_owned(),
        ]
    }));
    columns(&rows)
}

/// Left-aligned columns two spaces apart. Widths count characters, since names may be
/// any printable text.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_characters_and_trim_the_end() {
        let rows = vec![
            vec!["a".to_owned(), "b".to_owned(), String::new()],
            vec!["équipe".to_owned(), "x".to_owned(), String::new()],
        ];
        assert_eq!(columns(&rows), "a       b\néquipe  x\n");
    }

    #[test]
    fn a_revoked_key_reads_revoked_even_once_expired() {
        let mut key = KeyRecord {
            id: "k".to_owned(),
            team_id: "t".to_owned(),
            team: "acme".to_owned(),
            name: "ci".to_owned(),
            prefix: "tg-12345678".to_owned(),
            hash: [0; 32],
            tier: None,
            rpm: None,
            tpm: None,
            rpd: None,
            budget: None,
            allowed_models: None,
            expires_ms: Some(10),
            revoked_ms: None,
            created_ms: 0,
            updated_ms: 0,
        };
        assert_eq!(status(&key, 5), "active");
        assert_eq!(status(&key, 10), "expired");
        key.revoked_ms = Some(1);
        assert_eq!(status(&key, 10), "revoked");
    }
}
