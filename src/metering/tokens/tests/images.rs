//! Image estimates: by detail, by size, by patch, and from `data:` URLs.

use serde_json::json;

use super::*;
use crate::metering::tokens::image_cost::{patch_count, tile_count};

#[test]
fn image_estimates_of_unknown_size_assume_1024_square() {
    for (model, detail, want) in [
        ("gpt-4o", Some("low"), 85),
        ("gpt-4o-2024-08-06", None, 765),
        ("gpt-4.1", Some("high"), 765),
        ("chatgpt-4o-latest", Some("auto"), 765),
        ("gpt-4.5-preview", None, 765),
        ("gpt-4o-mini", Some("low"), 2833),
        ("gpt-4o-mini-2024-07-18", Some("high"), 25501),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", None, 25501),
        ("o1", Some("high"), 675),
        ("o3-2025-04-16", Some("low"), 75),
        ("gpt-4.1-mini", None, 1659),
        ("gpt-4.1-nano", None, 2520),
        ("o4-mini", Some("low"), 1762),
        ("gpt-5-mini", None, 1659),
        ("gpt-5-nano-2025-08-07", None, 2520),
        ("some-unknown-model", None, 765),
    ] {
        assert_eq!(
            image_tokens(model, detail, None),
            want,
            "{model} {detail:?}"
        );
        assert_eq!(
            image_tokens(model, detail, Some((1024, 1024))),
            want,
            "{model} {detail:?} 1024x1024"
        );
    }
}

#[test]
fn image_estimates_by_size() {
    for (model, detail, (w, h), want) in [
        // The reference's tile examples.
        ("gpt-4o", Some("high"), (1024, 1024), 765),
        ("gpt-4o", Some("high"), (2048, 4096), 1105),
        ("gpt-4o", Some("high"), (1920, 1080), 1105),
        ("gpt-4o", Some("high"), (128, 64), 85 + 170),
        ("gpt-4o-mini", Some("high"), (128, 64), 8500),
        ("gpt-4o-mini", Some("low"), (128, 64), 2833),
        ("gpt-4o-mini", Some("high"), (1024, 1024), 25501),
        // Low is the base at any size; auto and missing are high.
        ("gpt-4o", Some("low"), (128, 64), 85),
        ("gpt-4o", Some("low"), (8000, 6000), 85),
        ("gpt-4o", Some("auto"), (1920, 1080), 1105),
        ("gpt-4o", None, (1080, 1920), 1105),
        // Tile edges: no upscaling, a short side of exactly 768 is left alone.
        ("gpt-4o", None, (512, 512), 255),
        ("gpt-4o", None, (513, 512), 425),
        ("gpt-4o", None, (768, 768), 765),
        ("gpt-4o", None, (769, 769), 765),
        ("gpt-4o", None, (1536, 768), 1105),
        ("gpt-4o", None, (4096, 8192), 1105),
        // Fitted to 2048×20.48; the short side is then under 768.
        ("gpt-4o", None, (10_000, 100), 85 + 4 * 170),
        ("gpt-4o", None, (0, 0), 85),
        // Other tile families and fallbacks.
        ("gpt-4.1-2025-04-14", None, (1920, 1080), 1105),
        ("some-unknown-model", None, (128, 64), 255),
        ("o1-pro", None, (1920, 1080), 75 + 6 * 150),
        ("o3", Some("low"), (1920, 1080), 75),
        ("computer-use-preview", None, (1024, 1024), 65 + 4 * 129),
        (
            "ft:gpt-4o-mini-2024-07-18:acme::abc123",
            None,
            (128, 64),
            8500,
        ),
        // Patch models: 1800×2400 → 1452 patches in either orientation.
        ("gpt-4.1-mini", None, (1800, 2400), 2353), // 1452 × 1.62 = 2352.24
        ("gpt-4.1-mini", None, (2400, 1800), 2353),
        ("o4-mini", Some("high"), (1800, 2400), 2498), // 1452 × 1.72 = 2497.44
        ("gpt-4.1-nano", None, (64, 64), 10),          // 4 × 2.46 = 9.84
        ("gpt-4.1-nano", Some("low"), (64, 64), 10),   // detail is ignored
        ("gpt-5-nano", None, (33, 1), 5),              // 2 × 2.46 = 4.92
        ("gpt-5-mini", None, (1280, 1200), 2463),      // 40·38 = 1520 × 1.62 = 2462.4
        ("gpt-4.1-mini", None, (4000, 1474), 2348),    // 1449 × 1.62 = 2347.38
        ("gpt-4.1-mini", None, (0, 500), 0),
    ] {
        assert_eq!(
            image_tokens(model, detail, Some((w, h))),
            want,
            "{model} {detail:?} {w}x{h}"
        );
    }
}

