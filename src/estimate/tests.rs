use std::io::Write as _;

use serde_json::Value;

use super::*;

fn args(model: &str, input: u64, cached: u64, output: u64) -> EstimateArgs {
    EstimateArgs {
        model: Some(model.to_owned()),
        compare: Vec::new(),
        input,
        cached,
        output,
        requests: 1,
        batch: false,
        tier: None,
        per_month: None,
        file: None,
        json: true,
    }
}

#[allow(clippy::unwrap_used, reason = "test helper")]
fn json_of(args: &EstimateArgs) -> Value {
    serde_json::from_str(&run(args, &Catalog::builtin()).unwrap()).unwrap()
}

/// A JSONL file: blank lines are skipped but still counted in line numbers.
#[allow(clippy::unwrap_used, reason = "test helper")]
fn jsonl(lines: &[&str]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(lines.join("\n").as_bytes()).unwrap();
    file
}

#[test]
fn common_workloads() {
    // Hand-computed: tokens × USD per 1M = µ$; then × 1K, × 100K, × requests.
    // (what, model, input, cached, output, batch, requests,
    //  (catalog entry, variant), [per request, per 1K, per 100K, total])
    let table = [
        // gpt-4o-mini: 1,000 × 0.15 + 300 × 0.60 = 150 + 180 = 330 µ$; × 3 = 990 µ$
        (
            "chatbot reply",
            "gpt-4o-mini-2024-07-18",
            (1_000, 0, 300, false, 3),
            ("gpt-4o-mini", "standard"),
            ["0.00033", "0.33", "33", "0.00099"],
        ),
        // gpt-4.1-nano: 500 × 0.10 + 5 × 0.40 = 50 + 2 = 52 µ$; × 10,000 = $0.52
        (
            "classification",
            "gpt-4.1-nano",
            (500, 0, 5, false, 10_000),
            ("gpt-4.1-nano", "standard"),
            ["0.000052", "0.052", "5.2", "0.52"],
        ),
        // gpt-4o-mini: 1,976 × 0.15 + 1,024 × 0.075 + 400 × 0.60
        // = 296.4 + 76.8 + 240 = 613.2 µ$; × 250 = $0.1533
        (
            "extraction",
            "gpt-4o-mini",
            (3_000, 1_024, 400, false, 250),
            ("gpt-4o-mini", "standard"),
            ["0.0006132", "0.6132", "61.32", "0.1533"],
        ),
        // gpt-4.1-nano batch: 200 × 0.05 + 2 × 0.20 = 10 + 0.4 = 10.4 µ$; × 1M = $10.4
        (
            "routing",
            "gpt-4.1-nano",
            (200, 0, 2, true, 1_000_000),
            ("gpt-4.1-nano", "batch"),
            ["0.0000104", "0.0104", "1.04", "10.4"],
        ),
        // gpt-4o: 8,000 × 2.50 + 500 × 10.00 = 20,000 + 5,000 = 25,000 µ$; × 40 = $1
        (
            "summarization",
            "gpt-4o",
            (8_000, 0, 500, false, 40),
            ("gpt-4o", "standard"),
            ["0.025", "25", "2500", "1"],
        ),
    ];
    for (what, model, (input, cached, output, batch, requests), entry, costs) in table {
        let mut args = args(model, input, cached, output);
        (args.batch, args.requests) = (batch, requests);
        let json = json_of(&args);
        let priced = &json["models"][0];
        assert_eq!(
            (priced["model"].as_str(), priced["resolved"].as_str()),
            (Some(model), Some(entry.0)),
            "{what}"
        );
        assert_eq!(priced["variant"], entry.1, "{what}");
        for (key, want) in ["per_request", "per_1k", "per_100k", "total"]
            .iter()
            .zip(costs)
        {
            assert_eq!(priced["cost"][key], want, "{what}: {key}");
        }
        let text = run(
            &EstimateArgs {
                json: false,
                ..args
            },
            &Catalog::builtin(),
        )
        .unwrap();
        assert!(
            text.contains(&format!("{model} → {} ({}", entry.0, entry.1)),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("per request") && l.ends_with(costs[0])),
            "{text}"
        );
    }
}

