//! Teams and keys in the database, on either backend. Every change bumps `auth_epoch`
//! in its own transaction, which is how other replicas learn to reload their caches.

use serde::Serialize;
use sqlx::Row;

use super::AuthError;
use super::budget::Budget;
use super::secret::{self, NewKey};
use crate::clock::Period;
use crate::config::Secret;
use crate::ledger::Store;

/// Runs the same statements on whichever pool the store holds; `$pool` names it.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite(ledger) => {
                let $pool = ledger.pool();
                $body
            }
            Store::Postgres(ledger) => {
                let $pool = ledger.pool();
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// Bumps the change counter inside the caller's transaction.
macro_rules! bump_epoch {
    ($tx:expr) => {
        sqlx::query("UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1")
            .execute(&mut *$tx)
            .await?
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeamRecord {
    pub id: String,
    pub name: String,
    pub tier: Option<String>,
    #[serde(flatten)]
    pub budget: Option<Budget>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub team_id: String,
    pub team: String,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub hash: [u8; 32],
    pub tier: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    #[serde(flatten)]
    pub budget: Option<Budget>,
    pub allowed_models: Option<Vec<String>>,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A team's settable fields; on update, `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TeamFields {
    pub name: Option<String>,
    pub tier: Option<Option<String>>,
    pub budget: Option<Option<Budget>>,
}

/// A key's settable fields; on update, `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyFields {
    pub name: Option<String>,
    pub tier: Option<Option<String>>,
    pub rpm: Option<Option<u64>>,
    pub tpm: Option<Option<u64>>,
    pub rpd: Option<Option<u64>>,
    pub budget: Option<Option<Budget>>,
    pub allowed_models: Option<Option<Vec<String>>>,
    pub expires_ms: Option<Option<i64>>,
}

const TEAM_COLUMNS: &str = "id, name, tier, budget_micros, budget_period, created_ms, updated_ms";
const KEY_COLUMNS: &str = "k.id, k.team_id, t.name AS team, k.name, k.prefix, k.secret_hash, \
    k.tier, k.rpm, k.tpm, k.rpd, k.budget_micros, k.budget_period, k.allowed_models, \
    k.expires_ms, k.revoked_ms, k.created_ms, k.updated_ms";

fn read_team<R>(row: &R) -> Result<TeamRecord, sqlx::Error>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TeamRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tier: row.try_get("tier")?,
        budget: budget(row.try_get("budget_micros")?, row.try_get("budget_period")?),
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn read_key<R>(row: &R) -> Result<KeyRecord, sqlx::Error>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let hash: String = row.try_get("secret_hash")?;
    let allowed: Option<String> = row.try_get("allowed_models")?;
    let count = |column: &str| -> Result<Option<u64>, sqlx::Error> {
        Ok(row
            .try_get::<Option<i64>, _>(column)?
            .map(|v| u64::try_from(v).unwrap_or(0)))
    };
    Ok(KeyRecord {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        hash: hex::decode(&hash)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .unwrap_or_default(),
        tier: row.try_get("tier")?,
        rpm: count("rpm")?,
        tpm: count("tpm")?,
        rpd: count("rpd")?,
        budget: budget(row.try_get("budget_micros")?, row.try_get("budget_period")?),
        allowed_models: allowed.and_then(|text| serde_json::from_str(&text).ok()),
        expires_ms: row.try_get("expires_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn budget(micros: Option<i64>, period: Option<String>) -> Option<Budget> {
    Some(Budget {
        limit_micros: u64::try_from(micros?).ok()?,
        period: period
            .as_deref()
            .and_then(Period::parse)
            .unwrap_or(Period::Monthly),
    })
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Maps a unique-constraint failure to a 409-worthy error naming what clashed.
fn write_error<'a>(
    what: &'static str,
    name: &'a str,
) -> impl FnOnce(sqlx::Error) -> AuthError + 'a {
    move |error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => AuthError::Duplicate {
            what,
            name: name.to_owned(),
        },
        _ => AuthError::Store(error),
    }
}

pub async fn create_team(
    store: &Store,
    name: &str,
    fields: &TeamFields,
    now_ms: i64,
) -> Result<TeamRecord, AuthError> {
    let id = uuid::Uuid::now_v7().to_string();
    let tier = fields.tier.clone().flatten();
    let budget = fields.budget.flatten();
    let sql = store.sql(
        "INSERT INTO teams (id, name, tier, budget_micros, budget_period, created_ms, updated_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    );
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&id)
            .bind(name)
            .bind(&tier)
            .bind(budget.as_ref().map(|b| to_i64(b.limit_micros)))
            .bind(budget.as_ref().map(|b| b.period.as_str()))
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(write_error("team", name))?;
        bump_epoch!(tx);
        tx.commit().await?;
    });
    Ok(TeamRecord {
        id,
        name: name.to_owned(),
        tier,
        budget,
        created_ms: now_ms,
        updated_ms: now_ms,
    })
}

