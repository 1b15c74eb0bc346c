//! Reconciliation against a scripted OpenAI Usage and Costs API on 127.0.0.1:0 (paged,
//! two models tollgate saw, one it never saw, a web-search charge it does not meter)
//! and a ledger with known rows on SQLite and Postgres: the report's lines, its
//! differences and notes, the exact JSON and CSV, and the real binary's exit status;
//! the failures (401, 500 then success, 500 for good, not JSON, pages without end, a
//! project key, a silent server), the admin route, and the scheduled run's metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use common::db::backends;
use common::harness::{Harness, assert_openai_error, silent_url};
use common::mock_upstream::{MockUpstream, Received, chat_completion, json};
use common::org_api::{Export, bucket, cost, day_s, endpoint, page, query, usage};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::clock::now_ms;
use tollgate::ledger::{Kind, LedgerRow, Outcome, Store};
use tollgate::metering::UsageSource;

const ADMIN_API_KEY: &str = "sk-admin-test-9f3c";
const D1: &str = "2026-11-02";
const D2: &str = "2026-11-03";

/// What OpenAI's export says about 2026-11-02 and -03: gpt-4o-mini with 20 more output
/// tokens on the 2nd than tollgate has (tollgate estimated one request), gpt-4o
/// matching, gpt-4.1-nano that never went through tollgate, and web search calls.
fn export() -> Export {
    let (d1, d2) = (day_s(D1), day_s(D2));
    Export::default()
        .with(
            "completions",
            vec![
                page(
                    vec![bucket(
                        d1,
                        vec![
                            usage("gpt-4o-mini-2024-07-18", 2, 3000, 200, 1520),
                            usage("gpt-4o-2024-08-06", 1, 1000, 0, 100),
                        ],
                    )],
                    Some("page_2"),
                ),
                page(
                    vec![bucket(
                        d2,
                        vec![
                            usage("gpt-4o-mini-2024-07-18", 1, 4000, 0, 2000),
                            usage("gpt-4.1-nano-2025-04-14", 3, 300, 0, 30),
                        ],
                    )],
                    None,
                ),
            ],
        )
        .with(
            "embeddings",
            vec![page(vec![bucket(d1, vec![]), bucket(d2, vec![])], None)],
        )
        .with(
            "costs",
            vec![
                page(
                    vec![bucket(
                        d1,
                        vec![
                            cost("gpt-4o-mini-2024-07-18, input", 0.00042),
                            // Written as 1.5e-5: read from its text, exactly.
                            cost("gpt-4o-mini-2024-07-18, cached input", 0.000015),
                            cost("gpt-4o-mini-2024-07-18, output", 0.000912),
                            cost("gpt-4o-2024-08-06, input", 0.0025),
                            cost("gpt-4o-2024-08-06, output", 0.001),
                            cost("web search tool calls", 0.01),
                        ],
                    )],
                    Some("page_2"),
                ),
                page(
                    vec![bucket(
                        d2,
                        vec![
                            cost("gpt-4o-mini-2024-07-18, input", 0.0006),
                            cost("gpt-4o-mini-2024-07-18, output", 0.0012),
                            cost("gpt-4.1-nano-2025-04-14, input", 0.00003),
                            cost("gpt-4.1-nano-2025-04-14, output", 0.000012),
                        ],
                    )],
                    None,
                ),
            ],
        )
}

async fn org_api() -> MockUpstream {
    let export = export();
    MockUpstream::start(move |received| export.answer(received)).await
}

