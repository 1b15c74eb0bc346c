//! Who may read `/metrics`: anyone, or only the bearer of `metrics.bearer_token`.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth;
use crate::config::Secret;
use crate::error::ApiError;

pub struct ScrapeAccess {
    /// SHA-256 of the token; `None` leaves `/metrics` open.
    token: Option<[u8; 32]>,
}

impl ScrapeAccess {
    pub fn new(token: Option<&Secret>) -> Self {
        Self {
            token: token.map(|token| Sha256::digest(token.expose().as_bytes()).into()),
        }
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let Some(given) = auth::bearer(headers) else {
            return Err(ApiError::InvalidApiKey {
                reason: "/metrics needs the metrics token as a Bearer token.",
            });
        };
        // Digests compared in constant time, as the admin key: a timing difference
        // must not tell how much of a guess was right.
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        if bool::from(given.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::InvalidApiKey {
                reason: "Incorrect metrics token provided.",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    fn bearing(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn only_the_token_opens_a_protected_scrape() {
        let open = ScrapeAccess::new(None);
        assert!(open.check(&HeaderMap::new()).is_ok());
        let closed = ScrapeAccess::new(Some(&Secret::new("scrape-me".to_owned())));
        assert!(closed.check(&bearing("scrape-me")).is_ok());
        for denied in [HeaderMap::new(), bearing("scrape-m"), bearing("scrape-me2")] {
            let error = closed.check(&denied).unwrap_err();
            assert_eq!(error.status(), 401);
        }
    }
}
