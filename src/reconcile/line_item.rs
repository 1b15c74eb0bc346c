//! The Costs API's `line_item` (with `group_by=line_item`): free text that names a
//! model and what of it was charged. Shapes seen in real exports (quoted by client
//! code written against OpenAI's Admin API, see docs/src/reconciliation.md):
//!
//! - `gpt-4o-mini-2024-07-18, input`, `…, cached input`, `…, output`
//! - `priority | gpt-5.4-2026-03-05, output, long context`: a service tier before the
//!   model, a modifier after the kind
//! - `gpt-audio-mini-2025-12-15 audio, input`: a modality word after the model
//! - `ft-gpt-4o-2024-08-06, input`: a fine-tuned model's charge
//! - `web search tool calls`, `Vector storage`, `whisper-1, audio`: no token charge
//!
//! Some exports spell the kind `input_tokens` / `output_tokens`; both are read.

/// A charge for a model's tokens, read from a line item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCharge<'a> {
    /// The model as written (`gpt-4o-mini-2024-07-18`); `ft-` written as `ft:`.
    pub model: std::borrow::Cow<'a, str>,
    pub kind: TokenKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Input,
    CachedInput,
    CacheWrite,
    Output,
    /// Fine-tuning training tokens.
    Training,
}

/// The model and token kind a line item charges, or `None` for anything else (tool
/// calls, storage, audio seconds, images): money tollgate does not meter as tokens.
pub fn parse(line_item: &str) -> Option<ModelCharge<'_>> {
    let text = line_item.trim();
    // A service tier goes before the model: `priority | gpt-…`.
    let text = text.rsplit_once(" | ").map_or(text, |(_, rest)| rest);
    let (head, rest) = text.split_once(',')?;
    let kind = rest.split(',').next().unwrap_or_default().trim();
    let kind = match kind.to_ascii_lowercase().as_str() {
        "input" | "input_tokens" | "uncached input" | "uncached_input_tokens" => TokenKind::Input,
        "cached input"
        | "cached_input_tokens"
        | "input_cached_tokens"
        | "cache read"
        | "cache reads" => TokenKind::CachedInput,
        "cache write" | "cache writes" | "input_cache_write_tokens" => TokenKind::CacheWrite,
        "output" | "output_tokens" => TokenKind::Output,
        kind if kind.contains("training") => TokenKind::Training,
        _ => return None,
    };
    // The model is the first word; a modality word may follow it.
    let model = head.split_whitespace().next()?;
    if !model.bytes().any(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let model = match model.strip_prefix("ft-") {
        Some(base) => std::borrow::Cow::Owned(format!("ft:{base}")),
        None => std::borrow::Cow::Borrowed(model),
    };
    Some(ModelCharge { model, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_charges_are_read_from_every_known_shape() {
        let cases = [
            (
                "gpt-4o-mini-2024-07-18, input",
                "gpt-4o-mini-2024-07-18",
                TokenKind::Input,
            ),
            (
                "gpt-4o-mini-2024-07-18, cached input",
                "gpt-4o-mini-2024-07-18",
                TokenKind::CachedInput,
            ),
            (
                "gpt-4.1-2025-04-14, output",
                "gpt-4.1-2025-04-14",
                TokenKind::Output,
            ),
            (
                "priority | gpt-5.4-2026-03-05, output, long context",
                "gpt-5.4-2026-03-05",
                TokenKind::Output,
            ),
            (
                "gpt-audio-mini-2025-12-15 audio, input",
                "gpt-audio-mini-2025-12-15",
                TokenKind::Input,
            ),
            (
                "ft-gpt-4o-2024-08-06, input",
                "ft:gpt-4o-2024-08-06",
                TokenKind::Input,
            ),
            ("gpt-5-mini, input_tokens", "gpt-5-mini", TokenKind::Input),
            ("gpt-5-mini, output_tokens", "gpt-5-mini", TokenKind::Output),
            (
                "gpt-5.5-2026-04-23, cache writes",
                "gpt-5.5-2026-04-23",
                TokenKind::CacheWrite,
            ),
            (
                "gpt-4o-mini-2024-07-18, training",
                "gpt-4o-mini-2024-07-18",
                TokenKind::Training,
            ),
            (
                "  text-embedding-3-small, input ",
                "text-embedding-3-small",
                TokenKind::Input,
            ),
        ];
        for (line_item, model, kind) in cases {
            let charge = parse(line_item).unwrap_or_else(|| panic!("{line_item}"));
            assert_eq!(
                (charge.model.as_ref(), charge.kind),
                (model, kind),
                "{line_item}"
            );
        }
    }

    #[test]
    fn other_charges_are_not_model_tokens() {
        for line_item in [
            "web search tool calls",
            "Vector storage",
            "whisper-1, audio",
            "tts-1, characters",
            "Image models",
            ", input",
            "123, input",
            "",
        ] {
            assert_eq!(parse(line_item), None, "{line_item:?}");
        }
    }
}
