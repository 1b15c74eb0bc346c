//! Budgets and service tiers, on SQLite and Postgres: a request is reserved at the
//! rates of the dearest tier it can be billed at, checked through the exact amount each
//! refusal says it needed, and where reservations straddle what is left, the tier
//! decides what is admitted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::db::backends;
use common::harness::{ADMIN_KEY, assert_openai_error};
use common::tiered::{tiered_upstream, tollgate_on};
use serde_json::{Value, json};
use tollgate::metering::{Endpoint, tokens};
use tollgate::pricing::{AutoTier, Cost};

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
