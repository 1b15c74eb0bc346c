//! Service tiers, end to end on SQLite and Postgres: a scripted upstream answers at the
//! tier each test asks for, and every row's requested and served tier, price variant,
//! rates and cost are asserted exactly, as are the rollups and the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::db::backends;
use common::tiered::{TierRow, row, rows, send, tiered_upstream, tollgate_on};
use serde_json::{Value, json};
use tollgate::pricing::AutoTier;

#[tokio::test]
async fn every_row_records_both_tiers_and_is_priced_at_the_one_that_served() {
    for backend in backends().await {
        let upstream = tiered_upstream().await;
        let tollgate = tollgate_on(&backend, &upstream.base_url, false, AutoTier::Default).await;
        let chat = |model: &str, tier: Option<Value>| {
            let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
            if let Some(tier) = tier {
                body["service_tier"] = tier;
            }
            body
        };
        let flex = Some(json!("flex"));
        // (request id, model, tier asked, tier answered, expected row). Usage is
        // 10,000 prompt (4,000 cached) and 1,000 completion tokens throughout; costs
        // are (10,000 − 4,000) × input + 4,000 × cached + 1,000 × output per 1M.
        type Case = (
            &'static str,
            &'static str,
            Option<Value>,
            Option<&'static str>,
            TierRow,
        );
        let cases: Vec<Case> = vec![
            // gpt-5 flex: 6,000 × 0.625 + 4,000 × 0.0625 + 1,000 × 5 = $0.009
            (
                "flex",
                "gpt-5",
                flex.clone(),
                Some("flex"),
                row(
                    Some("flex"),
                    "flex",
                    "flex",
                    ("0.625", "0.0625", "5"),
                    "0.009",
                ),
            ),
            // gpt-5 priority: 6,000 × 2.5 + 4,000 × 0.25 + 1,000 × 20 = $0.036
            (
                "priority",
                "gpt-5",
                Some(json!("priority")),
                Some("priority"),
                row(
                    Some("priority"),
                    "priority",
                    "priority",
                    ("2.5", "0.25", "20"),
                    "0.036",
                ),
            ),
            // auto answered as default: 6,000 × 1.25 + 4,000 × 0.125 + 1,000 × 10 = $0.018
            (
                "auto",
                "gpt-5",
                Some(json!("auto")),
                Some("default"),
                row(
                    Some("auto"),
                    "default",
                    "standard",
                    ("1.25", "0.125", "10"),
                    "0.018",
                ),
            ),
            // flex asked, default served: the served tier prices it.
            (
                "flex-fell-back",
                "gpt-5",
                flex.clone(),
                Some("default"),
                row(
                    Some("flex"),
                    "default",
                    "standard",
                    ("1.25", "0.125", "10"),
                    "0.018",
                ),
            ),
            // An upstream naming no tier: the requested one stands in…
            (
                "flex-unreported",
                "o3",
                flex.clone(),
                None,
                // o3 flex: 6,000 × 1 + 4,000 × 0.25 + 1,000 × 4 = $0.011
                row(Some("flex"), "flex", "flex", ("1", "0.25", "4"), "0.011"),
            ),
            // …and with none asked for either, default. o3: 6,000 × 2 + 4,000 × 0.5 + 8,000.
            (
                "none",
                "o3",
                None,
                None,
                row(None, "default", "standard", ("2", "0.5", "8"), "0.022"),
            ),
            // A model without flex rates, served at flex: standard, and counted.
            // gpt-4o-mini: 6,000 × 0.15 + 4,000 × 0.075 + 1,000 × 0.6 = $0.0018
            (
                "no-flex-sheet",
                "gpt-4o-mini",
                flex.clone(),
                Some("flex"),
                row(
                    Some("flex"),
                    "flex",
                    "standard",
                    ("0.15", "0.075", "0.6"),
                    "0.0018",
                ),
            ),
            // Its priority sheet: 6,000 × 0.25 + 4,000 × 0.125 + 1,000 × 1 = $0.003
            (
                "mini-priority",
                "gpt-4o-mini",
                Some(json!("priority")),
                Some("priority"),
                row(
                    Some("priority"),
                    "priority",
                    "priority",
                    ("0.25", "0.125", "1"),
                    "0.003",
                ),
            ),
            // Unknown and malformed values: forwarded untouched, recorded as given,
            // priced at standard.
            (
                "unknown",
                "gpt-5",
                Some(json!("turbo")),
                None,
                row(
                    Some("turbo"),
                    "default",
                    "standard",
                    ("1.25", "0.125", "10"),
                    "0.018",
                ),
            ),
            (
                "malformed",
                "gpt-5",
                Some(json!(5)),
                None,
                row(
                    Some("5"),
                    "default",
                    "standard",
                    ("1.25", "0.125", "10"),
                    "0.018",
                ),
            ),
            (
                "malformed-object",
                "gpt-5",
                Some(json!({"tier": "flex"})),
                None,
                row(
                    Some(r#"{"tier":"flex"}"#),
                    "default",
                    "standard",
                    ("1.25", "0.125", "10"),
                    "0.018",
                ),
            ),
            // An answer naming a tier no one defines: standard, recorded as answered.
            (
                "answered-unknown",
                "gpt-5",
                flex.clone(),
                Some("mystery"),
                row(
                    Some("flex"),
                    "mystery",
                    "standard",
                    ("1.25", "0.125", "10"),
                    "0.018",
                ),
            ),
        ];
        for (id, model, tier, answered, _) in &cases {
            let mut headers = Vec::new();
            if let Some(answered) = answered {
                headers.push(("x-mock-tier", *answered));
            }
            let body = chat(model, tier.clone());
            let status = send(&tollgate, "/v1/chat/completions", id, &body, &headers).await;
            assert_eq!(status, 200, "{}: {id}", backend.name);
            // Forwarded byte for byte, whatever the tier says.
            assert_eq!(upstream.last().body, body.to_string().as_bytes(), "{id}");
        }
        tollgate.flush().await;
        let store = backend.open().await;
        let got = rows(&store).await;
        for (id, _, _, _, want) in &cases {
            assert_eq!(got.get(*id), Some(want), "{}: {id}", backend.name);
        }

        // Spend by tier: the rollups split the rows by served tier, exactly.
        let by_tier = tollgate.spend("group_by=tier").await;
        let cost = |tier: &str| by_tier[tier]["cost_usd"].as_str().unwrap().to_owned();
        let requests = |tier: &str| by_tier[tier]["requests"].as_u64().unwrap();
        assert_eq!(
            by_tier.keys().collect::<Vec<_>>(),
            ["default", "flex", "mystery", "priority"],
            "{}",
            backend.name
        );
        // default: auto, flex-fell-back, none, unknown, malformed ×2 =
        // 0.018 × 5 + 0.022; flex: 0.009 + 0.011 + 0.0018; priority: 0.036 + 0.003.
        assert_eq!(
            (requests("default"), cost("default")),
            (6, "0.112".to_owned())
        );
        assert_eq!((requests("flex"), cost("flex")), (3, "0.0218".to_owned()));
        assert_eq!(
            (requests("priority"), cost("priority")),
            (2, "0.039".to_owned())
        );
        assert_eq!(cost("mystery"), "0.018");

        // The spend metric carries the served tier's label (unknown names as `other`),
        // each series equal to its rows' sum; tiers a model lacks are counted.
        let metrics = tollgate.metrics_text().await;
        let series = |model: &str, tier: &str| {
            let prefix = "tollgate_cost_usd_total{key=\"";
            metrics
                .lines()
                .filter(|l| l.starts_with(prefix))
                .filter(|l| {
                    l.contains(&format!("model=\"{model}\""))
                        && l.contains(&format!("service_tier=\"{tier}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(series("gpt-5", "flex"), ["0.009"], "{metrics}");
        assert_eq!(series("gpt-5", "default"), ["0.09"], "{metrics}");
        assert_eq!(series("gpt-5", "other"), ["0.018"], "{metrics}");
        assert_eq!(series("o3", "flex"), ["0.011"], "{metrics}");
        assert_eq!(series("gpt-4o-mini", "flex"), ["0.0018"], "{metrics}");
        for line in [
            "tollgate_unpriced_tier_total{model=\"gpt-4o-mini\",tier=\"flex\"} 1",
            "tollgate_unpriced_tier_total{model=\"gpt-5\",tier=\"other\"} 1",
        ] {
            assert!(metrics.contains(line), "missing {line}:\n{metrics}");
        }
        assert!(
            !metrics.contains("turbo") && !metrics.contains("mystery"),
            "made-up tiers never become labels: {metrics}"
        );
    }
}

#[tokio::test]
async fn streams_and_responses_are_priced_at_the_last_tier_they_name() {
    for backend in backends().await {
        let upstream = tiered_upstream().await;
        let tollgate = tollgate_on(&backend, &upstream.base_url, false, AutoTier::Default).await;
        let stream = |tier: &str| {
            json!({"model": "gpt-5", "stream": true, "service_tier": tier,
                   "messages": [{"role": "user", "content": "hi"}]})
        };
        let responses = |stream: bool| json!({"model": "o3", "stream": stream, "service_tier": "flex", "input": "hi"});
        // (id, path, body, headers, expected row)
        let cases = [
            // Every chunk says flex, the usage chunk names none: flex.
            (
                "stream-flex",
                "/v1/chat/completions",
                stream("flex"),
                vec![("x-mock-chunk-tiers", "flex,flex,flex")],
                row(
                    Some("flex"),
                    "flex",
                    "flex",
                    ("0.625", "0.0625", "5"),
                    "0.009",
                ),
            ),
            // The tier changes mid-stream; the last chunk naming one (the usage chunk)
            // wins, whatever the deferred chunks before it said.
            (
                "stream-changed",
                "/v1/chat/completions",
                stream("auto"),
                vec![
                    ("x-mock-chunk-tiers", "flex,priority,-"),
                    ("x-mock-tier", "default"),
                ],
                row(
                    Some("auto"),
                    "default",
                    "standard",
                    ("1.25", "0.125", "10"),
                    "0.018",
                ),
            ),
            (
                "stream-last-content",
                "/v1/chat/completions",
                stream("priority"),
                vec![("x-mock-chunk-tiers", "default,default,priority,-")],
                row(
                    Some("priority"),
                    "priority",
                    "priority",
                    ("2.5", "0.25", "20"),
                    "0.036",
                ),
            ),
            // Responses: the response object's field, and a stream's response.completed
            // over the `auto` its response.created echoed.
            (
                "responses",
                "/v1/responses",
                responses(false),
                vec![("x-mock-tier", "flex")],
                row(Some("flex"), "flex", "flex", ("1", "0.25", "4"), "0.011"),
            ),
            (
                "responses-stream",
                "/v1/responses",
                responses(true),
                vec![("x-mock-tier", "default")],
                row(
                    Some("flex"),
                    "default",
                    "standard",
                    ("2", "0.5", "8"),
                    "0.022",
                ),
            ),
        ];
        for (id, path, body, headers, _) in &cases {
            let status = send(&tollgate, path, id, body, headers).await;
            assert_eq!(status, 200, "{}: {id}", backend.name);
        }
        tollgate.flush().await;
        let got = rows(&backend.open().await).await;
        for (id, _, _, _, want) in &cases {
            assert_eq!(got.get(*id), Some(want), "{}: {id}", backend.name);
        }
    }
}

/// `tollgate ARGS` with a config whose ledger is `url`; stdout, or a panic with stderr.
fn command(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{url}\"\n")).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[track_caller]
fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_commands_price_show_and_total_the_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("cli.db").display());
    // The catalog's tier columns.
    let prices = stdout(&command(dir.path(), &sqlite, &["prices"]));
    let header = prices.lines().find(|l| l.starts_with("model")).unwrap();
    assert!(
        header.contains("flex in") && header.contains("prio out"),
        "{header}"
    );
    // An estimate at a tier: o3 at flex, 6,000 × 1 + 4,000 × 0.25 + 1,000 × 4 = $0.011.
    let args = [
        "estimate", "--model", "o3", "--input", "10000", "--cached", "4000", "--output", "1000",
    ];
    let flex: Value = serde_json::from_str(&stdout(&command(
        dir.path(),
        &sqlite,
        &[&args[..], &["--tier", "flex", "--json"]].concat(),
    )))
    .unwrap();
    assert_eq!(flex["models"][0]["variant"], "flex");
    assert_eq!(flex["models"][0]["cost"]["per_request"], "0.011");
    let refused = command(
        dir.path(),
        &sqlite,
        &[&args[..], &["--tier", "flex", "--batch"]].concat(),
    );
    assert!(!refused.status.success(), "--tier and --batch together");
    let bad = command(
        dir.path(),
        &sqlite,
        &[&args[..], &["--tier", "turbo"]].concat(),
    );
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && said.contains("flex"), "{said}");

    // spend --by tier reads the rollups, on each backend.
    for backend in backends().await {
        let upstream = tiered_upstream().await;
        let tollgate = tollgate_on(&backend, &upstream.base_url, false, AutoTier::Default).await;
        for (id, tier, answered) in [
            ("a", "flex", "flex"),
            ("b", "flex", "default"),
            ("c", "priority", "priority"),
        ] {
            let body = json!({"model": "gpt-5", "service_tier": tier, "messages": []});
            let headers = [("x-mock-tier", answered)];
            let status = send(&tollgate, "/v1/chat/completions", id, &body, &headers).await;
            assert_eq!(status, 200);
        }
        tollgate.flush().await;
        let json: Value = serde_json::from_str(&stdout(&command(
            dir.path(),
            &backend.url,
            &["spend", "--by", "tier", "--format", "json"],
        )))
        .unwrap();
        let lines: Vec<(&str, u64, &str)> = json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["group"].as_str().unwrap(),
                    l["requests"].as_u64().unwrap(),
                    l["cost_usd"].as_str().unwrap(),
                )
            })
            .collect();
        // gpt-5 at default $0.018, flex $0.009, priority $0.036 a request (see above).
        assert_eq!(
            lines,
            [
                ("default", 1, "0.018"),
                ("flex", 1, "0.009"),
                ("priority", 1, "0.036")
            ],
            "{}",
            backend.name
        );
    }
}
