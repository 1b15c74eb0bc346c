//! `/admin/teams` and `/admin/keys`: create, list, get, update, revoke.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;
use super::body::{self, nullable};
use crate::auth::{KeyFields, TeamFields, fields, store};
use crate::clock::now_ms;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    tier: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_usd: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_period: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    team: Option<String>,
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    tier: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    rpd: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_usd: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_period: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    allowed_models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<Value>>,
}

fn team_fields(
    admin: &Admin,
    body: TeamBody,
    current: Option<crate::budgets::Budget>,
) -> Result<TeamFields, ApiError> {
    Ok(TeamFields {
        name: body.name.map(|n| body::name("name", &n)).transpose()?,
        tier: body::tier(body.tier, &admin.tiers)?,
        budget: body::budget(body.budget_usd, body.budget_period, current)?,
    })
}

fn key_fields(
    admin: &Admin,
    body: KeyBody,
    current: Option<crate::budgets::Budget>,
) -> Result<KeyFields, ApiError> {
    Ok(KeyFields {
        name: body.name.map(|n| body::name("name", &n)).transpose()?,
        tier: body::tier(body.tier, &admin.tiers)?,
        rpm: body.rpm,
        tpm: body.tpm,
        rpd: body.rpd,
        budget: body::budget(body.budget_usd, body.budget_period, current)?,
        allowed_models: fields::allowed_models(body.allowed_models)?,
        expires_ms: body::expiry(body.expires_at, now_ms())?,
    })
}

pub async fn create_team(
    State(admin): State<Arc<Admin>>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body: TeamBody = body::parse(&bytes)?;
    let name = match &body.name {
        Some(name) => body::name("name", name)?,
        None => return Err(body::bad("name", "a team needs a name")),
    };
    let fields = team_fields(&admin, body, None)?;
    let team = store::create_team(&admin.store, &name, &fields, now_ms()).await?;
    admin.reload().await;
    Ok((StatusCode::CREATED, Json(team)).into_response())
}

pub async fn list_teams(State(admin): State<Arc<Admin>>) -> Result<Response, ApiError> {
    let teams = store::list_teams(&admin.store).await?;
    Ok(Json(json!({ "data": teams })).into_response())
}

pub async fn get_team(
    State(admin): State<Arc<Admin>>,
    Path(team): Path<String>,
) -> Result<Response, ApiError> {
    let found = store::find_team(&admin.store, &team).await?;
    let team = found.ok_or(ApiError::UnknownObject {
        what: "team",
        id: team,
    })?;
    Ok(Json(team).into_response())
}

pub async fn update_team(
    State(admin): State<Arc<Admin>>,
    Path(team): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body: TeamBody = body::parse(&bytes)?;
    let current = store::find_team(&admin.store, &team)
        .await?
        .ok_or_else(|| ApiError::UnknownObject {
            what: "team",
            id: team.clone(),
        })?;
    let fields = team_fields(&admin, body, current.budget)?;
    let team = store::update_team(&admin.store, &current.id, &fields, now_ms()).await?;
    admin.reload().await;
    Ok(Json(team).into_response())
}

pub async fn create_key(
    State(admin): State<Arc<Admin>>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body: KeyBody = body::parse(&bytes)?;
    let Some(team) = body.team.clone() else {
        return Err(body::bad("team", "a key needs a team (its id or name)"));
    };
    let fields = key_fields(&admin, body, None)?;
    let (key, secret) = match store::create_key(&admin.store, &team, &fields, now_ms()).await {
        Err(crate::auth::AuthError::NotFound { what: "team", id }) => {
            return Err(body::bad("team", format!("no team `{id}`")));
        }
        other => other?,
    };
    admin.reload().await;
    let mut json = serde_json::to_value(&key).map_err(|_| ApiError::Internal)?;
    if let Some(object) = json.as_object_mut() {
        // The only time the secret is ever shown.
        object.insert("key".to_owned(), Value::String(secret.expose().to_owned()));
    }
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

pub async fn list_keys(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let keys = store::list_keys(&admin.store, query.get("team").map(String::as_str)).await?;
    Ok(Json(json!({ "data": keys })).into_response())
}

pub async fn get_key(
    State(admin): State<Arc<Admin>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let found = store::find_key(&admin.store, &key).await?;
    let key = found.ok_or(ApiError::UnknownObject {
        what: "key",
        id: key,
    })?;
    Ok(Json(key).into_response())
}

pub async fn update_key(
    State(admin): State<Arc<Admin>>,
    Path(key): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body: KeyBody = body::parse(&bytes)?;
    if body.team.is_some() {
        return Err(body::bad(
            "team",
            "a key cannot move between teams; create a new key",
        ));
    }
    let current =
        store::find_key(&admin.store, &key)
            .await?
            .ok_or_else(|| ApiError::UnknownObject {
                what: "key",
                id: key.clone(),
            })?;
    let fields = key_fields(&admin, body, current.budget)?;
    let key = store::update_key(&admin.store, &current.id, &fields, now_ms()).await?;
    admin.reload().await;
    Ok(Json(key).into_response())
}

pub async fn revoke_key(
    State(admin): State<Arc<Admin>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = store::revoke_key(&admin.store, &key, now_ms()).await?;
    admin.reload().await;
    Ok(Json(key).into_response())
}