/// Every team, by name.
pub async fn list_teams(store: &Store) -> Result<Vec<TeamRecord>, AuthError> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY name");
    on_pool!(store, pool => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
        Ok(rows.iter().map(read_team).collect::<Result<_, _>>()?)
    })
}

/// A team by id or by name.
pub async fn find_team(store: &Store, id_or_name: &str) -> Result<Option<TeamRecord>, AuthError> {
    let sql = store.sql(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1"
    ));
    on_pool!(store, pool => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_or_name)
            .bind(id_or_name)
            .bind(id_or_name)
            .fetch_optional(pool)
            .await?;
        Ok(row.as_ref().map(read_team).transpose()?)
    })
}

pub async fn update_team(
    store: &Store,
    id_or_name: &str,
    fields: &TeamFields,
    now_ms: i64,
) -> Result<TeamRecord, AuthError> {
    let mut team = find_team(store, id_or_name)
        .await?
        .ok_or_else(|| AuthError::NotFound {
            what: "team",
            id: id_or_name.to_owned(),
        })?;
    if let Some(name) = &fields.name {
        team.name.clone_from(name);
    }
    if let Some(tier) = &fields.tier {
        team.tier.clone_from(tier);
    }
    if let Some(budget) = &fields.budget {
        team.budget.clone_from(budget);
    }
    team.updated_ms = now_ms;
    let sql = store.sql(
        "UPDATE teams SET name = ?, tier = ?, budget_micros = ?, budget_period = ?, \
         updated_ms = ? WHERE id = ?",
    );
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&team.name)
            .bind(&team.tier)
            .bind(team.budget.as_ref().map(|b| to_i64(b.limit_micros)))
            .bind(team.budget.as_ref().map(|b| b.period.as_str()))
            .bind(now_ms)
            .bind(&team.id)
            .execute(&mut *tx)
            .await
            .map_err(write_error("team", &team.name))?;
        bump_epoch!(tx);
        tx.commit().await?;
    });
    Ok(team)
}

/// Creates a key in `team` (id or name) and returns it with its secret, the only time
/// the secret exists outside the caller's hands.
pub async fn create_key(
    store: &Store,
    team: &str,
    fields: &KeyFields,
    now_ms: i64,
) -> Result<(KeyRecord, Secret), AuthError> {
    let team = find_team(store, team)
        .await?
        .ok_or_else(|| AuthError::NotFound {
            what: "team",
            id: team.to_owned(),
        })?;
    let NewKey {
        secret,
        hash,
        prefix,
    } = secret::generate().map_err(|_| AuthError::Random)?;
    let record = KeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        team_id: team.id,
        team: team.name,
        name: fields.name.clone().unwrap_or_else(|| prefix.clone()),
        prefix,
        hash,
        tier: fields.tier.clone().flatten(),
        rpm: fields.rpm.flatten(),
        tpm: fields.tpm.flatten(),
        rpd: fields.rpd.flatten(),
        budget: fields.budget.flatten(),
        allowed_models: fields.allowed_models.clone().flatten(),
        expires_ms: fields.expires_ms.flatten(),
        revoked_ms: None,
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    let sql = store.sql(
        "INSERT INTO api_keys (id, team_id, name, prefix, secret_hash, tier, rpm, tpm, rpd, \
         budget_micros, budget_period, allowed_models, expires_ms, revoked_ms, created_ms, \
         updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        bind_key(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&record.id), &record)
            .bind(record.created_ms)
            .bind(record.updated_ms)
            .execute(&mut *tx)
            .await
            .map_err(write_error("key", &record.name))?;
        bump_epoch!(tx);
        tx.commit().await?;
    });
    Ok((record, secret))
}

