//! Usage per request: read from the upstream's answer when it reports one, otherwise
//! counted with tiktoken-rs and marked estimated. Pure: no I/O, no HTTP types.

pub mod image;
pub mod stream;
pub mod tier;
pub mod tokens;
pub mod usage;

use serde::{Deserialize, Serialize};

/// The metered endpoints. Everything else under `/v1` is passed through unmetered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
}

impl Endpoint {
    /// Maps a path below `/v1` (e.g. `/chat/completions`) to a metered endpoint.
    pub fn from_path(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/chat/completions" => Some(Self::ChatCompletions),
            "/completions" => Some(Self::Completions),
            "/embeddings" => Some(Self::Embeddings),
            "/responses" => Some(Self::Responses),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat.completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses => "responses",
        }
    }

    /// Whether a stream of this endpoint needs `stream_options.include_usage` to report
    /// usage. Responses streams always end with usage; embeddings never stream.
    pub fn needs_include_usage(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }
}

/// Token counts of one request. Every `*_tokens` detail is a subset of its parent, as in
/// OpenAI's usage objects: `cached_tokens ⊆ prompt_tokens`, `reasoning_tokens ⊆
/// completion_tokens`; `cache_write_tokens ⊆ prompt_tokens` too, apart from the cached
/// ones (prompt tokens written to a provider's cache, billed at their own rate).
/// Nothing here is ever added on top of its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// Where a row's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The upstream reported usage for the request.
    Upstream,
    /// tollgate counted the tokens itself (stream cut, client gone, provider reports none).
    Estimated,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Estimated => "estimated",
        }
    }
}