/// A ledger row at `hour` of `day`, priced by the built-in catalog.
#[allow(clippy::too_many_arguments)]
fn row(
    id: &str,
    day: &str,
    upstream: &str,
    answered: &str,
    (prompt, cached, completion): (u64, u64, u64),
    source: UsageSource,
    outcome: Outcome,
) -> LedgerRow {
    let usage = common::rows::usage(prompt, cached, completion);
    let requested = answered.split("-2024").next().unwrap();
    let price = common::rows::priced(Some(answered), Some(requested), &usage);
    LedgerRow {
        id: id.to_owned(),
        request_id: format!("req-{id}"),
        upstream_request_id: None,
        ts_ms: day_s(day) * 1000 + 5 * 3_600_000,
        caller: "fp:test".to_owned(),
        upstream: upstream.to_owned(),
        endpoint: "chat.completions".to_owned(),
        model_requested: Some(requested.to_owned()),
        model_answered: Some(answered.to_owned()),
        streamed: false,
        usage,
        usage_source: source,
        status: if outcome == Outcome::UpstreamError {
            400
        } else {
            200
        },
        outcome,
        latency_ms: 1,
        ttfb_ms: Some(1),
        price,
        key_id: None,
        team_id: None,
        kind: Kind::Realtime,
        service_tier_requested: None,
        service_tier: None,
        route: Default::default(),
        provider: "openai".to_owned(),
        tokenizer: None,
    }
}

/// The ledger: gpt-4o-mini $0.000435 + $0.0009 (estimated, client gone) and gpt-4o
/// $0.0035 on the 2nd, gpt-4o-mini $0.0018 and an unpriced house-llama on the 3rd; a
/// request OpenAI refused and one to a local upstream, both left out.
async fn seed(store: &Store) {
    use Outcome::{ClientDisconnected, Ok, UpstreamError};
    use UsageSource::{Estimated, Upstream};
    let mini = "gpt-4o-mini-2024-07-18";
    store
        .insert(&[
            row("1", D1, "openai", mini, (1000, 200, 500), Upstream, Ok),
            row(
                "2",
                D1,
                "openai",
                mini,
                (2000, 0, 1000),
                Estimated,
                ClientDisconnected,
            ),
            row(
                "3",
                D1,
                "openai",
                "gpt-4o-2024-08-06",
                (1000, 0, 100),
                Upstream,
                Ok,
            ),
            row("4", D1, "openai", mini, (0, 0, 0), Upstream, UpstreamError),
            row("5", D1, "local", mini, (5000, 0, 100), Upstream, Ok),
            row("6", D2, "openai", mini, (4000, 0, 2000), Upstream, Ok),
            row("7", D2, "openai", "house-llama", (50, 0, 5), Upstream, Ok),
        ])
        .await
        .unwrap();
}

/// The config file: the ledger, an OpenAI upstream and a local one, the org API mock.
fn config_file(dir: &Path, db_url: &str, org_url: &str, extra: &str) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"{db_url}\"\n\
             [[upstreams]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             models = [\"house-*\"]\n\
             [[upstreams]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n\
             [reconcile]\nbase_url = \"{org_url}\"\nretry_backoff = \"1ms\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn tollgate(config: &Path, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .arg("--config")
        .arg(config)
        .arg("reconcile")
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env_remove("OPENAI_ADMIN_KEY")
        .env("RUST_LOG", "warn");
    if let Some(key) = key {
        command.env("OPENAI_ADMIN_KEY", key);
    }
    command.output().unwrap()
}

