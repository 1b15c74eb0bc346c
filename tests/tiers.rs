//! Service tiers, end to end on SQLite and Postgres: a scripted upstream answers at the
//! tier each test asks for, and every row's requested and served tier, price variant,
//! rates and cost are asserted exactly, as are the rollups, the metrics and the budget
//! reservations made before forwarding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use common::db::{Backend, backends};
use common::harness::{ADMIN_KEY, Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, json as answer, sse};
use serde_json::{Value, json};
use tollgate::config::AuthMode;
use tollgate::ledger::Store;
use tollgate::metering::{Endpoint, tokens};
use tollgate::pricing::{AutoTier, Cost};

/// The scripted upstream. Per request, by header: `x-mock-model` (default: the model
/// asked for), `x-mock-tier` (the answer's `service_tier`; absent: the field is left
/// out), `x-mock-prompt` / `x-mock-cached` / `x-mock-completion` (usage; 10,000 / 4,000
/// / 1,000 by default), and for a chat stream `x-mock-chunk-tiers`, one tier per content
/// chunk (`-` leaves the field out), with the usage chunk at `x-mock-tier`.
async fn tiered_upstream() -> MockUpstream {
    MockUpstream::start(|received| {
        let request = received.json();
        let header = |name: &str| {
            received
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let number =
            |name: &str, default: u64| header(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        let (prompt, cached, completion) = (
            number("x-mock-prompt", 10_000),
            number("x-mock-cached", 4_000),
            number("x-mock-completion", 1_000),
        );
        let model = header("x-mock-model")
            .unwrap_or_else(|| request["model"].as_str().unwrap_or_default().to_owned());
        let tier = header("x-mock-tier");
        let with_tier = |mut body: Value, tier: Option<&str>| {
            if let Some(tier) = tier.filter(|t| *t != "-") {
                body["service_tier"] = json!(tier);
            }
            body
        };
        let streamed = request["stream"] == true;
        if received.path.ends_with("/responses") {
            let usage = json!({"input_tokens": prompt, "output_tokens": completion,
                               "input_tokens_details": {"cached_tokens": cached}});
            let object = |status: &str, usage: Value, tier: Option<&str>| {
                with_tier(
                    json!({"id": "resp_1", "object": "response", "status": status,
                           "model": model, "output": [], "usage": usage}),
                    tier,
                )
            };
            if !streamed {
                return answer(StatusCode::OK, &object("completed", usage, tier.as_deref()));
            }
            // `response.created` echoes the tier asked for; `response.completed` says
            // which one served.
            let asked = request["service_tier"]
                .as_str()
                .unwrap_or("auto")
                .to_owned();
            let events = [
                json!({"type": "response.created",
                       "response": object("in_progress", Value::Null, Some(&asked))}),
                json!({"type": "response.output_text.delta", "delta": "Hi"}),
                json!({"type": "response.completed",
                       "response": object("completed", usage, tier.as_deref())}),
            ];
            return sse(&events.map(|e| e.to_string()));
        }
        let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion,
                           "prompt_tokens_details": {"cached_tokens": cached}});
        if !streamed {
            let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": model,
                              "choices": [{"index": 0, "finish_reason": "stop",
                                           "message": {"role": "assistant", "content": "Hi"}}],
                              "usage": usage});
            return answer(StatusCode::OK, &with_tier(body, tier.as_deref()));
        }
        let chunk = |choices: Value, usage: Value, tier: Option<&str>| {
            let body = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                              "model": model, "choices": choices, "usage": usage});
            with_tier(body, tier).to_string()
        };
        let mut chunks: Vec<String> = header("x-mock-chunk-tiers")
            .unwrap_or_default()
            .split(',')
            .map(|t| {
                let delta = json!([{"index": 0, "delta": {"content": "word"}}]);
                chunk(delta, Value::Null, Some(t))
            })
            .collect();
        chunks.push(chunk(json!([]), usage, tier.as_deref()));
        chunks.push("[DONE]".to_owned());
        sse(&chunks)
    })
    .await
}