#[test]
fn patch_counts() {
    for ((w, h), want) in [
        ((1800, 2400), 1452),
        ((2400, 1800), 1452),
        ((4000, 1474), 1449),
        ((1024, 1024), 1024),
        ((1248, 1248), 1521),
        ((1280, 1280), 1521),
        ((64, 64), 4),
        ((1, 1), 1),
    ] {
        assert_eq!(patch_count(w, h), want, "{w}x{h}");
    }
    // Extreme shapes stay within 1..=1536 patches and 1..=any tiles without panicking.
    for (w, h) in [
        (1, 100_000),
        (100_000, 1),
        (u32::MAX, u32::MAX),
        (u32::MAX, 1),
    ] {
        let patches = patch_count(w, h);
        assert!((1..=1536).contains(&patches), "{w}x{h}: {patches}");
        let tiles = tile_count(w, h);
        assert!((1..=12).contains(&tiles), "{w}x{h}: {tiles}");
    }
}

#[test]
fn data_url_images_count_by_their_size() {
    let text_only = json!({"messages": [{"role": "user", "content": "describe this"}]});
    let chat_image = |url: &str, detail: Value| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe this"},
            {"type": "image_url", "image_url": {"url": url, "detail": detail}},
        ]}]})
    };
    let small = png_data_url(300, 200);
    let large = png_data_url(1920, 1080);
    let base = chat("gpt-4o", text_only.clone());
    for (model, url, detail, extra) in [
        ("gpt-4o", small.as_str(), Value::Null, 85 + 170),
        ("gpt-4o", small.as_str(), json!("high"), 85 + 170),
        ("gpt-4o", small.as_str(), json!("low"), 85),
        ("gpt-4o", large.as_str(), json!("auto"), 1105),
        ("gpt-4o", "https://example.com/cat.png", Value::Null, 765),
        (
            "gpt-4o",
            "data:image/png;base64,bm90IGFuIGltYWdl",
            Value::Null,
            765,
        ),
        ("gpt-4o-mini", small.as_str(), Value::Null, 2833 + 5667),
        // 10·7 = 70 patches × 2.46 = 172.2
        ("gpt-4.1-nano", small.as_str(), Value::Null, 173),
    ] {
        let base = if model == "gpt-4o" {
            base
        } else {
            chat(model, text_only.clone())
        };
        assert_eq!(
            chat(model, chat_image(url, detail.clone())),
            base + extra,
            "{model} {detail} {}",
            &url[..url.len().min(40)]
        );
    }

    // A bare string image_url is taken as the URL.
    let bare = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe this"},
        {"type": "image_url", "image_url": small},
    ]}]});
    assert_eq!(chat("gpt-4o", bare), base + 255);

    // Responses: image_url is a plain string; a file_id has no size.
    let responses = |image: Value| {
        let input = json!([{"role": "user", "content": [
            {"type": "input_text", "text": "describe this"}, image]}]);
        count_prompt(Endpoint::Responses, "gpt-4o", &json!({"input": input}))
    };
    let without = count_prompt(
        Endpoint::Responses,
        "gpt-4o",
        &json!({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "describe this"}]}]}),
    );
    for (image, extra) in [
        (
            json!({"type": "input_image", "image_url": small, "detail": "high"}),
            255,
        ),
        (json!({"type": "input_image", "image_url": large}), 1105),
        (
            json!({"type": "input_image", "image_url": large, "detail": "low"}),
            85,
        ),
        (json!({"type": "input_image", "file_id": "file-1"}), 765),
    ] {
        assert_eq!(responses(image.clone()), without + extra, "{image:.80}");
    }

    // The byte tally neither decodes nor counts image URLs.
    assert_eq!(
        prompt_text_len(Endpoint::ChatCompletions, &chat_image(&large, Value::Null)),
        prompt_text_len(Endpoint::ChatCompletions, &text_only),
    );
}
