//! The ledger and price commands, run as a user runs them: the real binary, a config
//! file, and a ledger written by a real tollgate in front of a mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use common::db::backends;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, chat_completion, json};
use serde_json::{Value, json};
use tollgate::auth::{secret, store};
use tollgate::clock::now_ms;
use tollgate::ledger::LedgerRow;
use tollgate::metering::Usage;

fn run(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn tollgate(config: &Path, args: &[&str]) -> String {
    let output = run(config, args);
    assert!(
        output.status.success(),
        "tollgate {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail; returns what it said on stderr.
#[track_caller]
fn tollgate_fails(config: &Path, args: &[&str]) -> String {
    let output = run(config, args);
    assert!(
        !output.status.success(),
        "tollgate {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

fn tollgate_json(config: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    serde_json::from_str(&tollgate(config, &args)).unwrap()
}

/// A config file whose ledger is `url`.
fn config_for(dir: &Path, url: &str) -> std::path::PathBuf {
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{url}\"\n")).unwrap();
    config
}

#[track_caller]
fn assert_key_shaped(secret: &str) {
    assert!(
        secret.len() == 46
            && secret.starts_with("tg-")
            && secret[3..].bytes().all(|b| b.is_ascii_alphanumeric()),
        "not a tg- key: {secret:?}"
    );
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
    // The row's rates are the ones charged, cache writes included (none configured:
    // they would pay the input rate), in micro-USD per 1M tokens.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("ledger.db").display()
    ))
    .await
    .unwrap();
    let rates: (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT input_rate, output_rate, cache_write_rate FROM requests \
         WHERE model_requested = 'mystery-model-9'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rates, (Some(1_000_000), Some(2_000_000), Some(1_000_000)));
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

#[tokio::test(flavor = "multi_thread")]
async fn teams_and_keys_are_created_listed_and_revoked_on_each_backend() {
    for backend in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), &backend.url);
        let on = backend.name;

        let team = tollgate_json(
            &config,
            &[
                "teams",
                "create",
                "acme",
                "--tier",
                "tier-1",
                "--budget-usd",
                "100",
                "--budget-period",
                "weekly",
            ],
        );
        assert_eq!(
            (
                &team["name"],
                &team["tier"],
                &team["budget_usd"],
                &team["budget_period"]
            ),
            (
                &json!("acme"),
                &json!("tier-1"),
                &json!("100"),
                &json!("weekly")
            ),
            "{on}"
        );
        let said = tollgate(&config, &["teams", "create", "globex"]);
        assert!(said.starts_with("created team globex"), "{on}: {said}");
        let teams = tollgate_json(&config, &["teams", "list"]);
        let names: Vec<&str> = teams["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["acme", "globex"], "{on}");
        assert!(tollgate(&config, &["teams", "list"]).contains("100 USD weekly"));

        // The key alone on the first line, for `| head -1`.
        let created = tollgate(
            &config,
            &[
                "keys",
                "create",
                "--team",
                "acme",
                "--name",
                "ci",
                "--rpm",
                "60",
                "--budget-usd",
                "12.5",
                "--allowed-models",
                "gpt-4o-mini,o3*",
                "--expires-at",
                "30d",
            ],
        );
        let first = created.lines().next().unwrap();
        assert_key_shaped(first);
        assert_eq!(created.matches(first).count(), 1, "shown once: {created}");
        assert!(created.contains("shown only this once"), "{created}");

        // The printed key is the stored one: its hash is what the store holds.
        let store = backend.open().await;
        let record = store::find_key(&store, &first[..11])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.hash, secret::hash(first), "{on}");
        assert_eq!((record.team.as_str(), record.name.as_str()), ("acme", "ci"));
        assert_eq!(record.rpm, Some(60));
        assert_eq!(record.budget.map(|b| b.limit_micros), Some(12_500_000));
        assert_eq!(
            record.allowed_models,
            Some(vec!["gpt-4o-mini".to_owned(), "o3*".to_owned()])
        );
        let expires = record.expires_ms.unwrap();
        let month = 30 * 86_400_000;
        assert!(
            expires > now_ms() + month - 600_000 && expires <= now_ms() + month,
            "30d is ahead of now: {expires}"
        );

        let second = tollgate_json(
            &config,
            &["keys", "create", "--team", team["id"].as_str().unwrap()],
        );
        let second_secret = second["key"].as_str().unwrap();
        assert_key_shaped(second_secret);
        assert_eq!(second["team"], "acme", "{on}");
        assert_eq!(
            second["name"], second["prefix"],
            "a key is named by its prefix by default"
        );

        let hash = hex::encode(record.hash);
        let table = tollgate(&config, &["keys", "list"]);
        let listed = tollgate(
            &config,
            &["keys", "list", "--team", "acme", "--format", "json"],
        );
        for text in [&table, &listed] {
            assert!(
                !text.contains(first) && !text.contains(second_secret) && !text.contains(&hash),
                "a list never shows a secret or its hash: {text}"
            );
        }
        let listed: Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{on}");
        let globex = tollgate_json(&config, &["keys", "list", "--team", "globex"]);
        assert_eq!(globex["data"], json!([]), "{on}");

        let prefix = &first[..11];
        let said = tollgate(&config, &["keys", "revoke", prefix]);
        assert!(
            said.starts_with(&format!("revoked {prefix} (ci)")),
            "{said}"
        );
        let again = tollgate(&config, &["keys", "revoke", &record.id]);
        assert!(again.contains("already revoked"), "{again}");
        let table = tollgate(&config, &["keys", "list"]);
        let line = |prefix: &str| -> String {
            table
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap()
                .to_owned()
        };
        assert!(line(prefix).ends_with("revoked"), "{on}: {table}");
        assert!(
            line(&second_secret[..11]).ends_with("active"),
            "{on}: {table}"
        );
        let listed = tollgate_json(&config, &["keys", "list"]);
        let revoked = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["prefix"] == prefix)
            .unwrap();
        assert!(revoked["revoked_ms"].is_i64(), "{on}: {revoked}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let config = config_for(dir.path(), &url);
    tollgate(&config, &["teams", "create", "acme"]);
    tollgate(
        &config,
        &["keys", "create", "--team", "acme", "--name", "ci"],
    );

    let refusals: [(&[&str], &[&str]); 11] = [
        (
            &["teams", "create", "acme"],
            &["a team named `acme` already exists"],
        ),
        (
            &["keys", "create", "--team", "acme", "--name", "ci"],
            &["a key named `ci` already exists"],
        ),
        (
            &["teams", "create", "b", "--tier", "gold"],
            &["invalid --tier", "unknown tier `gold`", "tier-1"],
        ),
        (
            &["teams", "create", "b", "--budget-usd", "1.0000001"],
            &["invalid --budget-usd", "more than 6 decimal places"],
        ),
        (
            &["teams", "create", "b", "--budget-usd=-5"],
            &["invalid --budget-usd", "`-5`"],
        ),
        (
            &[
                "teams",
                "create",
                "b",
                "--budget-usd",
                "5",
                "--budget-period",
                "yearly",
            ],
            &["invalid --budget-period", "`yearly`"],
        ),
        (&["teams", "create", " "], &["invalid team name"]),
        (
            &["keys", "create", "--team", "nosuch"],
            &["invalid --team", "no team `nosuch`"],
        ),
        (
            &["keys", "create", "--team", "acme", "--expires-at", "soon"],
            &["invalid --expires-at", "`soon`"],
        ),
        (
            &[
                "keys",
                "create",
                "--team",
                "acme",
                "--allowed-models",
                "gpt-4o,[",
            ],
            &["invalid --allowed-models", "`[`"],
        ),
        (&["keys", "list", "--team", "nosuch"], &["no team `nosuch`"]),
    ];
    for (args, expected) in refusals {
        let said = tollgate_fails(&config, args);
        for part in expected {
            assert!(said.contains(part), "tollgate {args:?} said: {said}");
        }
    }
    assert!(tollgate_fails(&config, &["keys", "revoke", "tg-nothing"]).contains("no key"));
    let said = tollgate_fails(
        &config,
        &["keys", "create", "--team", "acme", "--rpm", "many"],
    );
    assert!(said.contains("--rpm"), "{said}");

    // Nothing refused was stored.
    assert_eq!(
        tollgate_json(&config, &["teams", "list"])["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        tollgate_json(&config, &["keys", "list"])["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A ledger row for `key` in `team`, priced by the built-in catalog (unpriced if it
/// does not know the model).
fn spent(id: &str, ts_ms: i64, key: &Value, model: &str, usage: Usage) -> LedgerRow {
    LedgerRow {
        ts_ms,
        caller: key["prefix"].as_str().unwrap().to_owned(),
        model_requested: Some(model.to_owned()),
        price: common::rows::priced(None, Some(model), &usage),
        usage,
        key_id: Some(key["id"].as_str().unwrap().to_owned()),
        team_id: Some(key["team_id"].as_str().unwrap().to_owned()),
        ..common::rows::row(id)
    }
}

fn tokens(prompt: u64, cached: u64, completion: u64) -> Usage {
    common::rows::usage(prompt, cached, completion)
}

#[tokio::test(flavor = "multi_thread")]
async fn spend_by_team_and_key_totals_the_rollups_exactly_on_each_backend() {
    for backend in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), &backend.url);
        let on = backend.name;
        tollgate(&config, &["teams", "create", "acme"]);
        tollgate(&config, &["teams", "create", "globex"]);
        let key = |team: &str, name: &str| {
            tollgate_json(&config, &["keys", "create", "--team", team, "--name", name])
        };
        let (acme_a, acme_b, globex_a) = (key("acme", "a"), key("acme", "b"), key("globex", "a"));

        let now = now_ms();
        let store = backend.open().await;
        store
            .insert(&[
                // gpt-4o-mini, $0.15 / $0.075 / $0.60 per 1M: 1,000 in + 75 out = $0.000195.
                spent(
                    "1",
                    now - 3_600_000,
                    &acme_a,
                    "gpt-4o-mini",
                    tokens(1_000, 0, 75),
                ),
                spent(
                    "2",
                    now - 60_000,
                    &acme_a,
                    "gpt-4o-mini",
                    tokens(1_000, 0, 75),
                ),
                // 800 x 0.15 + 200 x 0.075 + 75 x 0.6 = $0.00018.
                spent(
                    "3",
                    now - 60_000,
                    &acme_b,
                    "gpt-4o-mini",
                    tokens(1_000, 200, 75),
                ),
                // Served through an Azure upstream.
                LedgerRow {
                    provider: "azure".to_owned(),
                    ..spent(
                        "4",
                        now - 60_000,
                        &globex_a,
                        "gpt-4o-mini",
                        tokens(1_000, 0, 75),
                    )
                },
                spent(
                    "5",
                    now - 60_000,
                    &globex_a,
                    "mystery-model-9",
                    tokens(500, 0, 50),
                ),
                // Outside the default 30 days.
                spent(
                    "6",
                    now - 40 * 86_400_000,
                    &acme_a,
                    "gpt-4o-mini",
                    tokens(1_000, 0, 75),
                ),
            ])
            .await
            .unwrap();

        let by_team = tollgate_json(&config, &["spend", "--by", "team"]);
        assert_eq!(
            by_team,
            json!({"data": [
                {"group": "acme", "requests": 3, "prompt_tokens": 3_000, "cached_tokens": 200,
                 "completion_tokens": 225, "reasoning_tokens": 0, "cost_usd": "0.00057",
                 "unpriced_requests": 0, "unpriced_tokens": 0},
                {"group": "globex", "requests": 2, "prompt_tokens": 1_500, "cached_tokens": 0,
                 "completion_tokens": 125, "reasoning_tokens": 0, "cost_usd": "0.000195",
                 "unpriced_requests": 1, "unpriced_tokens": 550},
            ]}),
            "{on}"
        );

        let by_key = tollgate_json(&config, &["spend", "--by", "key"]);
        let cost_of = |key: &Value| {
            by_key["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["group"] == key["prefix"])
                .map(|l| (l["requests"].clone(), l["cost_usd"].clone()))
        };
        assert_eq!(cost_of(&acme_a), Some((json!(2), json!("0.00039"))), "{on}");
        assert_eq!(cost_of(&acme_b), Some((json!(1), json!("0.00018"))), "{on}");
        assert_eq!(
            cost_of(&globex_a),
            Some((json!(2), json!("0.000195"))),
            "{on}"
        );

        let by_provider = tollgate_json(&config, &["spend", "--by", "provider"]);
        let line_of = |group: &str| {
            by_provider["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["group"] == group)
                .map(|l| {
                    (
                        l["requests"].clone(),
                        l["cost_usd"].clone(),
                        l["unpriced_requests"].clone(),
                    )
                })
        };
        assert_eq!(
            line_of("openai"),
            Some((json!(4), json!("0.00057"), json!(1))),
            "{on}: {by_provider}"
        );
        assert_eq!(
            line_of("azure"),
            Some((json!(1), json!("0.000195"), json!(0))),
            "{on}: {by_provider}"
        );
        assert_eq!(by_provider["data"].as_array().unwrap().len(), 2, "{on}");

        let all_time = tollgate_json(&config, &["spend", "--by", "team", "--since", "60d"]);
        assert_eq!(all_time["data"][0]["requests"], 4, "{on}");
        assert_eq!(all_time["data"][0]["cost_usd"], "0.000765", "{on}");

        let csv = tollgate(&config, &["spend", "--by", "team", "--format", "csv"]);
        assert!(
            csv.lines()
                .any(|l| l == "acme,3,3000,200,225,0,0.00057,0,0,"),
            "{on}: {csv}"
        );
        // At gpt-4.1-nano's $0.10 / $0.025 / $0.40: 2,800 x 0.1 + 200 x 0.025 + 225 x 0.4
        // = $0.000375 for acme.
        let table = tollgate(
            &config,
            &["spend", "--by", "team", "--what-if", "gpt-4.1-nano"],
        );
        let acme = table.lines().find(|l| l.starts_with("acme")).unwrap();
        assert!(
            acme.split_whitespace().any(|cell| cell == "0.000375"),
            "{on}: {table}"
        );
    }
}

#[test]
fn a_tier_from_the_config_is_a_valid_tier_for_teams_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = \"{url}\"\n[limits.tiers.gold]\nrpm = 50\ntpm = 90000\n"),
    )
    .unwrap();
    let team = tollgate_json(&config, &["teams", "create", "acme", "--tier", "gold"]);
    assert_eq!(team["tier"], "gold");
    let key = tollgate_json(
        &config,
        &["keys", "create", "--team", "acme", "--tier", "gold"],
    );
    assert_eq!(key["tier"], "gold", "{key}");
    let refused = tollgate_fails(&config, &["teams", "create", "b", "--tier", "silver"]);
    assert!(refused.contains("gold"), "{refused}");
}