/// One row as these tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TierRow {
    requested: Option<String>,
    served: Option<String>,
    variant: Option<String>,
    /// input, cached input, output: micro-USD per 1M tokens.
    rates: (Option<i64>, Option<i64>, Option<i64>),
    cost_pico: Option<i64>,
}

/// Every row by its request id.
async fn rows(store: &Store) -> BTreeMap<String, TierRow> {
    type Raw = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let sql = "SELECT request_id, service_tier_requested, service_tier, price_variant, \
               input_rate, cached_input_rate, output_rate, cost_pico FROM requests";
    let raw: Vec<Raw> = match store {
        Store::Sqlite(ledger) => sqlx::query_as(sql).fetch_all(ledger.pool()).await,
        Store::Postgres(ledger) => sqlx::query_as(sql).fetch_all(ledger.pool()).await,
    }
    .unwrap();
    raw.into_iter()
        .map(|r| {
            let row = TierRow {
                requested: r.1,
                served: r.2,
                variant: r.3,
                rates: (r.4, r.5, r.6),
                cost_pico: r.7,
            };
            (r.0, row)
        })
        .collect()
}

/// Rates as micro-USD per 1M tokens, from USD per 1M written as the catalog writes them.
fn rates(input: &str, cached: &str, output: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
    // A USD amount's pico-dollars are its micro-dollars per million.
    let micros = |usd: &str| {
        let pico = usd.parse::<Cost>().unwrap().as_pico();
        Some(i64::try_from(pico / 1_000_000).unwrap())
    };
    (micros(input), micros(cached), micros(output))
}

fn usd_pico(usd: &str) -> Option<i64> {
    Some(i64::try_from(usd.parse::<Cost>().unwrap().as_pico()).unwrap())
}

async fn tollgate_on(backend: &Backend, upstream: &str, keys: bool, auto: AutoTier) -> Harness {
    let url = backend.url.clone();
    Harness::start_with(upstream, move |config| {
        config.database.url = url;
        config.pricing.auto_service_tier = auto;
        if keys {
            config.auth.mode = AuthMode::Keys;
        }
    })
    .await
}

