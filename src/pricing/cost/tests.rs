//! The cost formula per variant and tier, against hand-worked figures.

use super::*;

#[allow(clippy::unwrap_used, reason = "test helper")]
fn rate(text: &str) -> Rate {
    text.parse().unwrap()
}

fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
        reasoning_tokens: reasoning,
        cache_write_tokens: 0,
    }
}

#[test]
fn variants_on_gpt_4o_mini() {
    let catalog = Catalog::builtin();
    let ft = "ft:gpt-4o-mini-2024-07-18:acme::abc123";
    // Hand-computed, micro-USD per 1M × tokens = pico-USD:
    // (name, batch, usage, variant, (input, cached, output), cost)
    let table = [
        // 10,000 × 0.15 + 1,000 × 0.60 = 1,500 + 600 → $0.0021
        (
            "gpt-4o-mini",
            false,
            usage(10_000, 0, 1_000, 0),
            Variant::Standard,
            ("0.15", "0.075", "0.60"),
            "0.0021",
        ),
        // 5,904 × 0.15 + 4,096 × 0.075 + 1,000 × 0.60 = 885.6 + 307.2 + 600 → $0.0017928
        (
            "gpt-4o-mini",
            false,
            usage(10_000, 4_096, 1_000, 0),
            Variant::Standard,
            ("0.15", "0.075", "0.60"),
            "0.0017928",
        ),
        // 10,000 × 0.075 + 1,000 × 0.30 = 750 + 300 → $0.00105
        (
            "gpt-4o-mini",
            true,
            usage(10_000, 0, 1_000, 0),
            Variant::Batch,
            ("0.075", "0.075", "0.30"),
            "0.00105",
        ),
        // cached + batch is billed as batch: the same $0.00105
        (
            "gpt-4o-mini",
            true,
            usage(10_000, 4_096, 1_000, 0),
            Variant::Batch,
            ("0.075", "0.075", "0.30"),
            "0.00105",
        ),
        // 10,000 × 0.30 + 1,000 × 1.20 = 3,000 + 1,200 → $0.0042
        (
            ft,
            false,
            usage(10_000, 0, 1_000, 0),
            Variant::FineTuned,
            ("0.30", "0.15", "1.20"),
            "0.0042",
        ),
        // 5,904 × 0.30 + 4,096 × 0.15 + 1,000 × 1.20 = 1,771.2 + 614.4 + 1,200 → $0.0035856
        (
            ft,
            false,
            usage(10_000, 4_096, 1_000, 0),
            Variant::FineTuned,
            ("0.30", "0.15", "1.20"),
            "0.0035856",
        ),
        // 10,000 × 0.15 + 1,000 × 0.60 (half the fine-tuned rates) → $0.0021
        (
            ft,
            true,
            usage(10_000, 4_096, 1_000, 0),
            Variant::FineTunedBatch,
            ("0.15", "0.15", "0.60"),
            "0.0021",
        ),
        // 800 of the 1,000 completion tokens are reasoning: still 1,000 × 0.60 → $0.0021
        (
            "gpt-4o-mini",
            false,
            usage(10_000, 0, 1_000, 800),
            Variant::Standard,
            ("0.15", "0.075", "0.60"),
            "0.0021",
        ),
        // Anthropic's cache hits: 5,904 × 1.00 + 4,096 × 0.10 + 1,000 × 5.00
        // = 5,904 + 409.6 + 5,000 → $0.0113136
        (
            "claude-haiku-4-5",
            false,
            usage(10_000, 4_096, 1_000, 0),
            Variant::Standard,
            ("1.00", "0.10", "5.00"),
            "0.0113136",
        ),
        // Cached beyond the prompt is capped: 100 × 0.075 + 10 × 0.60 = 7.5 + 6 → $0.0000135
        (
            "gpt-4o-mini",
            false,
            usage(100, 500, 10, 0),
            Variant::Standard,
            ("0.15", "0.075", "0.60"),
            "0.0000135",
        ),
        (
            "gpt-4o-mini",
            false,
            usage(0, 0, 0, 0),
            Variant::Standard,
            ("0.15", "0.075", "0.60"),
            "0",
        ),
    ];
    for (name, batch, usage, variant, (input, cached, output), cost) in table {
        let priced = catalog.price(Some(name), None, &usage, batch).unwrap();
        let model = if name.starts_with("claude") {
            name
        } else {
            "gpt-4o-mini"
        };
        assert_eq!(priced.model, model, "{name}");
        assert_eq!(priced.variant, variant, "{name} {usage:?}");
        assert_eq!(
            priced.rates,
            UnitRates {
                input: rate(input),
                cached_input: rate(cached),
                output: rate(output),
                cache_write: name.starts_with("claude").then(|| rate("1.25")),
            },
            "{name} {usage:?}"
        );
        assert_eq!(priced.cost.to_string(), cost, "{name} {usage:?}");
    }
}

