//! Sizing a request before it is forwarded, for the checks that need its prompt: the
//! context window, the budget reservation and the token rate limits (TPM, TPD).
//!
//! A cheap upper bound comes first (`tokens::prompt_bound`: text counted as bytes, no
//! tokenizer); the tokenizer's count is taken only where the bound cannot settle a
//! check on its own: a budget (its reservation is priced from the count), a context
//! window the bound would overflow, or a token limit the bound does not fit. Most
//! requests never load a tokenizer table, which costs tens of MB and microseconds per
//! request.

use bytes::Bytes;
use serde_json::Value;

use crate::error::ApiError;
use crate::metering::{Endpoint, tokens};

/// Bodies up to this size are counted inline; larger ones on the blocking pool, since
/// tokenising ~1 MB of text takes tens of milliseconds.
const INLINE_COUNT_BYTES: usize = 8 * 1024;
/// Bodies up to this size are bounded inline (a JSON parse and a walk, no tokenizer).
const INLINE_BOUND_BYTES: usize = 64 * 1024;

/// The prompt of one request, bounded and counted on demand, each at most once.
pub struct Prompt<'a> {
    endpoint: Endpoint,
    model: &'a str,
    body: &'a Bytes,
    bound: Option<u64>,
    count: Option<u64>,
}

impl<'a> Prompt<'a> {
    pub fn new(endpoint: Endpoint, model: Option<&'a str>, body: &'a Bytes) -> Self {
        Self {
            endpoint,
            model: model.unwrap_or_default(),
            body,
            bound: None,
            count: None,
        }
    }

    /// An upper bound of the prompt's tokens; the count itself once it is known.
    pub async fn bound(&mut self) -> Result<u64, ApiError> {
        if let Some(known) = self.count.or(self.bound) {
            return Ok(known);
        }
        let (endpoint, model) = (self.endpoint, self.model.to_owned());
        let bound = move |body: &[u8]| {
            let json: Value = serde_json::from_slice(body).unwrap_or_default();
            tokens::prompt_bound(endpoint, &model, &json)
        };
        let bound = if self.body.len() <= INLINE_BOUND_BYTES {
            bound(self.body)
        } else {
            let body = self.body.clone();
            tokio::task::spawn_blocking(move || bound(&body))
                .await
                .map_err(|_| ApiError::Internal)?
        };
        self.bound = Some(bound);
        Ok(bound)
    }

    /// The prompt's tokens, counted with the model's tokenizer (images included).
    pub async fn count(&mut self) -> Result<u64, ApiError> {
        if let Some(count) = self.count {
            return Ok(count);
        }
        let model = self.model.to_owned();
        let inline = self.body.len() <= INLINE_COUNT_BYTES && tokens::is_warm(&model);
        let (endpoint, body) = (self.endpoint, self.body.clone());
        let count = move || {
            let json: Value = serde_json::from_slice(&body).unwrap_or_default();
            tokens::count_prompt(endpoint, &model, &json)
        };
        let count = if inline {
            count()
        } else {
            tokio::task::spawn_blocking(count)
                .await
                .map_err(|_| ApiError::Internal)?
        };
        self.count = Some(count);
        Ok(count)
    }

    /// The count, if it was taken.
    pub fn counted(&self) -> Option<u64> {
        self.count
    }

    /// Whether the tokenizer could give a smaller figure than the one known now.
    pub fn could_shrink(&self) -> bool {
        self.count.is_none() && self.bound.is_some_and(|bound| bound > 0)
    }
}