/// A chat completion with `body` and the mock's headers; returns the status.
async fn send(
    tollgate: &Harness,
    path: &str,
    id: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut request = tollgate
        .post(path)
        .header("x-request-id", id)
        .body(body.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    response.bytes().await.unwrap();
    status
}

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
        // (request id, model, requested tier, answered tier, expected row). Usage is
        // 10,000 prompt (4,000 cached) and 1,000 completion tokens throughout; costs
        // are (10,000 − 4,000) × input + 4,000 × cached + 1,000 × output per 1M.
        // (request id, model, tier asked, tier answered, row)
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

fn row(
    requested: Option<&str>,
    served: &str,
    variant: &str,
    (input, cached, output): (&str, &str, &str),
    usd: &str,
) -> TierRow {
    TierRow {
        requested: requested.map(str::to_owned),
        served: Some(served.to_owned()),
        variant: Some(variant.to_owned()),
        rates: rates(input, cached, output),
        cost_pico: usd_pico(usd),
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

/// The reservation a budget check asked for, from its 429: "this request needs up to
/// $X".
fn needed(body: &Value) -> Cost {
    let message = body["error"]["message"].as_str().unwrap();
    let (_, rest) = message.split_once("needs up to $").unwrap();
    let (amount, _) = rest.split_once(')').unwrap();
    amount.parse().unwrap()
}

#[tokio::test]
async fn budgets_reserve_at_the_dearest_tier_the_request_can_be_billed_at() {
    for backend in backends().await {
        let upstream = tiered_upstream().await;
        for auto in [AutoTier::Default, AutoTier::Priority] {
            let tollgate = tollgate_on(&backend, &upstream.base_url, true, auto).await;
            let ask = |model: &str, tier: Option<&str>, max_tokens: u64| {
                let mut body = json!({"model": model, "max_tokens": max_tokens,
                                      "messages": [{"role": "user", "content": "Tell me a story."}]});
                if let Some(tier) = tier {
                    body["service_tier"] = json!(tier);
                }
                body
            };
            // Every request is refused by a budget of one micro-dollar, and its 429 says
            // what it would have reserved: the whole prompt uncached, plus every output
            // token allowed, at the worst-case tier's rates (µ$ per 1M × tokens = p$).
            let broke = tollgate
                .key(
                    &format!("broke-{auto:?}"),
                    json!({"budget_usd": "0.000001", "budget_period": "daily"}),
                )
                .await;
            let project = if auto == AutoTier::Priority {
                (450_000, 3_600_000)
            } else {
                (250_000, 2_000_000)
            };
            // (model, tier asked for, (input, output) rates charged)
            let cases = [
                ("gpt-5-mini", Some("flex"), (125_000, 1_000_000)),
                ("gpt-5-mini", Some("priority"), (450_000, 3_600_000)),
                ("gpt-5-mini", Some("default"), (250_000, 2_000_000)),
                ("gpt-5-mini", Some("auto"), project),
                ("gpt-5-mini", None, project),
                // No priority sheet: reserved (and billed) at standard.
                ("gpt-5-nano", Some("priority"), (50_000, 400_000)),
                ("gpt-5-mini", Some("scale"), (250_000, 2_000_000)),
                ("gpt-5-mini", Some("turbo"), (250_000, 2_000_000)),
            ];
            for (model, tier, (input, output)) in cases {
                let body = ask(model, tier, 1_000);
                let prompt = tokens::count_prompt(Endpoint::ChatCompletions, model, &body);
                assert!(prompt > 0);
                let response = tollgate.chat(&broke, &body).send().await.unwrap();
                assert_eq!(response.status(), 429, "{}: {model} {tier:?}", backend.name);
                let refusal: Value = response.json().await.unwrap();
                assert_openai_error(&refusal);
                let want = Cost::from_pico(u128::from(prompt * input + 1_000 * output));
                assert_eq!(
                    needed(&refusal),
                    want,
                    "{}: {model} {tier:?} with auto = {auto:?}",
                    backend.name
                );
            }

            // Where the tiers' reservations straddle what is left, the tier decides:
            // 100,000 output tokens reserve $0.10 at flex, $0.20 at default and $0.36
            // at priority (plus a few prompt tokens), against $0.15 left.
            let key = tollgate
                .key(
                    &format!("tight-{auto:?}"),
                    json!({"budget_usd": "0.15", "budget_period": "daily"}),
                )
                .await;
            let scripted = [
                ("x-mock-prompt", "10"),
                ("x-mock-cached", "0"),
                ("x-mock-completion", "10"),
            ];
            let status = |tier: Option<&'static str>| {
                let mut request = tollgate.chat(&key, &ask("gpt-5-mini", tier, 100_000));
                for (name, value) in scripted {
                    request = request.header(name, value);
                }
                async move { request.send().await.unwrap().status().as_u16() }
            };
            assert_eq!(status(Some("flex")).await, 200, "{}", backend.name);
            assert_eq!(status(Some("default")).await, 429, "{}", backend.name);
            assert_eq!(status(Some("priority")).await, 429, "{}", backend.name);
            assert_eq!(status(None).await, 429, "{}: auto = {auto:?}", backend.name);
            tollgate.flush().await;
            let me: Value = tollgate
                .get("/v1/tollgate/me")
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            // The admitted flex request settled at what it used: 10 × 0.125 + 10 × 1.
            assert_eq!(me["budgets"][0]["reserved_usd"], "0", "{me}");
            assert_eq!(me["budgets"][0]["spent_usd"], "0.00001125", "{me}");
            let admin = reqwest::Client::new()
                .get(format!(
                    "{}/admin/spend?group_by=tier&key={}",
                    tollgate.url,
                    &key[..11]
                ))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap();
            let lines: Value = admin.json().await.unwrap();
            assert_eq!(lines["data"][0]["group"], "flex", "{lines}");
        }
    }
}