#[test]
fn common_workloads() {
    let catalog = Catalog::builtin();
    // (what, model, batch, usage, cost)
    let table = [
        // Chatbot reply with a cached system prompt (the reference's example usage):
        // 86 × 0.15 + 1,920 × 0.075 + 300 × 0.60 = 12.9 + 144 + 180 = 336.9 µ$ → $0.0003369
        (
            "chatbot reply",
            "gpt-4o-mini-2024-07-18",
            false,
            usage(2_006, 1_920, 300, 0),
            "0.0003369",
        ),
        // Classification: 350 × 0.10 + 5 × 0.40 = 35 + 2 = 37 µ$
        (
            "classification",
            "gpt-4.1-nano",
            false,
            usage(350, 0, 5, 0),
            "0.000037",
        ),
        // Extraction through the batch API: 3,000 × 0.075 + 400 × 0.30 = 225 + 120 µ$
        (
            "extraction",
            "gpt-4o-mini",
            true,
            usage(3_000, 0, 400, 0),
            "0.000345",
        ),
        // Routing: 120 × 0.10 + 1 × 0.40 = 12 + 0.4 = 12.4 µ$
        (
            "routing",
            "gpt-4.1-nano-2025-04-14",
            false,
            usage(120, 0, 1, 0),
            "0.0000124",
        ),
        // Summarization: 12,000 × 2.00 + 800 × 8.00 = 24,000 + 6,400 µ$ → $0.0304
        (
            "summarization",
            "gpt-4.1-2025-04-14",
            false,
            usage(12_000, 0, 800, 0),
            "0.0304",
        ),
        // Reasoning: 1,500 × 1.10 + 2,500 × 4.40 (2,000 of them reasoning, not added)
        // = 1,650 + 11,000 µ$ → $0.01265
        (
            "reasoning",
            "o4-mini-2025-04-16",
            false,
            usage(1_500, 0, 2_500, 2_000),
            "0.01265",
        ),
        // Embedding: 8,000 × 0.02 = 160 µ$
        (
            "embedding",
            "text-embedding-3-small",
            false,
            usage(8_000, 0, 0, 0),
            "0.00016",
        ),
        // Long context on gpt-4o with a big cache hit:
        // 2,048 × 2.50 + 98,304 × 1.25 + 1,000 × 10.00 = 5,120 + 122,880 + 10,000 µ$
        (
            "long context",
            "gpt-4o",
            false,
            usage(100_352, 98_304, 1_000, 0),
            "0.138",
        ),
    ];
    for (what, model, batch, usage, cost) in table {
        let priced = catalog.price(Some(model), None, &usage, batch).unwrap();
        assert_eq!(priced.cost.to_string(), cost, "{what}");
    }
}

#[test]
fn answered_model_wins_and_requested_is_the_fallback() {
    let catalog = Catalog::builtin();
    let u = usage(1_000_000, 0, 0, 0);
    let cases = [
        (
            Some("gpt-4o-2024-08-06"),
            Some("gpt-4o-mini"),
            Some(("gpt-4o", "2.5")),
        ),
        (None, Some("gpt-4o-mini"), Some(("gpt-4o-mini", "0.15"))),
        (
            Some("mystery-model"),
            Some("gpt-4.1"),
            Some(("gpt-4.1", "2")),
        ),
        (Some("mystery-model"), None, None),
        (None, Some("gpt-9"), None),
        (None, None, None),
    ];
    for (answered, requested, want) in cases {
        let got = catalog
            .price(answered, requested, &u, false)
            .map(|p| (p.model, p.cost.to_string()));
        let want = want.map(|(model, cost)| (model, cost.to_owned()));
        assert_eq!(got, want, "{answered:?} / {requested:?}");
    }
}

