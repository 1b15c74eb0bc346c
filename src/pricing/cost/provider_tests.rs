//! Provider-specific arithmetic: Anthropic's cache writes, Gemini's long-context sheet.

use super::*;

fn usage(prompt: u64, cached: u64, written: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
        reasoning_tokens: 0,
        cache_write_tokens: written,
    }
}

fn cost(model: &str, usage: &Usage) -> String {
    Catalog::builtin()
        .price(Some(model), None, usage, false)
        .map(|p| p.cost.to_string())
        .unwrap_or_default()
}

#[test]
fn anthropic_cache_writes_pay_their_own_rate() {
    // 10,000 prompt: 2,000 read, 3,000 written, 5,000 plain; 1,000 out.
    // 5,000 × 1.00 + 2,000 × 0.10 + 3,000 × 1.25 + 1,000 × 5.00
    // = 5,000 + 200 + 3,750 + 5,000 micro → $0.01395
    assert_eq!(
        cost("claude-haiku-4-5", &usage(10_000, 2_000, 3_000, 1_000)),
        "0.01395"
    );
    // Sonnet: 5,000 × 3 + 2,000 × 0.30 + 3,000 × 3.75 + 1,000 × 15 → $0.04185
    assert_eq!(
        cost("claude-sonnet-4-5", &usage(10_000, 2_000, 3_000, 1_000)),
        "0.04185"
    );
    // Writes beyond what is left of the prompt are capped: all 100 tokens written.
    assert_eq!(cost("claude-opus-4-1", &usage(100, 0, 500, 0)), "0.001875");
}

#[test]
fn gemini_pro_charges_the_long_context_sheet_above_200k() {
    // At the threshold: 200,000 × 1.25 + 1,000 × 10 → $0.26
    assert_eq!(cost("gemini-2.5-pro", &usage(200_000, 0, 0, 1_000)), "0.26");
    // One above: every token at the long rates. 200,001 × 2.50 + 1,000 × 15
    // = 500,002.5 + 15,000 micro → $0.5150025
    assert_eq!(
        cost("gemini-2.5-pro", &usage(200_001, 0, 0, 1_000)),
        "0.5150025"
    );
    // Cached above the threshold: 150,000 × 2.50 + 100,000 × 0.25 → $0.4
    assert_eq!(
        cost("gemini-2.5-pro", &usage(250_000, 100_000, 0, 0)),
        "0.4"
    );
    // Flash has no long-context sheet: 300,000 × 0.30 + 10,000 × 0.03 → $0.0903
    assert_eq!(
        cost("gemini-2.5-flash", &usage(310_000, 10_000, 0, 0)),
        "0.0903"
    );
}