#[test]
fn rates_shown_are_the_ones_charged() {
    let mut args = args("gpt-4o", 100, 0, 100);
    assert_eq!(
        json_of(&args)["models"][0]["rates_per_1m"],
        json!({"input": "2.5", "cached_input": "1.25", "output": "10"})
    );
    args.batch = true;
    assert_eq!(
        json_of(&args)["models"][0]["rates_per_1m"],
        json!({"input": "1.25", "cached_input": "1.25", "output": "5"})
    );
}

#[test]
fn the_default_output_is_an_aligned_table() {
    let mut args = args("gpt-4o-mini", 1_000, 0, 300);
    (args.per_month, args.json) = (Some("10000/day".to_owned()), false);
    let text = run(&args, &Catalog::builtin()).unwrap();
    let want = "\
gpt-4o-mini → gpt-4o-mini (standard, as of 2026-04-01)
per request: 1,000 input tokens (0 cached), 300 output tokens
per month: 10000/day = 300,000 requests (a month is 30 days)

USD                       gpt-4o-mini
input / 1M tokens             0.15
cached input / 1M tokens      0.075
output / 1M tokens            0.6

per request                   0.00033
per 1K requests               0.33
per 100K requests            33
per month                    99
";
    assert_eq!(text, want);
}

#[test]
fn per_month() {
    // 330 µ$ per request (1,000 × 0.15 + 300 × 0.60) × requests a month (30 days).
    let table = [
        ("10000/day", 300_000, "99"),
        ("10,000/day", 300_000, "99"),
        ("500/hour", 360_000, "118.8"),
        ("2/minute", 86_400, "28.512"),
        ("1_000_000/month", 1_000_000, "330"),
        ("0/day", 0, "0"),
    ];
    for (rate, requests, cost) in table {
        let mut args = args("gpt-4o-mini", 1_000, 0, 300);
        args.per_month = Some(rate.to_owned());
        let json = json_of(&args);
        assert_eq!(json["per_month"]["requests"], requests, "{rate}");
        assert_eq!(json["per_month"]["days_per_month"], 30, "{rate}");
        assert_eq!(json["models"][0]["cost"]["per_month"], cost, "{rate}");
    }
    for bad in [
        "10000",
        "10000/week",
        "ten/day",
        "-5/day",
        "/day",
        "1.5/day",
        "99999999999999999999/day",
        "999999999999999999/minute",
    ] {
        let mut args = args("gpt-4o-mini", 1_000, 0, 300);
        args.per_month = Some(bad.to_owned());
        let error = run(&args, &Catalog::builtin()).unwrap_err();
        assert!(
            matches!(&error, EstimateError::PerMonth { value, .. } if value == bad),
            "{bad}: {error}"
        );
    }
}

#[test]
fn compare_names_the_cheapest() {
    let mut args = args("gpt-4o-mini", 1_000, 0, 300);
    args.compare = vec![
        "gpt-4.1-nano".to_owned(),
        "gpt-4o".to_owned(),
        "gpt-4o-mini".to_owned(),
    ];
    let json = json_of(&args);
    // 330 µ$ (gpt-4o-mini); 1,000 × 0.10 + 300 × 0.40 = 220 µ$ (gpt-4.1-nano);
    // 1,000 × 2.50 + 300 × 10.00 = 5,500 µ$ (gpt-4o).
    let costs: Vec<&Value> = (0..3)
        .map(|i| &json["models"][i]["cost"]["per_request"])
        .collect();
    assert_eq!(costs, ["0.00033", "0.00022", "0.0055"]);
    // 110 / 330 = 33.33…%, 5,280 / 5,500 = 96%.
    let want = json!({"model": "gpt-4.1-nano", "by": "per_request", "savings": [
        {"versus": "gpt-4o-mini", "difference": "0.00011", "percent": "33.3"},
        {"versus": "gpt-4o", "difference": "0.00528", "percent": "96.0"},
    ]});
    assert_eq!(json["cheapest"], want);
    args.json = false;
    let text = run(&args, &Catalog::builtin()).unwrap();
    let header = text.lines().find(|l| l.starts_with("USD")).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["USD", "gpt-4o-mini", "gpt-4.1-nano", "gpt-4o"]
    );
    assert!(text.contains("cheapest (per request): gpt-4.1-nano\n  0.00011 USD less than gpt-4o-mini (33.3% less)\n"), "{text}");
}

