//! Counting a request before it is forwarded, for the checks that need its size: the
//! context window, the budget reservation and the token rate limits (TPM, TPD).

use bytes::Bytes;
use serde_json::Value;

use crate::error::ApiError;
use crate::metering::{Endpoint, tokens};

/// Bodies up to this size are counted inline; larger ones on the blocking pool, since
/// tokenising ~1 MB of text takes tens of milliseconds.
const INLINE_COUNT_BYTES: usize = 8 * 1024;

/// The prompt's tokens, counted with the model's tokenizer (images included).
pub async fn count_prompt(
    endpoint: Endpoint,
    model: Option<&str>,
    body: &Bytes,
) -> Result<u64, ApiError> {
    let model = model.unwrap_or_default().to_owned();
    let inline = body.len() <= INLINE_COUNT_BYTES && tokens::is_warm(&model);
    let count = move |body: &[u8]| {
        let json: Value = serde_json::from_slice(body).unwrap_or_default();
        tokens::count_prompt(endpoint, &model, &json)
    };
    if inline {
        return Ok(count(body));
    }
    let body = body.clone();
    tokio::task::spawn_blocking(move || count(&body))
        .await
        .map_err(|_| ApiError::Internal)
}
