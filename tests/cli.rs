//! The ledger and price commands, run as a user runs them: the real binary, a config
//! file, and a ledger written by a real tollgate in front of a mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, chat_completion, json};
use serde_json::{Value, json};

fn tollgate(config: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tollgate {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A ledger with two priced gpt-4o-mini requests and one of a model no catalog has.
async fn seeded(dir: &Path) -> std::path::PathBuf {
    let upstream = MockUpstream::start(|request| {
        let model = request.json()["model"].as_str().unwrap().to_owned();
        let mut body = chat_completion(1_000, 200);
        body["model"] = json!(model);
        json(StatusCode::OK, &body)
    })
    .await;
    let db = dir.join("ledger.db");
    let db_url = format!("sqlite://{}", db.display());
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.database.url = db_url.clone();
    })
    .await;
    for model in ["gpt-4o-mini", "gpt-4o-mini", "mystery-model-9"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        tollgate
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(tollgate.rows().await.len(), 3);
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{db_url}\"\n")).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn spend_reports_totals_unpriced_rows_and_a_what_if() {
    let dir = tempfile::tempdir().unwrap();
    let config = seeded(dir.path()).await;

    let report: Value = serde_json::from_str(&tollgate(
        &config,
        &[
            "spend",
            "--by",
            "model",
            "--format",
            "json",
            "--what-if",
            "gpt-4.1-nano",
        ],
    ))
    .unwrap();
    let lines = report["data"].as_array().unwrap();
    let mini = lines.iter().find(|l| l["group"] == "gpt-4o-mini").unwrap();
    // 2 x (1,000 x $0.15 + 200 x $0.60) per 1M = $0.00054; at gpt-4.1-nano's
    // $0.10 / $0.40: 2 x (100 + 80) / 1M = $0.00036.
    assert_eq!(mini["requests"], 2);
    assert_eq!(mini["cost_usd"], "0.00054");
    assert_eq!(mini["what_if_usd"], "0.00036");
    let mystery = lines
        .iter()
        .find(|l| l["group"] == "mystery-model-9")
        .unwrap();
    assert_eq!(
        (
            mystery["unpriced_requests"].as_u64(),
            mystery["unpriced_tokens"].as_u64()
        ),
        (Some(1), Some(1_200))
    );
    assert_eq!(mystery["cost_usd"], "0", "its cost is not counted as spend");

    let table = tollgate(&config, &["spend", "--by", "caller"]);
    assert!(
        table.contains("unpriced_req") && table.contains("0.00054"),
        "{table}"
    );
    let csv = tollgate(&config, &["spend", "--format", "csv"]);
    assert!(csv.starts_with("group,requests,"), "{csv}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reprice_fills_in_rows_once_the_model_has_a_price() {
    let dir = tempfile::tempdir().unwrap();
    let config = seeded(dir.path()).await;
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}[pricing.models.\"mystery-model-9\"]\ninput = \"1\"\noutput = \"2\"\n"),
    )
    .unwrap();

    let said = tollgate(
        &config,
        &[
            "prices",
            "reprice",
            "--model",
            "mystery-model-9",
            "--since",
            "1d",
        ],
    );
    assert!(said.contains("repriced 1 rows"), "{said}");
    let again = tollgate(
        &config,
        &[
            "prices",
            "reprice",
            "--model",
            "mystery-model-9",
            "--since",
            "1d",
        ],
    );
    assert!(
        again.contains("repriced 0 rows"),
        "a reprice never counts twice: {again}"
    );

    let report: Value = serde_json::from_str(&tollgate(
        &config,
        &["spend", "--by", "model", "--format", "json"],
    ))
    .unwrap();
    let mystery = report["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["group"] == "mystery-model-9")
        .unwrap()
        .clone();
    // 1,000 x $1 + 200 x $2 per 1M = $0.0014.
    assert_eq!(mystery["cost_usd"], "0.0014");
    assert_eq!(mystery["unpriced_requests"], 0);
}

#[test]
fn prices_prints_the_catalog_and_imports_a_litellm_map() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(&config, "").unwrap();
    let catalog: Value = serde_json::from_str(&tollgate(&config, &["prices", "--json"])).unwrap();
    assert_eq!(catalog["models"]["gpt-4o-mini"]["output"], "0.6");
    assert!(tollgate(&config, &["prices"]).contains("gpt-4.1-nano"));

    let litellm = dir.path().join("litellm.json");
    std::fs::write(
        &litellm,
        r#"{"sample_spec": {"input_cost_per_token": 0},
            "brand-new-model": {"input_cost_per_token": 2e-07, "output_cost_per_token": 8e-07,
                                "max_input_tokens": 64000, "litellm_provider": "openai", "mode": "chat"}}"#,
    )
    .unwrap();
    let prices = dir.path().join("prices.toml");
    tollgate(
        &config,
        &[
            "prices",
            "import",
            litellm.to_str().unwrap(),
            "--out",
            prices.to_str().unwrap(),
        ],
    );
    std::fs::write(
        &config,
        format!("[pricing]\nfile = \"{}\"\n", prices.display()),
    )
    .unwrap();
    let catalog: Value = serde_json::from_str(&tollgate(&config, &["prices", "--json"])).unwrap();
    assert_eq!(catalog["models"]["brand-new-model"]["input"], "0.2");
    assert_eq!(catalog["models"]["brand-new-model"]["output"], "0.8");
}