#[track_caller]
fn exits(output: &Output, code: i32) -> (String, String) {
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// A compared figure as the JSON writes it.
fn fig(provider: Value, tollgate: Value, diff: Value, percent: Value) -> Value {
    json!({"provider": provider, "tollgate": tollgate, "diff": diff, "diff_percent": percent})
}

#[allow(clippy::too_many_arguments)]
fn line(
    day: Option<&str>,
    model: Option<&str>,
    only: Option<&str>,
    within: bool,
    figures: [Value; 5],
    estimated: (u64, u64, u64),
    unpriced: u64,
    note: Option<&str>,
) -> Value {
    let [requests, input, cached, output, usd] = figures;
    let message = note.map(|code| {
        let lines = expected_notes();
        json!({"code": code, "message": lines[code]})
    });
    json!({
        "day": day, "model": model, "only": only, "within_tolerance": within,
        "requests": requests, "input_tokens": input, "cached_tokens": cached,
        "output_tokens": output, "usd": usd,
        "estimated": {"requests": estimated.0, "input_tokens": estimated.1,
                      "output_tokens": estimated.2},
        "unpriced_requests": unpriced,
        "note": message,
    })
}

fn expected_notes() -> Value {
    json!({
        "only_provider": "only in OpenAI's export: traffic that did not pass through tollgate (another key, or an endpoint tollgate does not meter), or a model name the catalog does not resolve (add it under [pricing.aliases])",
        "only_tollgate": "only in tollgate's ledger: requests OpenAI did not bill to this organization (an upstream that is not OpenAI: see --upstream), or a model OpenAI names otherwise (add it under [pricing.aliases])",
        "estimated": "some of tollgate's usage here was estimated (a client hung up or the upstream sent no usage): estimates undercount reasoning and tool tokens",
        "unpriced": "some of tollgate's requests here have no price (cost unknown, not $0): price the model, then `tollgate prices reprice`",
    })
}

/// The report by day and model, whole.
fn expected_by_day_and_model() -> Value {
    let n = |v: i64| json!(v);
    let s = |v: &str| json!(v);
    let null = Value::Null;
    let matching = |requests: i64, input: i64, cached: i64, output: i64, usd: &str| {
        let same = |v: i64| {
            let percent = if v == 0 { Value::Null } else { s("0.0000") };
            fig(n(v), n(v), n(0), percent)
        };
        [
            same(requests),
            same(input),
            same(cached),
            same(output),
            fig(s(usd), s(usd), s("0"), s("0.0000")),
        ]
    };
    json!({
        "object": "tollgate.reconciliation",
        "since": D1,
        "until": D2,
        "by": "day,model",
        "tolerance_percent": "0.5",
        "upstreams": ["openai"],
        "within_tolerance": false,
        "lines_out_of_tolerance": 3,
        "lines": [
            line(Some(D1), Some("gpt-4o"), None, true, matching(1, 1000, 0, 100, "0.0035"),
                (0, 0, 0), 0, None),
            line(Some(D1), Some("gpt-4o-mini"), None, false, [
                fig(n(2), n(2), n(0), s("0.0000")),
                fig(n(3000), n(3000), n(0), s("0.0000")),
                fig(n(200), n(200), n(0), s("0.0000")),
                fig(n(1520), n(1500), n(-20), s("-1.3158")),
                fig(s("0.001347"), s("0.001335"), s("-0.000012"), s("-0.8909")),
            ], (1, 2000, 1000), 0, Some("estimated")),
            line(Some(D2), Some("gpt-4.1-nano"), Some("provider"), false, [
                fig(n(3), null.clone(), n(-3), s("-100.0000")),
                fig(n(300), null.clone(), n(-300), s("-100.0000")),
                fig(n(0), null.clone(), n(0), null.clone()),
                fig(n(30), null.clone(), n(-30), s("-100.0000")),
                fig(s("0.000042"), null.clone(), s("-0.000042"), s("-100.0000")),
            ], (0, 0, 0), 0, Some("only_provider")),
            line(Some(D2), Some("gpt-4o-mini"), None, true, matching(1, 4000, 0, 2000, "0.0018"),
                (0, 0, 0), 0, None),
            line(Some(D2), Some("house-llama"), Some("tollgate"), false, [
                fig(null.clone(), n(1), n(1), null.clone()),
                fig(null.clone(), n(50), n(50), null.clone()),
                fig(null.clone(), n(0), n(0), null.clone()),
                fig(null.clone(), n(5), n(5), null.clone()),
                fig(null.clone(), s("0"), s("0"), null.clone()),
            ], (0, 0, 0), 1, Some("only_tollgate")),
        ],
        "total": line(None, None, None, false, [
            fig(n(7), n(5), n(-2), s("-28.5714")),
            fig(n(8300), n(8050), n(-250), s("-3.0120")),
            fig(n(200), n(200), n(0), s("0.0000")),
            fig(n(3650), n(3605), n(-45), s("-1.2329")),
            fig(s("0.006689"), s("0.006635"), s("-0.000054"), s("-0.8073")),
        ], (1, 2000, 1000), 1, Some("unpriced")),
        "unmetered": [{"day": D1, "line_item": "web search tool calls", "usd": "0.01"}],
        "unmetered_usd": "0.01",
    })
}

const EXPECTED_CSV_BY_MODEL: &str = "\
row,day,model,only,within_tolerance,requests_provider,requests_tollgate,requests_diff,requests_diff_percent,input_tokens_provider,input_tokens_tollgate,input_tokens_diff,input_tokens_diff_percent,cached_tokens_provider,cached_tokens_tollgate,cached_tokens_diff,cached_tokens_diff_percent,output_tokens_provider,output_tokens_tollgate,output_tokens_diff,output_tokens_diff_percent,usd_provider,usd_tollgate,usd_diff,usd_diff_percent,estimated_requests,estimated_input_tokens,estimated_output_tokens,unpriced_requests,note
line,,gpt-4.1-nano,provider,false,3,,-3,-100.0000,300,,-300,-100.0000,0,,0,,30,,-30,-100.0000,0.000042,,-0.000042,-100.0000,0,0,0,0,only_provider
line,,gpt-4o,,true,1,1,0,0.0000,1000,1000,0,0.0000,0,0,0,,100,100,0,0.0000,0.0035,0.0035,0,0.0000,0,0,0,0,
line,,gpt-4o-mini,,false,3,3,0,0.0000,7000,7000,0,0.0000,200,200,0,0.0000,3520,3500,-20,-0.5682,0.003147,0.003135,-0.000012,-0.3813,1,2000,1000,0,estimated
line,,house-llama,tollgate,false,,1,1,,,50,50,,,0,0,,,5,5,,,0,0,,0,0,0,1,only_tollgate
total,,,,false,7,5,-2,-28.5714,8300,8050,-250,-3.0120,200,200,0,0.0000,3650,3605,-45,-1.2329,0.006689,0.006635,-0.000054,-0.8073,1,2000,1000,1,unpriced
unmetered,,web search tool calls,provider,,,,,,,,,,,,,,,,,,0.01,,,,,,,,
";

#[tokio::test(flavor = "multi_thread")]
async fn the_report_compares_each_line_and_the_exit_status_follows_the_tolerance() {
    for backend in backends().await {
        let store = backend.open().await;
        seed(&store).await;
        let api = org_api().await;
        let dir = tempfile::tempdir().unwrap();
        let config = config_file(dir.path(), &backend.url, &api.base_url, "");
        let key = Some(ADMIN_API_KEY);
        let range = ["--since", D1, "--until", D2];

        // By day and model: drift, a model OpenAI never billed and one tollgate never
        // saw, each shown; exit 1.
        let args = [&range[..], &["--by", "day,model", "--json"]].concat();
        let (stdout, _) = exits(&tollgate(&config, key, &args), 1);
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report, expected_by_day_and_model(), "{}", backend.name);

        // Both endpoints were read page by page, with the documented parameters and
        // the admin key as the bearer.
        let received = api.received();
        let completions: Vec<&Received> = received
            .iter()
            .filter(|r| endpoint(r) == "completions")
            .collect();
        assert_eq!(completions.len(), 2, "two pages");
        let first = query(completions[0]);
        assert_eq!(first["start_time"], day_s(D1).to_string());
        assert_eq!(first["end_time"], (day_s(D2) + 86_400).to_string());
        assert_eq!(first["bucket_width"], "1d");
        assert_eq!(first["group_by[]"], "model");
        assert_eq!(first["limit"], "31");
        assert!(!first.contains_key("page"));
        assert_eq!(query(completions[1])["page"], "page_2");
        assert_eq!(
            completions[0].path, "/v1/organization/usage/completions",
            "below reconcile.base_url"
        );
        let costs = received.iter().find(|r| endpoint(r) == "costs").unwrap();
        assert_eq!(query(costs)["group_by[]"], "line_item");
        assert_eq!(query(costs)["limit"], "180");
        for request in &received {
            assert_eq!(
                request.headers["authorization"],
                format!("Bearer {ADMIN_API_KEY}")
            );
        }

        // By model, as CSV: exact text.
        let args = [&range[..], &["--csv"]].concat();
        let (stdout, _) = exits(&tollgate(&config, key, &args), 1);
        assert_eq!(stdout, EXPECTED_CSV_BY_MODEL, "{}", backend.name);

        // One day, within a 2% tolerance: exit 0. Within the default 0.5%: exit 1.
        let day = ["--since", D1, "--until", D1];
        let args = [&day[..], &["--tolerance", "2", "--json"]].concat();
        let (stdout, _) = exits(&tollgate(&config, key, &args), 0);
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["within_tolerance"], true);
        let models: Vec<&str> = report["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["model"].as_str().unwrap())
            .collect();
        assert_eq!(
            models,
            ["gpt-4o", "gpt-4o-mini"],
            "the 3rd's lines are not in"
        );
        exits(&tollgate(&config, key, &day), 1);

        // The table: every line and the total side by side.
        let args = [&range[..], &["--by", "day"]].concat();
        let (table, _) = exits(&tollgate(&config, key, &args), 1);
        for expected in [
            "OpenAI vs tollgate, 2026-11-02 to 2026-11-03 (UTC days), by day",
            "tollgate's side: ledger rows of upstream openai; tolerance 0.5% per figure",
            "2026-11-02  [OUT OF TOLERANCE]",
            "TOTAL  [OUT OF TOLERANCE]",
            "estimated by tollgate: 1 request, 2000 input and 1000 output tokens",
            "web search tool calls: 0.010000 USD",
        ] {
            assert!(table.contains(expected), "{expected:?} not in\n{table}");
        }
        let usd_row = table
            .lines()
            .find(|l| l.trim_start().starts_with("USD") && l.contains("0.004847"))
            .unwrap_or_else(|| panic!("no USD row for the 2nd in\n{table}"));
        let cells: Vec<&str> = usd_row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["USD", "0.004847", "0.004835", "-0.000012", "-0.25%"]
        );
    }
}