#[test]
fn compare_across_providers() {
    // The RAG workload of the providers chapter: 6,000 input (4,000 cached), 400 output.
    let mut args = args("gpt-4o-mini", 6_000, 4_000, 400);
    args.compare = vec!["claude-haiku-4.5".to_owned(), "gemini-2.5-flash".to_owned()];
    let json = json_of(&args);
    // 2,000 × 0.15 + 4,000 × 0.075 + 400 × 0.60 = 840 µ$;
    // 2,000 × 1.00 + 4,000 × 0.10 + 400 × 5.00 = 4,400 µ$ (the alias resolves);
    // 2,000 × 0.30 + 4,000 × 0.03 + 400 × 2.50 = 1,720 µ$.
    let costs: Vec<&Value> = (0..3)
        .map(|i| &json["models"][i]["cost"]["per_request"])
        .collect();
    assert_eq!(costs, ["0.00084", "0.0044", "0.00172"]);
    assert_eq!(json["cheapest"]["model"], "gpt-4o-mini");
}

#[test]
fn bad_arguments() {
    let catalog = Catalog::builtin();
    let error = run(&args("gpt-4o-mni", 1, 0, 1), &catalog).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("unknown model `gpt-4o-mni`; did you mean gpt-4o-mini"),
        "{message}"
    );
    let mut compare = args("gpt-4o", 1, 0, 1);
    compare.compare = vec!["gpt-9".to_owned()];
    assert!(
        matches!(run(&compare, &catalog), Err(EstimateError::UnknownModel { model, .. }) if model == "gpt-9")
    );
    let error = run(&args("ft:o3-2025-04-16:acme::x", 1, 0, 1), &catalog).unwrap_err();
    assert_eq!(
        error.to_string(),
        "`ft:o3-2025-04-16:acme::x` has no price: `o3` lists no fine-tuned rates"
    );
    let error = run(&args("gpt-4o", 100, 200, 1), &catalog).unwrap_err();
    assert!(matches!(
        error,
        EstimateError::CachedExceedsInput {
            cached: 200,
            input: 100
        }
    ));
    let mut none = args("", 1, 0, 1);
    none.model = None;
    assert!(matches!(run(&none, &catalog), Err(EstimateError::NoModel)));
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there"}],"max_completion_tokens":50}"#;
const BATCH_CHAT: &str = r#"{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Classify: great product"}],"max_tokens":5}}"#;
const UNCAPPED: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku"}]}"#;
const BATCH_EMBED: &str = r#"{"custom_id":"e1","method":"POST","url":"/v1/embeddings","body":{"model":"text-embedding-3-small","input":"hello world"}}"#;

