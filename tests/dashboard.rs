//! The built-in dashboard: `/admin/dashboard/data` totals a seeded ledger exactly over
//! a range, on both backends; the page and its data refuse anyone without the admin
//! key; and, in headless Chromium, the page draws the seeded figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use axum::http::StatusCode;
use common::db::{Backend, backends};
use common::harness::{ADMIN_KEY, Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, chat_completion, json};
use common::org_api;
use common::webdriver::{Driver, Session};
use futures_util::FutureExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::clock::{format_ms, now_ms};
use tollgate::config::AuthMode;
use tollgate::ledger::LedgerRow;
use tollgate::pricing::Cost;

const DAY: i64 = 86_400_000;

/// tollgate in keys mode over a ledger seeded with known spend:
///
/// | row | key              | when    | model         | tokens in/out | cost    |
/// |-----|------------------|---------|---------------|---------------|---------|
/// | 1   | acme/notebook    | 1 d ago | gpt-4o        | 100k / 10k    | $0.35   |
/// | 2   | acme/notebook    | 3 d ago | gpt-4o-mini   | 1M / 0        | $0.15   |
/// | 3   | acme/batch-jobs  | 5 d ago | gpt-4o-mini   | 100k / 50k    | $0.045  |
/// | 4   | globex/web       | 2 d ago | gpt-4o        | 100k / 10k    | $0.35   |
/// | 5   | globex/web       | 2 d ago | gpt-4o-mini   | 100k / 50k    | $0.045  |
/// | 6   | initech/cli      | 1 m ago | gpt-4o-mini   | 100k / 50k    | $0.045  |
/// | 7   | initech/cli      | 6 d ago | mystery-model | 500 / 50      | unpriced|
/// | 8   | acme/notebook    | 40 d ago| gpt-4o        | 100k / 10k    | $0.35   |
///
/// (gpt-4o: $2.50 in, $10 out per 1M; gpt-4o-mini: $0.15 in, $0.60 out.) Row 5 was
/// served at flex, every other one at default. Budgets, all
/// of period `total`: team acme $1, team globex $0.40, key acme/notebook $0.50.
struct Seeded {
    tollgate: Harness,
    _upstream: MockUpstream,
    /// Key name → the admin API's record of it (with `key`, the secret).
    keys: HashMap<&'static str, Value>,
    /// When the rows were placed: "n days ago" counts from here, so a test that runs
    /// across midnight still finds each row on its day.
    now: i64,
}

async fn seeded(backend: &Backend) -> Seeded {
    seeded_with(backend, &[], |_| {}).await
}