/// Runs `reconcile` against an org API answering with `handler`; returns its output.
async fn reconcile_against(
    handler: impl Fn(&Received) -> axum::response::Response + Send + Sync + 'static,
    key: Option<&str>,
    extra: &str,
) -> (Output, MockUpstream) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    seed(&Store::open(&db).await.unwrap()).await;
    let api = MockUpstream::start(handler).await;
    let config = config_file(dir.path(), &db, &api.base_url, extra);
    let output = tollgate(&config, key, &["--since", D1, "--until", D2]);
    (output, api)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failure_says_its_side_and_why_and_exits_2() {
    let key = Some(ADMIN_API_KEY);
    let refused = |_: &Received| {
        json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"message": "Incorrect API key provided: sk-admi********9f3c.",
                   "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        )
    };
    let (output, _) = reconcile_against(refused, key, "").await;
    let (_, stderr) = exits(&output, 2);
    assert_eq!(
        stderr.trim(),
        "tollgate: OpenAI side: the admin key was refused (401) by \
         organization/usage/completions: check that OPENAI_ADMIN_KEY holds a current \
         organization admin key"
    );
    assert!(
        !stderr.contains("9f3c") && !stderr.contains("sk-admi"),
        "{stderr}"
    );

    // A 500, then the export: retried, and the report made (exit 1: it drifts).
    let export = export();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let flaky = move |received: &Received| {
        if endpoint(received) == "completions" && seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return json(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": {}}));
        }
        export.answer(received)
    };
    let (output, api) = reconcile_against(flaky, key, "").await;
    let (stdout, _) = exits(&output, 1);
    assert!(stdout.contains("TOTAL  [OUT OF TOLERANCE]"), "{stdout}");
    let completions = api
        .received()
        .iter()
        .filter(|r| endpoint(r) == "completions")
        .count();
    assert_eq!(completions, 3, "the first page twice, then the second");

    // A 500 every time: tried 1 + retries times, then an error.
    let failing = |_: &Received| json(StatusCode::BAD_GATEWAY, &json!({}));
    let (output, api) = reconcile_against(failing, key, "retries = 2\n").await;
    let (_, stderr) = exits(&output, 2);
    assert_eq!(
        stderr.trim(),
        "tollgate: OpenAI side: organization/usage/completions answered 502 3 times"
    );
    assert_eq!(api.received().len(), 3);

    // A 400 carries OpenAI's own message.
    let bad = |_: &Received| {
        json(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "limit must be at most 31", "type": "invalid_request_error"}}),
        )
    };
    let (output, _) = reconcile_against(bad, key, "").await;
    let (_, stderr) = exits(&output, 2);
    assert!(
        stderr.contains("organization/usage/completions answered 400: limit must be at most 31"),
        "{stderr}"
    );

    // Not JSON (a proxy's login page), and JSON of another shape.
    let html = |_: &Received| {
        axum::response::Response::builder()
            .status(200)
            .header("content-type", "text/html")
            .body(axum::body::Body::from("<html>sign in</html>"))
            .unwrap()
    };
    let (output, _) = reconcile_against(html, key, "").await;
    let (_, stderr) = exits(&output, 2);
    assert_eq!(
        stderr.trim(),
        "tollgate: OpenAI side: organization/usage/completions did not answer with JSON \
         (content-type `text/html`)"
    );
    let other = |_: &Received| json(StatusCode::OK, &json!({"object": "list", "data": "no"}));
    let (output, _) = reconcile_against(other, key, "").await;
    let (_, stderr) = exits(&output, 2);
    assert!(
        stderr.contains(
            "OpenAI side: organization/usage/completions answered JSON that is not a usage or \
             costs page: invalid type"
        ),
        "{stderr}"
    );

    // Pages that never end: a new cursor every time, then the same one again.
    let endless = |received: &Received| {
        let n: u32 = query(received)
            .get("page")
            .and_then(|p| p.strip_prefix("page_")?.parse().ok())
            .unwrap_or(1);
        json(
            StatusCode::OK,
            &page(vec![], Some(&format!("page_{}", n + 1))),
        )
    };
    let (output, api) = reconcile_against(endless, key, "max_pages = 3\n").await;
    let (_, stderr) = exits(&output, 2);
    assert_eq!(
        stderr.trim(),
        "tollgate: OpenAI side: organization/usage/completions still had more after 3 pages; \
         stopped there (reconcile.max_pages)"
    );
    assert_eq!(api.received().len(), 3);
    let circular = |_: &Received| json(StatusCode::OK, &page(vec![], Some("page_1")));
    let (output, api) = reconcile_against(circular, key, "").await;
    let (_, stderr) = exits(&output, 2);
    assert!(
        stderr.contains("gave a page cursor it had given before"),
        "{stderr}"
    );
    assert_eq!(api.received().len(), 2);

    // No key, a project key, an unanswered request: refused before or at the fetch.
    let (output, api) = reconcile_against(|r: &Received| self::export().answer(r), None, "").await;
    let (_, stderr) = exits(&output, 2);
    assert!(
        stderr.contains("OpenAI side: no admin key: set OPENAI_ADMIN_KEY"),
        "{stderr}"
    );
    let project = Some("sk-proj-abc123");
    let (output, _) = reconcile_against(|r: &Received| self::export().answer(r), project, "").await;
    let (_, stderr) = exits(&output, 2);
    assert!(stderr.contains("holds a project key"), "{stderr}");
    assert!(!stderr.contains("abc123"), "{stderr}");
    assert!(api.received().is_empty(), "no request without a usable key");

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let silent = silent_url().await;
    let config = config_file(
        dir.path(),
        &db,
        &silent,
        "timeout = \"300ms\"\nretries = 0\n",
    );
    let (_, stderr) = exits(&tollgate(&config, key, &["--since", D1, "--until", D2]), 2);
    assert_eq!(
        stderr.trim(),
        "tollgate: OpenAI side: organization/usage/completions did not answer within 300ms"
    );

    // Bad arguments and a bad config are exit 2 as well, naming what is wrong.
    let (_, stderr) = exits(&tollgate(&config, key, &["--since", D1, "--by", "team"]), 2);
    assert!(
        stderr.contains("--by: `team` is not day, model or day,model"),
        "{stderr}"
    );
    let (_, stderr) = exits(&tollgate(&config, key, &["--since", D2, "--until", D1]), 2);
    assert!(
        stderr.contains("--since/--until: the range starts on 2026-11-03"),
        "{stderr}"
    );
    let broken = config_file(dir.path(), &db, &silent, "tolerance_percent = \"lots\"\n");
    let (_, stderr) = exits(&tollgate(&broken, key, &["--since", D1]), 2);
    assert!(stderr.contains("reconcile.tolerance_percent"), "{stderr}");
}