/// Binds a key's columns from `team_id` through `revoked_ms`, in table order.
fn bind_key<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    key: &KeyRecord,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'static str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let limit = |value: Option<u64>| value.map(to_i64);
    query
        .bind(key.team_id.clone())
        .bind(key.name.clone())
        .bind(key.prefix.clone())
        .bind(hex::encode(key.hash))
        .bind(key.tier.clone())
        .bind(limit(key.rpm))
        .bind(limit(key.tpm))
        .bind(limit(key.rpd))
        .bind(key.budget.as_ref().map(|b| to_i64(b.limit_micros)))
        .bind(key.budget.as_ref().map(|b| b.period.as_str()))
        .bind(
            key.allowed_models
                .as_ref()
                .and_then(|models| serde_json::to_string(models).ok()),
        )
        .bind(key.expires_ms)
        .bind(key.revoked_ms)
}

/// Keys, newest first; only `team`'s (id or name) when given.
pub async fn list_keys(store: &Store, team: Option<&str>) -> Result<Vec<KeyRecord>, AuthError> {
    let filter = if team.is_some() {
        "WHERE t.id = ? OR t.name = ?"
    } else {
        ""
    };
    let sql = store.sql(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN teams t ON t.id = k.team_id {filter} \
         ORDER BY k.created_ms DESC, k.id DESC"
    ));
    on_pool!(store, pool => {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(team) = team {
            query = query.bind(team).bind(team);
        }
        let rows = query.fetch_all(pool).await?;
        Ok(rows.iter().map(read_key).collect::<Result<_, _>>()?)
    })
}

/// A key by id or by display prefix.
pub async fn find_key(store: &Store, id_or_prefix: &str) -> Result<Option<KeyRecord>, AuthError> {
    let sql = store.sql(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN teams t ON t.id = k.team_id \
         WHERE k.id = ? OR k.prefix = ? ORDER BY k.id = ? DESC LIMIT 1"
    ));
    on_pool!(store, pool => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_or_prefix)
            .bind(id_or_prefix)
            .bind(id_or_prefix)
            .fetch_optional(pool)
            .await?;
        Ok(row.as_ref().map(read_key).transpose()?)
    })
}

pub async fn update_key(
    store: &Store,
    id_or_prefix: &str,
    fields: &KeyFields,
    now_ms: i64,
) -> Result<KeyRecord, AuthError> {
    let mut key = find_key(store, id_or_prefix)
        .await?
        .ok_or_else(|| AuthError::NotFound {
            what: "key",
            id: id_or_prefix.to_owned(),
        })?;
    if let Some(name) = &fields.name {
        key.name.clone_from(name);
    }
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(value) = &fields.$field {
                key.$field.clone_from(value);
            }
        )*};
    }
    set!(tier, rpm, tpm, rpd, budget, allowed_models, expires_ms);
    save_key(store, &mut key, now_ms).await?;
    Ok(key)
}

/// Revokes a key; revoking twice keeps the first time.
pub async fn revoke_key(
    store: &Store,
    id_or_prefix: &str,
    now_ms: i64,
) -> Result<KeyRecord, AuthError> {
    let mut key = find_key(store, id_or_prefix)
        .await?
        .ok_or_else(|| AuthError::NotFound {
            what: "key",
            id: id_or_prefix.to_owned(),
        })?;
    if key.revoked_ms.is_none() {
        key.revoked_ms = Some(now_ms);
        save_key(store, &mut key, now_ms).await?;
    }
    Ok(key)
}

async fn save_key(store: &Store, key: &mut KeyRecord, now_ms: i64) -> Result<(), AuthError> {
    key.updated_ms = now_ms;
    let sql = store.sql(
        "UPDATE api_keys SET team_id = ?, name = ?, prefix = ?, secret_hash = ?, tier = ?, \
         rpm = ?, tpm = ?, rpd = ?, budget_micros = ?, budget_period = ?, allowed_models = ?, \
         expires_ms = ?, revoked_ms = ?, updated_ms = ? WHERE id = ?",
    );
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        bind_key(sqlx::query(sqlx::AssertSqlSafe(sql)), key)
            .bind(key.updated_ms)
            .bind(key.id.clone())
            .execute(&mut *tx)
            .await
            .map_err(write_error("key", &key.name))?;
        bump_epoch!(tx);
        tx.commit().await?;
    });
    Ok(())
}

/// The change counter replicas poll.
pub async fn epoch(store: &Store) -> Result<i64, AuthError> {
    on_pool!(store, pool => {
        Ok(sqlx::query_scalar::<_, i64>("SELECT epoch FROM auth_epoch WHERE id = 1")
            .fetch_one(pool)
            .await?)
    })
}
