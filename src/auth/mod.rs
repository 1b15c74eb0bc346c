//! Who is calling: tollgate keys (hashed, cached in memory, reloaded on change) or, in
//! passthrough mode, the caller's own upstream key, known only by its fingerprint.

pub mod budget;
mod cache;
pub mod command;
pub mod fields;
pub mod secret;
pub mod store;

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::config::AuthMode;
use crate::error::ApiError;

pub use cache::{KeyCache, KeyEntry};
pub use store::{KeyFields, KeyRecord, TeamFields, TeamRecord};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("database error: {0}")]
    Store(#[from] sqlx::Error),
    #[error("a {what} named `{name}` already exists")]
    Duplicate { what: &'static str, name: String },
    #[error("no {what} `{id}`")]
    NotFound { what: &'static str, id: String },
    #[error("the operating system's random number generator failed")]
    Random,
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Duplicate { .. } => ApiError::Conflict {
                message: error.to_string(),
            },
            AuthError::NotFound { what, id } => ApiError::UnknownObject { what, id },
            AuthError::Store(_) | AuthError::Random => {
                tracing::error!(%error, "key store failed");
                ApiError::Internal
            }
        }
    }
}

/// What a request is attributed to and limited by.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The key's id, or the caller's fingerprint in passthrough mode.
    pub key_id: String,
    pub team_id: Option<String>,
    /// Safe to show and log: the key's prefix, or the fingerprint.
    pub display: String,
    /// The key and its team, in keys mode.
    pub key: Option<Arc<KeyEntry>>,
}

/// Checks bearers against the cache (keys mode) or fingerprints them (passthrough).
pub struct Authenticator {
    pub mode: AuthMode,
    pub cache: KeyCache,
}

impl Authenticator {
    pub fn authenticate(&self, headers: &HeaderMap, now_ms: i64) -> Result<Identity, ApiError> {
        let token = bearer(headers);
        match self.mode {
            AuthMode::Passthrough => {
                let display = token.map_or_else(|| "anonymous".to_owned(), fingerprint);
                Ok(Identity {
                    key_id: display.clone(),
                    team_id: None,
                    display,
                    key: None,
                })
            }
            AuthMode::Keys => {
                let token = token.ok_or(ApiError::InvalidApiKey {
                    reason: "You didn't provide an API key. You need to provide your tollgate \
                             key in an Authorization header using Bearer auth \
                             (i.e. Authorization: Bearer tg-…).",
                })?;
                let entry = self.cache.check(token, now_ms)?;
                Ok(Identity {
                    key_id: entry.key.id.clone(),
                    team_id: Some(entry.key.team_id.clone()),
                    display: entry.key.prefix.clone(),
                    key: Some(entry),
                })
            }
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// A caller known only by its own upstream key: a short SHA-256 prefix, never the key.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("fp:{}", hex::encode(&digest[..6]))
}

/// Whether `model` matches one of the key's allowed names or globs.
pub fn model_allowed(allowed: Option<&[String]>, model: Option<&str>) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    let model = model.unwrap_or_default();
    allowed.iter().any(|pattern| {
        pattern == model || glob::Pattern::new(pattern).is_ok_and(|glob| glob.matches(model))
    })
}

#[cfg(test)]
impl Identity {
    /// Key `key` of team `team` with nothing set; `edit` sets what a test needs.
    pub(crate) fn for_test(edit: impl FnOnce(&mut KeyRecord, &mut TeamRecord)) -> Self {
        let mut team = TeamRecord {
            id: "team".into(),
            name: "t".into(),
            tier: None,
            budget: None,
            created_ms: 0,
            updated_ms: 0,
        };
        let mut key = KeyRecord {
            id: "key".into(),
            team_id: "team".into(),
            team: "t".into(),
            name: "k".into(),
            prefix: "tg-x".into(),
            hash: [0; 32],
            tier: None,
            rpm: None,
            tpm: None,
            rpd: None,
            budget: None,
            allowed_models: None,
            expires_ms: None,
            revoked_ms: None,
            created_ms: 0,
            updated_ms: 0,
        };
        edit(&mut key, &mut team);
        Self {
            key_id: key.id.clone(),
            team_id: Some(team.id.clone()),
            display: key.prefix.clone(),
            key: Some(Arc::new(KeyEntry {
                key,
                team: Arc::new(team),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_fingerprint_never_holds_the_secret() {
        let print = fingerprint("sk-secret-123");
        assert!(print.starts_with("fp:") && print.len() == 15, "{print}");
        assert_eq!(print, fingerprint("sk-secret-123"));
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  x "),
        );
        assert_eq!(bearer(&headers), Some("x"));
    }

    #[test]
    fn allowed_models_match_names_and_globs() {
        let allowed = vec!["gpt-4o-mini".to_owned(), "o3*".to_owned()];
        assert!(model_allowed(None, Some("anything")));
        assert!(model_allowed(Some(&allowed), Some("gpt-4o-mini")));
        assert!(model_allowed(Some(&allowed), Some("o3-mini")));
        assert!(!model_allowed(Some(&allowed), Some("gpt-4o")));
        assert!(!model_allowed(Some(&allowed), None));
    }
}