/// tollgate serving the admin API over `backend`'s seeded ledger, the org API at `api`.
async fn serving(db_url: &str, api: &MockUpstream, key: Option<&str>, schedule: bool) -> Harness {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let env: Vec<(&str, &str)> = key.map(|k| ("OPENAI_ADMIN_KEY", k)).into_iter().collect();
    let (db_url, api_url) = (db_url.to_owned(), api.base_url.clone());
    let tollgate = Harness::start_with_env(&upstream.base_url, &env, move |config| {
        config.auth.mode = tollgate::config::AuthMode::Keys;
        config.database.url = db_url;
        config.reconcile.base_url = api_url;
        config.reconcile.upstreams = vec!["openai".to_owned()];
        config.reconcile.retry_backoff = std::time::Duration::from_millis(1);
        if schedule {
            config.reconcile.schedule = Some("06:00".to_owned());
        }
    })
    .await;
    // The upstream must outlive the test's requests; the harness does not own it.
    std::mem::forget(upstream);
    tollgate
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_route_answers_the_same_report_to_the_admin_key_only() {
    for backend in backends().await {
        seed(&backend.open().await).await;
        let api = org_api().await;
        let tollgate = serving(&backend.url, &api, Some(ADMIN_API_KEY), false).await;
        let path = format!("/admin/reconcile?since={D1}&until={D2}&by=day,model");
        let response = tollgate.admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", backend.name);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let report: Value = response.json().await.unwrap();
        assert_eq!(report, expected_by_day_and_model(), "{}", backend.name);

        let csv = tollgate
            .admin(
                Method::GET,
                &format!("/admin/reconcile?since={D1}&until={D2}&format=csv"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
        assert_eq!(csv.text().await.unwrap(), EXPECTED_CSV_BY_MODEL);

        // A tollgate key is refused; bad parameters are named.
        let key = tollgate.key("ops", json!({"name": "k"})).await;
        let refused = tollgate.get(&path).bearer_auth(&key).send().await.unwrap();
        assert_eq!(refused.status(), 403);
        for (query, param) in [
            ("until=2026-11-03", "since"),
            ("since=2026-11-03&until=2026-11-02", "until"),
            ("since=2026-11-02&by=team", "by"),
            ("since=2026-11-02&tolerance=-1", "tolerance"),
            ("since=2026-11-02&format=xml", "format"),
            ("since=2026-11-02&group_by=model", "group_by"),
        ] {
            let response = tollgate
                .admin(Method::GET, &format!("/admin/reconcile?{query}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{query}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(assert_openai_error(&body)["param"], param, "{query}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_route_says_which_side_failed() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let refusing = MockUpstream::start(|_| json(StatusCode::UNAUTHORIZED, &json!({}))).await;
    let tollgate = serving(&db, &refusing, Some(ADMIN_API_KEY), false).await;
    let path = format!("/admin/reconcile?since={D1}&until={D2}");
    let response = tollgate.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(error["code"], "reconcile_provider_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("OpenAI side: the admin key was refused (401)"),
        "{body}"
    );
    assert!(!body.to_string().contains(ADMIN_API_KEY));

    let keyless = serving(&db, &refusing, None, false).await;
    let response = keyless.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(assert_openai_error(&body)["code"], "reconcile_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("set OPENAI_ADMIN_KEY"),
        "{body}"
    );
}

/// The value of one sample of `/metrics`.
fn sample(text: &str, series: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_run_sets_the_drift_metrics() {
    // Yesterday: tollgate has 1,000 input tokens of gpt-4o-mini ($0.00015); OpenAI
    // bills 1,000 and $0.0002 (a quarter more) and reports 1,200 tokens.
    let yesterday = now_ms().div_euclid(86_400_000) - 1;
    let day = tollgate::reconcile::Days::label(yesterday);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = Store::open(&db).await.unwrap();
    let mut one = row(
        "1",
        &day,
        "openai",
        "gpt-4o-mini-2024-07-18",
        (1000, 0, 0),
        UsageSource::Upstream,
        Outcome::Ok,
    );
    one.ts_ms = yesterday * 86_400_000 + 1000;
    store.insert(&[one]).await.unwrap();
    let start = yesterday * 86_400;
    let export = Export::default()
        .with(
            "completions",
            vec![page(
                vec![bucket(
                    start,
                    vec![usage("gpt-4o-mini-2024-07-18", 1, 1200, 0, 0)],
                )],
                None,
            )],
        )
        .with(
            "costs",
            vec![page(
                vec![bucket(
                    start,
                    vec![cost("gpt-4o-mini-2024-07-18, input", 0.0002)],
                )],
                None,
            )],
        );
    let refuse = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::clone(&refuse);
    let api = MockUpstream::start(move |received| {
        if refusing.load(Ordering::SeqCst) > 0 {
            return json(StatusCode::UNAUTHORIZED, &json!({}));
        }
        export.answer(received)
    })
    .await;
    let tollgate = serving(&db, &api, Some(ADMIN_API_KEY), true).await;

    // Before any run: the series exist, the drift unknown.
    let text = tollgate.metrics_text().await;
    assert_eq!(
        sample(&text, "tollgate_reconcile_drift_ratio{kind=\"usd\"}"),
        "NaN"
    );
    assert_eq!(
        sample(&text, "tollgate_reconcile_last_success_timestamp_seconds"),
        "0"
    );

    let report = tollgate.reconcile_now().await.unwrap();
    assert_eq!(report.lines.len(), 1);
    let text = tollgate.metrics_text().await;
    assert_eq!(
        sample(&text, "tollgate_reconcile_drift_ratio{kind=\"usd\"}"),
        "0.25"
    );
    let tokens: f64 = sample(&text, "tollgate_reconcile_drift_ratio{kind=\"tokens\"}")
        .parse()
        .unwrap();
    assert!((tokens - 200.0 / 1200.0).abs() < 1e-12, "{tokens}");
    assert_eq!(
        sample(&text, "tollgate_reconcile_lines_out_of_tolerance"),
        "1"
    );
    assert_eq!(
        sample(&text, "tollgate_reconcile_runs_total{result=\"drift\"}"),
        "1"
    );
    let last: f64 = sample(&text, "tollgate_reconcile_last_success_timestamp_seconds")
        .parse()
        .unwrap();
    #[allow(clippy::cast_precision_loss)]
    let now_s = (now_ms() / 1000) as f64;
    assert!(last > now_s - 60.0 && last <= now_s, "{last}");

    // A failed run is counted; the last report's figures stay.
    refuse.store(1, Ordering::SeqCst);
    assert!(tollgate.reconcile_now().await.is_err());
    let text = tollgate.metrics_text().await;
    assert_eq!(
        sample(&text, "tollgate_reconcile_runs_total{result=\"failed\"}"),
        "1"
    );
    assert_eq!(
        sample(&text, "tollgate_reconcile_drift_ratio{kind=\"usd\"}"),
        "0.25"
    );
    assert!(!text.contains(ADMIN_API_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_key_reaches_no_log_line_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    seed(&Store::open(&db).await.unwrap()).await;
    let scripted = export();
    let calls = Arc::new(AtomicUsize::new(0));
    let api = MockUpstream::start(move |received| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => json(StatusCode::SERVICE_UNAVAILABLE, &json!({})),
        _ => scripted.answer(received),
    })
    .await;
    let refusing = MockUpstream::start(|_| json(StatusCode::UNAUTHORIZED, &json!({}))).await;
    for (api_url, code) in [(&api.base_url, 1), (&refusing.base_url, 2)] {
        let config = config_file(dir.path(), &db, api_url, "[log]\nfilter = \"trace\"\n");
        let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&config)
            .args(["reconcile", "--since", D1, "--until", D2, "--json"])
            .env_remove("TOLLGATE_CONFIG")
            .env("RUST_LOG", "trace")
            .env("OPENAI_ADMIN_KEY", ADMIN_API_KEY)
            .output()
            .unwrap();
        let (stdout, stderr) = exits(&output, code);
        assert!(
            stderr.lines().count() > 10,
            "trace logs were written: {stderr}"
        );
        for text in [&stdout, &stderr] {
            assert!(!text.contains(ADMIN_API_KEY), "the admin key is in\n{text}");
            assert!(
                !text.contains("9f3c"),
                "a piece of the admin key is in\n{text}"
            );
        }
    }
}
