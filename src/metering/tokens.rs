//! Prompt-token estimates with tiktoken-rs. They size the TPM reservation before a request
//! is forwarded and stand in for usage when the upstream reports none; whenever the
//! upstream's `usage` exists it wins, so everything here may be slightly off.
//!
//! One walk over the request body serves three tallies: tokens for [`count_prompt`],
//! an upper bound of that count for [`prompt_bound`] (no tokenizer needed), and bytes
//! for [`prompt_text_len`], so the cheap figures can never drift from what the
//! expensive count actually visits.

mod image_cost;
mod tally;
mod walk;

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use crate::metering::Endpoint;
pub use image_cost::image_tokens;
use tally::{BoundTally, LenTally, Rules, TokenTally};
use walk::{to_u64, walk_prompt};

/// Framing the model adds after the last message (`<|start|>assistant<|message|>`).
const REPLY_PRIMING: i64 = 3;
/// tiktoken-rs adds one token per function/tool call; the cookbook has no figure for it.
const CALL_OVERHEAD: i64 = 1;

/// Which encodings' tables are in memory (indexed by `Encoding as usize`).
static LOADED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// Whether counting for `model` can start at once: its table is loaded. The first load
/// takes ~0.5 s, which must happen on a blocking thread, never an async worker.
pub fn is_warm(model: &str) -> bool {
    LOADED[encoding_for_model(model) as usize].load(Ordering::Relaxed)
}

/// The two encodings tollgate loads. Every current OpenAI model uses one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        let bpe = match self {
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        };
        LOADED[self as usize].store(true, Ordering::Relaxed);
        bpe
    }
}

/// Which encoding a model uses; `ft:` names resolve by their base model.
pub fn encoding_for_model(model: &str) -> Encoding {
    match get_tokenizer(model) {
        Some(Tokenizer::Cl100kBase) => Encoding::Cl100kBase,
        // o200k_harmony differs from o200k_base only in special tokens, which ordinary
        // counting never produces. Unknown names are most likely new models, and every
        // model since gpt-4o uses o200k; retired p50k/r50k models are not worth a third
        // table in memory.
        _ => Encoding::O200kBase,
    }
}

/// Which BPE a model uses: o200k_base for gpt-4o*, gpt-4.1*, gpt-5*, o1/o3/o4*,
/// chatgpt-4o*; cl100k_base for gpt-4, gpt-4-*, gpt-3.5*, text-embedding-*, davinci-002,
/// babbage-002; `ft:` names resolve by their base; unknown models fall back to o200k_base.
pub fn bpe_for_model(model: &str) -> &'static CoreBPE {
    encoding_for_model(model).bpe()
}

/// Loads both singletons (call once at startup, from a blocking thread).
/// Loads both tables now rather than on first use. The proxy does not call it: the
/// tables cost ~70 MB of memory and are needed only to estimate the rare request whose
/// upstream reports no usage, which counts on a blocking thread anyway.
pub fn warm() {
    let _ = Encoding::O200kBase.bpe();
    let _ = Encoding::Cl100kBase.bpe();
}

/// Tokens of plain text, counted as ordinary text (special-token markers in user text
/// are NOT special: use encode_ordinary / count_ordinary semantics).
pub fn count_text(model: &str, text: &str) -> u64 {
    to_u64(bpe_for_model(model).count_ordinary(text))
}

/// Estimated prompt tokens of a request body for an endpoint.
pub fn count_prompt(endpoint: Endpoint, model: &str, body: &Value) -> u64 {
    let mut tally = TokenTally {
        bpe: bpe_for_model(model),
        total: 0,
    };
    walk_prompt(endpoint, body, &Rules::for_model(model), &mut tally);
    // Negative constants (enum_init) could only win on absurd inputs; clamp anyway.
    u64::try_from(tally.total).unwrap_or(0)
}

/// An upper bound of [`count_prompt`] that needs no tokenizer: each text counts its
/// length in bytes, which its token count never exceeds (the tokenizer splits bytes
/// into tokens of at least one byte each), and everything else (message framing,
/// images, function definitions) counts exactly as in `count_prompt`. Cheap enough for
/// every request, and it never loads a tokenizer table (tens of MB), so admission can
/// reserve with it and count only when the bound does not fit.
pub fn prompt_bound(endpoint: Endpoint, model: &str, body: &Value) -> u64 {
    let mut tally = BoundTally { total: 0 };
    walk_prompt(endpoint, body, &Rules::for_model(model), &mut tally);
    u64::try_from(tally.total).unwrap_or(0)
}

/// Rough size in bytes of the text count_prompt would tokenize (sum of string lengths it
/// visits), so callers can decide to move big counts to a blocking thread. Must be cheap
/// (no tokenization).
pub fn prompt_text_len(endpoint: Endpoint, body: &Value) -> usize {
    let mut tally = LenTally { bytes: 0 };
    // The model only changes constants, which a byte tally ignores.
    walk_prompt(endpoint, body, &Rules::for_model(""), &mut tally);
    tally.bytes
}

#[cfg(test)]
mod tests;