#[test]
fn fine_tuned_without_ft_rates_is_unknown() {
    let catalog = Catalog::builtin();
    let u = usage(100, 0, 100, 0);
    // o3 has no fine-tuned inference price in the catalog: not priced at base rates.
    assert_eq!(
        catalog.price(Some("ft:o3-2025-04-16:acme::x"), None, &u, false),
        None
    );
    assert_eq!(
        catalog.price(Some("ft:o3-2025-04-16:acme::x"), None, &u, true),
        None
    );
    // The answered name is known, so the requested alias is not consulted.
    assert_eq!(
        catalog.price(Some("ft:o3-2025-04-16:acme::x"), Some("o3"), &u, false),
        None
    );
    assert_eq!(
        catalog.price(Some("o3"), None, &u, false).map(|p| p.model),
        Some("o3")
    );
}

#[test]
fn training() {
    let catalog = Catalog::builtin();
    let cases = [
        ("gpt-4o-mini", 10_000_000, Some("3")), // 10M × $0.30/1M = $3.00 exactly
        ("gpt-4o-mini-2024-07-18", 100_000, Some("0.03")), // 100K × $0.30/1M
        ("gpt-4.1-nano-2025-04-14", 1_000_000, Some("1.5")),
        ("gpt-4o-mini", 0, Some("0")),
        ("o3", 1_000_000, None),
        ("gpt-9", 1_000_000, None),
    ];
    for (model, tokens, want) in cases {
        let got = catalog.training_cost(model, tokens).map(|c| c.to_string());
        assert_eq!(got.as_deref(), want, "{model} {tokens}");
    }
    assert_eq!(
        catalog
            .training_cost("gpt-4o-mini", 10_000_000)
            .map(Cost::as_pico),
        Some(3_000_000_000_000)
    );
}

#[test]
fn a_million_requests_sum_exactly() {
    let catalog = Catalog::builtin();
    let n: u64 = 1_000_000;
    let mut total = Some(Cost::ZERO);
    for i in 0..n {
        let u = usage(2_048 + i % 2_000, 128 * (i % 8), i % 500, 0);
        let priced = catalog.price(Some("gpt-4o-mini"), None, &u, false).unwrap();
        total = total.and_then(|t| t + priced.cost);
    }
    // Closed form: Σprompt = 2,048·10⁶ + 500·Σ_{k<2000}k = 3,047,500,000;
    // Σcached = 128 · 125,000 · Σ_{k<8}k = 448,000,000;
    // Σcompletion = 2,000 · Σ_{k<500}k = 249,500,000.
    let prompt: u128 = 2_048 * 1_000_000 + 500 * (1_999 * 2_000 / 2);
    let cached: u128 = 128 * 125_000 * 28;
    let completion: u128 = 2_000 * (499 * 500 / 2);
    assert_eq!(
        (prompt, cached, completion),
        (3_047_500_000, 448_000_000, 249_500_000)
    );
    let closed = (prompt - cached) * 150_000 + cached * 75_000 + completion * 600_000;
    assert_eq!(total, Some(Cost::from_pico(closed)));
    // (2,599.5M × 0.15 + 448M × 0.075 + 249.5M × 0.60) / 1M = $573.225
    assert_eq!(total.map(|t| t.to_string()).as_deref(), Some("573.225"));
}

#[test]
fn derived_batch_rates_are_half() {
    let catalog = Catalog::builtin();
    let haiku = catalog.get("claude-haiku-4-5").unwrap();
    assert_eq!((haiku.batch_input, haiku.batch_output), (None, None));
    let batch = haiku.rates(Variant::Batch).unwrap();
    assert_eq!((batch.input, batch.output), (rate("0.50"), rate("2.50")));
    assert_eq!(Variant::FineTunedBatch.as_str(), "fine_tuned_batch");
}