/// `seeded`, with more in tollgate's environment and config.
async fn seeded_with(
    backend: &Backend,
    env: &[(&str, &str)],
    tweak: impl FnOnce(&mut tollgate::config::Config),
) -> Seeded {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let url = backend.url.clone();
    let tollgate = Harness::start_with_env(&upstream.base_url, env, |config| {
        config.auth.mode = AuthMode::Keys;
        config.database.url = url;
        tweak(config);
    })
    .await;
    for (team, budget) in [
        ("acme", Some("1")),
        ("globex", Some("0.40")),
        ("initech", None),
    ] {
        let mut body = json!({ "name": team });
        if let Some(budget) = budget {
            body["budget_usd"] = json!(budget);
            body["budget_period"] = json!("total");
        }
        let created = tollgate
            .admin(Method::POST, "/admin/teams")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let mut keys = HashMap::new();
    for (team, name, budget) in [
        ("acme", "notebook", Some("0.5")),
        ("acme", "batch-jobs", None),
        ("globex", "web", None),
        ("initech", "cli", None),
    ] {
        let mut body = json!({ "team": team, "name": name });
        if let Some(budget) = budget {
            body["budget_usd"] = json!(budget);
            body["budget_period"] = json!("total");
        }
        let created = tollgate
            .admin(Method::POST, "/admin/keys")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        keys.insert(name, created.json::<Value>().await.unwrap());
    }
    let now = now_ms();
    let row = |id: &str, ago: i64, key: &str, model: &str, input: u64, output: u64| {
        spent(id, now - ago, &keys[key], model, input, output)
    };
    let store = backend.open().await;
    let mut rows = [
        row("1", DAY, "notebook", "gpt-4o", 100_000, 10_000),
        row("2", 3 * DAY, "notebook", "gpt-4o-mini", 1_000_000, 0),
        row("3", 5 * DAY, "batch-jobs", "gpt-4o-mini", 100_000, 50_000),
        row("4", 2 * DAY, "web", "gpt-4o", 100_000, 10_000),
        row("5", 2 * DAY, "web", "gpt-4o-mini", 100_000, 50_000),
        row("6", 60_000, "cli", "gpt-4o-mini", 100_000, 50_000),
        row("7", 6 * DAY, "cli", "mystery-model", 500, 50),
        row("8", 40 * DAY, "notebook", "gpt-4o", 100_000, 10_000),
    ];
    // Served at flex, which gpt-4o-mini does not offer: priced at standard all the same.
    rows[4].service_tier = Some("flex".to_owned());
    // Served by an Azure upstream: the provider panel splits it out.
    rows[5].provider = "azure".to_owned();
    store.insert(&rows).await.unwrap();
    Seeded {
        tollgate,
        _upstream: upstream,
        keys,
        now,
    }
}

/// A ledger row for `key`, priced by the built-in catalog (unpriced if it does not
/// know the model).
fn spent(id: &str, ts_ms: i64, key: &Value, model: &str, input: u64, output: u64) -> LedgerRow {
    let usage = common::rows::usage(input, 0, output);
    LedgerRow {
        ts_ms,
        caller: key["prefix"].as_str().unwrap().to_owned(),
        model_requested: Some(model.to_owned()),
        service_tier: Some("default".to_owned()),
        price: common::rows::priced(None, Some(model), &usage),
        usage,
        key_id: Some(key["id"].as_str().unwrap().to_owned()),
        team_id: Some(key["team_id"].as_str().unwrap().to_owned()),
        ..common::rows::row(id)
    }
}

impl Seeded {
    fn prefix(&self, key: &str) -> &str {
        self.keys[key]["prefix"].as_str().unwrap()
    }

    async fn data(&self, query: &str) -> Value {
        let response = self
            .tollgate
            .admin(Method::GET, &format!("/admin/dashboard/data?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        response.json().await.unwrap()
    }
}

/// `(group, cost_usd, requests)` of each line, in order.
fn lines(list: &Value) -> Vec<(String, String, u64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["group"].as_str().unwrap().to_owned(),
                l["cost_usd"].as_str().unwrap().to_owned(),
                l["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn line(group: &str, cost: &str, requests: u64) -> (String, String, u64) {
    (group.to_owned(), cost.to_owned(), requests)
}

fn cost(text: &Value) -> Cost {
    Cost::from_decimal_str(text.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_data_route_totals_the_seeded_ledger_over_a_range() {
    for backend in backends().await {
        let on = backend.name;
        let seeded = seeded(&backend).await;

        // The default range: the last 30 days; row 8 is older.
        let data = seeded.data("").await;
        assert_eq!(data["object"], "tollgate.dashboard");
        assert_eq!(data["bucket"], "day", "{on}");
        assert_eq!(data["total"]["cost_usd"], "0.985", "{on}");
        assert_eq!(data["total"]["requests"], 7, "{on}");
        assert_eq!(data["total"]["unpriced_requests"], 1, "{on}");
        assert_eq!(
            lines(&data["teams"]),
            [
                line("acme", "0.545", 3),
                line("globex", "0.395", 2),
                line("initech", "0.045", 2),
            ],
            "{on}"
        );
        assert_eq!(
            lines(&data["models"]),
            [
                line("gpt-4o", "0.7", 2),
                line("gpt-4o-mini", "0.285", 4),
                line("mystery-model", "0", 1),
            ],
            "{on}"
        );
        assert_eq!(
            lines(&data["tiers"]),
            [line("default", "0.94", 6), line("flex", "0.045", 1)],
            "{on}"
        );
        assert_eq!(
            lines(&data["providers"]),
            [line("openai", "0.94", 6), line("azure", "0.045", 1)],
            "{on}"
        );
        let top = &data["top_keys"];
        assert_eq!(
            lines(top),
            [
                line(seeded.prefix("notebook"), "0.5", 2),
                line(seeded.prefix("web"), "0.395", 2),
                // Ties on spend go to the busier key.
                line(seeded.prefix("cli"), "0.045", 2),
                line(seeded.prefix("batch-jobs"), "0.045", 1),
            ],
            "{on}"
        );
        assert_eq!(
            (&top[0]["name"], &top[0]["team"]),
            (&json!("notebook"), &json!("acme"))
        );

        // A bar per day (today and the 30 before it), one series per team, each
        // summing to that team's total exactly.
        let series = &data["series"];
        let buckets = series["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 31, "{on}");
        assert_eq!(buckets[30], json!(format_ms(now_ms())[..10]), "{on}");
        for (team, want) in series["teams"]
            .as_array()
            .unwrap()
            .iter()
            .zip(data["teams"].as_array().unwrap())
        {
            assert_eq!(team["team"], want["group"], "{on}");
            let points = team["cost_usd"].as_array().unwrap();
            assert_eq!(points.len(), 31);
            let sum = points
                .iter()
                .map(cost)
                .fold(Cost::ZERO, |a, b| a.checked_add(b).unwrap());
            assert_eq!(sum, cost(&want["cost_usd"]), "{on} {team}");
        }
        let acme = &series["teams"][0]["cost_usd"];
        let day = |ago: i64| {
            let label = json!(format_ms(seeded.now - ago * DAY)[..10]);
            buckets.iter().position(|b| *b == label).unwrap()
        };
        assert_eq!(acme[day(1)], "0.35", "{on}");
        assert_eq!(acme[day(3)], "0.15", "{on}");
        assert_eq!(acme[day(5)], "0.045", "{on}");
        assert_eq!(acme[day(2)], "0", "{on}");

        // Budgets stand over their own period (here all time, row 8 included), the
        // most used first, percentages rounded down.
        let budgets: Vec<_> = data["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["scope"].as_str().unwrap(),
                    b["name"].as_str().unwrap(),
                    b["spent_usd"].as_str().unwrap(),
                    b["budget_usd"].as_str().unwrap(),
                    b["used_percent"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            budgets,
            [
                ("key", "notebook", "0.85", "0.5", "170.0"),
                ("team", "globex", "0.395", "0.4", "98.7"),
                ("team", "acme", "0.895", "1", "89.5"),
            ],
            "{on}"
        );
        assert_eq!(data["budgets"][0]["key_prefix"], seeded.prefix("notebook"));
        assert_eq!(data["budgets"][0]["team"], "acme");

        // 90 days take row 8 in; two whole days hold rows 2, 4 and 5 only, per hour.
        let quarter = seeded.data("from=90d").await;
        assert_eq!(quarter["teams"][0]["cost_usd"], "0.895", "{on}");
        let day_of = |ago: i64| format_ms(seeded.now - ago * DAY)[..10].to_owned();
        let two_days = seeded
            .data(&format!("from={}&to={}", day_of(3), day_of(1)))
            .await;
        assert_eq!(two_days["bucket"], "hour", "{on}");
        assert_eq!(two_days["series"]["buckets"].as_array().unwrap().len(), 48);
        assert_eq!(two_days["total"]["cost_usd"], "0.545", "{on}");
        assert_eq!(
            lines(&two_days["teams"]),
            [line("globex", "0.395", 2), line("acme", "0.15", 1)],
            "{on}"
        );
        let one = seeded.data("top=1").await;
        assert_eq!(one["top_keys"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn bad_parameters_get_a_400_naming_them() {
    let backend = &backends().await[0];
    let seeded = seeded(backend).await;
    for (query, param) in [
        ("from=yesterday", "from"),
        ("to=soon", "to"),
        ("from=1d&to=2d", "from"),
        ("from=400d", "from"),
        ("top=0", "top"),
        ("top=many", "top"),
        ("group_by=team", "group_by"),
    ] {
        let response = seeded
            .tollgate
            .admin(Method::GET, &format!("/admin/dashboard/data?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        let error = assert_openai_error(&body);
        assert_eq!(error["param"], param, "{query}: {body}");
        assert_eq!(error["code"], "invalid_parameter");
    }
}

#[tokio::test]
async fn only_the_admin_key_reads_the_dashboards_figures() {
    let backend = &backends().await[0];
    let seeded = seeded(backend).await;
    let tollgate = &seeded.tollgate;
    let url = format!("{}/admin/dashboard/data", tollgate.url);
    let client_key = seeded.keys["cli"]["key"].as_str().unwrap();
    let basic = format!("Basic {}", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_KEY}"))
    });
    for (what, request, status, code) in [
        ("no key", tollgate.client.get(&url), 401, "invalid_api_key"),
        (
            "a wrong key",
            tollgate.client.get(&url).bearer_auth("not-the-admin-key"),
            401,
            "invalid_api_key",
        ),
        (
            "a tollgate key",
            tollgate.client.get(&url).bearer_auth(client_key),
            403,
            "admin_only",
        ),
        // The key is never read from a URL, nor from HTTP Basic (see admin/dashboard).
        (
            "the key in the query",
            tollgate.client.get(format!("{url}?key={ADMIN_KEY}")),
            401,
            "invalid_api_key",
        ),
        (
            "Basic auth",
            tollgate.client.get(&url).header("authorization", basic),
            401,
            "invalid_api_key",
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(assert_openai_error(&body)["code"], code, "{what}");
        assert!(!body.to_string().contains("acme"), "{what}: {body}");
    }

    // The page and its assets are open, hold no data, and are locked down.
    for (path, content_type) in [
        ("/dashboard", "text/html; charset=utf-8"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/app.css", "text/css; charset=utf-8"),
    ] {
        let response = tollgate.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("acme") && !text.contains(ADMIN_KEY),
            "{path}"
        );
    }
}

/// Runs `test` against a fresh browser session and always closes the browser, even
/// when the test fails.
async fn in_browser<F, Fut>(driver: &Driver, test: F)
where
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = ()>,
{
    let session = driver.session(1280, 1900).await;
    let outcome = AssertUnwindSafe(test(session.clone())).catch_unwind().await;
    session.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_draws_the_seeded_ledger_in_headless_chromium() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let backend = &backends().await[0];
    let seeded = seeded(backend).await;
    let page = format!("{}/dashboard", seeded.tollgate.url);
    in_browser(&driver, |browser| async move {
        browser.goto(&page).await;
        browser
            .wait_until(
                "return document.body.dataset.state === 'signed-out'",
                "the sign-in form",
            )
            .await;

        // A wrong key is refused with the server's message, and forgotten.
        browser.type_into("#admin-key", "not-the-admin-key").await;
        browser.click("#open").await;
        browser
            .wait_until(
                "return document.getElementById('sign-in-error').textContent !== ''",
                "the refusal",
            )
            .await;
        let refused = browser
            .script("return [document.getElementById('sign-in-error').textContent, sessionStorage.length]")
            .await;
        assert_eq!(refused, json!(["Incorrect admin key provided.", 0]));

        browser.type_into("#admin-key", ADMIN_KEY).await;
        browser.click("#open").await;
        browser
            .wait_until(
                "return document.body.dataset.state === 'ready'",
                "the charts",
            )
            .await;
        let shown = browser.script(READ_PAGE).await;
        assert_eq!(shown["total"], "$0.985");
        assert_eq!(
            shown["teams"],
            json!([["acme", "$0.545"], ["globex", "$0.395"], ["initech", "$0.045"]])
        );
        assert_eq!(
            shown["models"],
            json!([["gpt-4o", "$0.7"], ["gpt-4o-mini", "$0.285"], ["mystery-model", "$0"]])
        );
        assert_eq!(
            shown["tiers"],
            json!([["default", "$0.94"], ["flex", "$0.045"]])
        );
        assert_eq!(
            shown["providers"],
            json!([["openai", "$0.94"], ["azure", "$0.045"]])
        );
        assert_eq!(
            shown["topKey"],
            json!([seeded.prefix("notebook"), "notebook", "acme", "$0.5"])
        );
        // The bars: one per day with spend for acme; budget bars as wide as used,
        // capped at full, red past the limit.
        assert_eq!(shown["acmeBars"], 3);
        assert_eq!(
            shown["budgets"],
            json!([
                ["key", "notebook", "170.0%", "100%", "bar-row over"],
                ["team", "globex", "98.7%", "98.7%", "bar-row warn"],
                ["team", "acme", "89.5%", "89.5%", "bar-row warn"],
            ])
        );
        // The key is in the tab's session storage, and in no URL.
        let state = browser
            .script("return [sessionStorage.getItem('tollgate.adminKey'), location.href]")
            .await;
        assert_eq!(state[0], ADMIN_KEY);
        assert!(!state[1].as_str().unwrap().contains(ADMIN_KEY), "{state}");

        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("dashboard.png"), &png).unwrap();

        // A preset redraws over its range: 90 days take acme's 40-day-old row in.
        browser.click("[data-span='90d']").await;
        browser
            .wait_until(
                "return document.body.dataset.state === 'ready' && document.querySelector('#teams tr[data-team=\"acme\"] .cost').textContent === '$0.895'",
                "the 90-day view",
            )
            .await;

        // The date pickers name whole days, `to` included: rows 2, 4 and 5, per hour.
        let day_of = |ago: i64| format_ms(seeded.now - ago * DAY)[..10].to_owned();
        browser
            .script(&format!(
                "document.getElementById('from').value = '{}'; \
                 document.getElementById('to').value = '{}';",
                day_of(3),
                day_of(2)
            ))
            .await;
        browser.click("#apply").await;
        browser
            .wait_until(
                "return document.body.dataset.state === 'ready' && document.getElementById('total-cost').textContent === '$0.545'",
                "the two-day view",
            )
            .await;
        let shown = browser.script(READ_PAGE).await;
        assert_eq!(
            shown["teams"],
            json!([["globex", "$0.395"], ["acme", "$0.15"]])
        );
        assert_eq!(shown["bucket"], "per hour");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_compares_its_range_with_openais_export_in_headless_chromium() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    // OpenAI reports row 1 (gpt-4o, a day ago: $0.35) and nothing else; the page's
    // 30 days hold rows 1 to 5 and 7 (row 6 is today's, which is not compared).
    let yesterday_s = (now_ms().div_euclid(DAY) - 1) * 86_400;
    let export = org_api::Export::default()
        .with(
            "completions",
            vec![org_api::page(
                vec![org_api::bucket(
                    yesterday_s,
                    vec![org_api::usage("gpt-4o-2024-08-06", 1, 100_000, 0, 10_000)],
                )],
                None,
            )],
        )
        .with(
            "costs",
            vec![org_api::page(
                vec![org_api::bucket(
                    yesterday_s,
                    vec![
                        org_api::cost("gpt-4o-2024-08-06, input", 0.25),
                        org_api::cost("gpt-4o-2024-08-06, output", 0.1),
                        org_api::cost("Vector storage", 0.02),
                    ],
                )],
                None,
            )],
        );
    let api = MockUpstream::start(move |received| export.answer(received)).await;
    let backend = &backends().await[0];
    let api_url = api.base_url.clone();
    let seeded = seeded_with(
        backend,
        &[("OPENAI_ADMIN_KEY", "sk-admin-dash")],
        |config| {
            config.reconcile.base_url = api_url;
            config.reconcile.upstreams = vec!["openai".to_owned()];
        },
    )
    .await;
    let page = format!("{}/dashboard", seeded.tollgate.url);
    in_browser(&driver, |browser| async move {
        browser.goto(&page).await;
        browser
            .wait_until(
                "return document.body.dataset.state === 'signed-out'",
                "the sign-in form",
            )
            .await;
        browser.type_into("#admin-key", ADMIN_KEY).await;
        browser.click("#open").await;
        browser
            .wait_until(
                "return document.body.dataset.state === 'ready'",
                "the charts",
            )
            .await;
        assert_eq!(
            browser
                .script("return document.getElementById('reconcile-lines').hidden")
                .await,
            true,
            "nothing is asked of OpenAI until the button is pressed"
        );
        browser.click("#reconcile-run").await;
        browser
            .wait_until(
                "return document.getElementById('reconcile').dataset.state === 'ready'",
                "the comparison",
            )
            .await;
        let shown = browser
            .script(
                r#"
const text = (node, css) => node.querySelector(css).textContent;
return {
  rows: Array.from(document.querySelectorAll('#reconcile-lines tbody tr')).map((r) =>
    [text(r, '.name'), text(r, '.provider'), text(r, '.tollgate'), text(r, '.diff'),
     text(r, '.percent'), text(r, '.tokens'), text(r, '.status')]),
  summary: document.getElementById('reconcile-summary').textContent,
  note: document.querySelector('#reconcile-lines tr[data-model="mystery-model"] .status').title,
};"#,
            )
            .await;
        assert_eq!(
            shown["rows"],
            json!([
                [
                    "gpt-4o", "$0.35", "$0.7", "+$0.35", "100.00%", "100.00%", "outside"
                ],
                [
                    "gpt-4o-mini",
                    "—",
                    "$0.24",
                    "+$0.24",
                    "n/a",
                    "n/a",
                    "only in tollgate"
                ],
                [
                    "mystery-model",
                    "—",
                    "$0",
                    "+$0",
                    "n/a",
                    "n/a",
                    "only in tollgate"
                ],
                [
                    "Total", "$0.35", "$0.94", "+$0.59", "168.57%", "1282.32%", "outside"
                ],
            ])
        );
        let summary = shown["summary"].as_str().unwrap();
        assert!(
            summary.ends_with(
                ": 3 lines of 3 outside 0.5% · $0.02 of OpenAI charges tollgate does not meter"
            ),
            "{summary}"
        );
        assert!(
            shown["note"]
                .as_str()
                .unwrap()
                .starts_with("only in tollgate's ledger"),
            "{shown}"
        );
        let png = browser.screenshot().await;
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("dashboard-reconcile.png"), &png).unwrap();
    })
    .await;
    let asked = api.received();
    let costs = asked
        .iter()
        .find(|r| org_api::endpoint(r) == "costs")
        .unwrap();
    assert_eq!(
        org_api::query(costs)["end_time"],
        (yesterday_s + 86_400).to_string(),
        "up to yesterday, included"
    );
    for request in &asked {
        assert_eq!(request.headers["authorization"], "Bearer sk-admin-dash");
    }
}

/// What the page shows, read from the DOM as a reader sees it (text, bar widths).
const READ_PAGE: &str = r#"
const text = (node, css) => node.querySelector(css).textContent;
const rows = (css) => Array.from(document.querySelectorAll(css));
const top = document.querySelector('#keys tbody tr');
return {
  total: document.getElementById('total-cost').textContent,
  teams: rows('#teams tbody tr').map((r) => [text(r, '.name'), text(r, '.cost')]),
  models: rows('#models .bar-row').map((r) => [text(r, '.label'), text(r, '.figure')]),
  tiers: rows('#tiers .bar-row').map((r) => [text(r, '.label'), text(r, '.figure')]),
  providers: rows('#providers .bar-row').map((r) => [text(r, '.label'), text(r, '.figure')]),
  topKey: [text(top, '.prefix'), text(top, '.name'), text(top, '.team'), text(top, '.cost')],
  acmeBars: rows('#team-chart rect[data-team="acme"]').length,
  bucket: document.getElementById('bucket-label').textContent,
  budgets: rows('#budgets .bar-row').map((r) => [r.dataset.scope, r.dataset.name,
    text(r, '.figure'), r.querySelector('.fill').style.width, r.className]),
};
"#;