#[test]
fn files_of_requests() {
    // o200k_base, 3 tokens per message + role + content, 3 to prime the reply:
    // "Hello there" 3+1+2+3 = 9; terse/classify (3+1+4)+(3+1+5)+3 = 20;
    // "Write a haiku" 3+1+4+3 = 11; the embedding input "hello world" = 2.
    // Output: caps 50 and 5, --output 100 for the uncapped line, none for embeddings.
    let file = jsonl(&[CHAT, "", BATCH_CHAT, UNCAPPED, BATCH_EMBED, ""]);
    let mut args = args("gpt-4o-mini", 0, 0, 100);
    args.file = Some(file.path().to_owned());
    args.per_month = Some("1000/day".to_owned());
    // 42 × 0.15 + 155 × 0.60 = 6.3 + 93 = 99.3 µ$; / 4 = 24.825 µ$; × 30,000 = $0.74475
    let json = json_of(&args);
    let mini = &json["models"][0];
    let tokens = [
        "requests",
        "prompt_tokens",
        "output_tokens",
        "capped_requests",
    ]
    .map(|k| &mini[k]);
    assert_eq!(tokens, [4, 42, 155, 2]);
    assert_eq!(
        mini["cost"],
        json!({"total": "0.0000993", "average": "0.000024825", "per_month": "0.74475"})
    );
    assert_eq!(json["rounded"], false);
    assert!(
        json["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("output tokens are an upper bound: 2 of 4")
    );
    // Batch rates, two models: 42 × 0.075 + 155 × 0.30 = 49.65 µ$; 42 × 0.05 + 155 × 0.20 = 33.1 µ$.
    (args.batch, args.per_month, args.compare) = (true, None, vec!["gpt-4.1-nano".to_owned()]);
    let json = json_of(&args);
    let totals = [0, 1].map(|i| &json["models"][i]["cost"]["total"]);
    assert_eq!(totals, ["0.00004965", "0.0000331"]);
    assert_eq!(
        json["cheapest"]["savings"][0],
        json!({"versus": "gpt-4o-mini", "difference": "0.00001655", "percent": "33.3"})
    );
    // No --model: each line at its own model. gpt-4o-mini: 40 × 0.15 + 155 × 0.60 = 99 µ$;
    // text-embedding-3-small: 2 × 0.02 = 0.04 µ$; all: 99.04 µ$ over 4 requests.
    (args.model, args.compare, args.batch) = (None, Vec::new(), false);
    let json = json_of(&args);
    let by_model = [0, 1].map(|i| {
        (
            &json["models"][i]["model"],
            &json["models"][i]["cost"]["total"],
        )
    });
    assert_eq!(
        by_model,
        [
            (&json!("gpt-4o-mini"), &json!("0.000099")),
            (&json!("text-embedding-3-small"), &json!("0.00000004"))
        ]
    );
    assert_eq!(
        json["all"]["cost"],
        json!({"total": "0.00009904", "average": "0.00002476"})
    );
    assert!(json.get("cheapest").is_none());
}

#[test]
fn bad_files_name_the_line() {
    let catalog = Catalog::builtin();
    let table = [
        (
            vec![CHAT, "", r#"{"model": "gpt-4o-mini", "messages": ["#],
            "3: not valid JSON",
        ),
        (vec![CHAT, "[1, 2]"], "2: not a JSON object"),
        (
            vec![r#"{"custom_id":"m","url":"/v1/moderations","body":{"input":"x"}}"#],
            "1: `/v1/moderations` is not a priced endpoint",
        ),
        (
            vec![CHAT, r#"{"custom_id":"x","url":"/v1/chat/completions"}"#],
            "2: a Batch API line without a `body` object",
        ),
        (
            vec![r#"{"temperature": 0}"#],
            "1: no `messages`, `prompt` or `input`",
        ),
        (
            vec![CHAT, r#"{"messages":[]}"#],
            "2: the request names no model; pass --model",
        ),
        (
            vec![r#"{"model":"gpt-4o-mni","messages":[]}"#],
            "1: unknown model `gpt-4o-mni`; did you mean gpt-4o-mini",
        ),
    ];
    for (lines, want) in table {
        let file = jsonl(&lines);
        let mut args = args("", 0, 0, 10);
        (args.model, args.file) = (None, Some(file.path().to_owned()));
        let message = run(&args, &catalog).unwrap_err().to_string();
        let at = format!("{}:{want}", file.path().display());
        assert!(message.starts_with(&at), "{message}\nwanted {at}");
    }
    let mut args = args("gpt-4o", 0, 0, 10);
    args.file = Some(PathBuf::from("/nonexistent/requests.jsonl"));
    assert!(matches!(
        run(&args, &catalog),
        Err(EstimateError::Read { .. })
    ));
}

#[test]
fn division_rounds_half_up_and_says_so() {
    // (pico-USD, ×, ÷, result, exact)
    let table = [
        (10, 1, 3, 3, false),
        (20, 1, 3, 7, false),
        (5, 1, 2, 3, false),
        (9, 2, 3, 6, true),
        (7, 5, 0, 0, true),
    ];
    for (pico, num, den, want, exact) in table {
        let got = ratio(Cost::from_pico(pico), num, den).unwrap();
        assert_eq!(
            got,
            (Cost::from_pico(want), exact),
            "{pico} × {num} / {den}"
        );
    }
    assert!(matches!(
        times(Cost::from_pico(u128::MAX), 2),
        Err(EstimateError::Overflow)
    ));
    let percents = [
        (1, 3, "33.3"),
        (2, 3, "66.7"),
        (1, 1, "100.0"),
        (0, 0, "0.0"),
        (1, 2000, "0.1"),
    ];
    for (part, whole, want) in percents {
        assert_eq!(percent(Cost::from_pico(part), Cost::from_pico(whole)), want);
    }
}

#[test]
fn a_service_tier_prices_at_its_sheet_or_says_it_could_not() {
    use crate::cli::EstimateTier;
    // 10,000 input (4,000 cached) and 1,000 output tokens per request, 1,000 requests.
    let mut args = args("o3", 10_000, 4_000, 1_000);
    args.requests = 1_000;
    // (tier, variant, rates, per request): o3 flex 6,000 × 1 + 4,000 × 0.25 + 1,000 × 4
    // = 6,000 + 1,000 + 4,000 µ$; priority 6,000 × 3.5 + 4,000 × 0.875 + 1,000 × 14
    // = 21,000 + 3,500 + 14,000 µ$; default 6,000 × 2 + 4,000 × 0.5 + 1,000 × 8.
    let table = [
        (
            EstimateTier::Flex,
            "flex",
            ["1", "0.25", "4"],
            "0.011",
            "11",
        ),
        (
            EstimateTier::Priority,
            "priority",
            ["3.5", "0.875", "14"],
            "0.0385",
            "38.5",
        ),
        (
            EstimateTier::Default,
            "standard",
            ["2", "0.5", "8"],
            "0.022",
            "22",
        ),
    ];
    for (tier, variant, [input, cached, output], one, total) in table {
        args.tier = Some(tier);
        let json = json_of(&args);
        let priced = &json["models"][0];
        assert_eq!(priced["variant"], variant, "{tier:?}");
        assert_eq!(
            priced["rates_per_1m"],
            json!({"input": input, "cached_input": cached, "output": output}),
            "{tier:?}"
        );
        assert_eq!(priced["cost"]["per_request"], one, "{tier:?}");
        assert_eq!(priced["cost"]["total"], total, "{tier:?}");
        assert_eq!(json["tier"], tier.as_str());
        assert_eq!(json["notes"], json!([]), "{tier:?}");
    }
    assert_eq!(
        json_of(&args)["models"][0]["as_of"],
        "2026-03-01",
        "standard keeps the model's date"
    );
    args.tier = Some(EstimateTier::Flex);
    assert_eq!(json_of(&args)["models"][0]["as_of"], "2026-12-02");

    // Side by side, with a model that offers no flex: priced at standard, and noted.
    args.compare = vec!["gpt-4o-mini".to_owned()];
    let json = json_of(&args);
    assert_eq!(json["models"][1]["variant"], "standard");
    // 6,000 × 0.15 + 4,000 × 0.075 + 1,000 × 0.60 = 900 + 300 + 600 µ$
    assert_eq!(json["models"][1]["cost"]["per_request"], "0.0018");
    let notes = json["notes"].to_string();
    assert!(
        notes.contains("gpt-4o-mini list no flex rates: priced at standard"),
        "{notes}"
    );
    let text = run(
        &EstimateArgs {
            json: false,
            ..args
        },
        &Catalog::builtin(),
    )
    .unwrap();
    assert!(text.contains("o3 → o3 (flex, as of 2026-12-02)"), "{text}");
    assert!(text.contains("service tier: flex"), "{text}");
}
