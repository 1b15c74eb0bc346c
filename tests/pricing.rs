//! Every row carries its exact cost and the unit prices it was charged at; a model no
//! catalog prices is recorded as unpriced, or refused when configured so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::harness::{Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, chat_completion, json};
use serde_json::{Value, json};

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_row_stores_its_cost_and_the_rates_it_was_charged_at() {
    // The upstream answers with the dated snapshot; it is priced as its family.
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(12, 5))).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    tollgate
        .post("/v1/chat/completions")
        .json(&ask("gpt-4o-mini"))
        .send()
        .await
        .unwrap();

    let row = tollgate.only_row().await;
    // 12 x $0.15 + 5 x $0.60 per 1M tokens = $0.0000048 = 4,800,000 pico-USD.
    assert_eq!(row.cost_pico, Some(4_800_000));
    assert_eq!(row.priced_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.price_variant.as_deref(), Some("standard"));
    assert_eq!(row.rates, (Some(150_000), Some(75_000), Some(600_000)));
}

#[tokio::test]
async fn config_overrides_and_aliases_price_what_the_catalog_lacks() {
    let upstream = MockUpstream::start(|_| {
        let mut body = chat_completion(1_000, 1_000);
        body["model"] = json!("my-azure-deployment");
        json(StatusCode::OK, &body)
    })
    .await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.pricing = toml::from_str(
            r#"
            aliases = { "my-azure-deployment" = "gpt-4o-mini" }
            [models."gpt-4o-mini"]
            output = "0.70"
            "#,
        )
        .unwrap();
    })
    .await;
    tollgate
        .post("/v1/chat/completions")
        .json(&ask("my-azure-deployment"))
        .send()
        .await
        .unwrap();
    let rows = tollgate.rows().await;
    // 1,000 x $0.15 + 1,000 x $0.70 per 1M = $0.00085.
    assert_eq!(Harness::only(&rows).cost_pico, Some(850_000_000));
}

#[tokio::test]
async fn an_unknown_model_is_recorded_unpriced_not_free() {
    let upstream = MockUpstream::start(|_| {
        let mut body = chat_completion(7, 3);
        body["model"] = json!("mystery-model-9");
        json(StatusCode::OK, &body)
    })
    .await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/chat/completions")
        .json(&ask("mystery-model-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the request still goes through");
    let row = tollgate.only_row().await;
    assert_eq!((row.prompt_tokens, row.completion_tokens), (7, 3));
    assert_eq!(row.cost_pico, None, "unknown, never a silent $0");
    assert_eq!(row.priced_model, None);
    let metrics = tollgate
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_unpriced_requests_total{model=\"mystery-model-9\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unknown_model_is_refused_before_forwarding_when_configured() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.pricing.unknown_model = tollgate::config::UnknownModelPolicy::Reject;
    })
    .await;
    let refused = tollgate
        .post("/v1/chat/completions")
        .json(&ask("mystery-model-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(
        (error["code"].as_str(), error["param"].as_str()),
        (Some("model_not_priced"), Some("model"))
    );
    assert!(upstream.received().is_empty(), "nothing was forwarded");

    let allowed = tollgate
        .post("/v1/chat/completions")
        .json(&ask("gpt-4o-mini-2024-07-18"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
}

#[tokio::test]
async fn a_body_too_large_to_hold_streams_through_and_is_still_priced_from_its_tail() {
    // ~6 MB of embedding, larger than the 4 MiB tollgate holds whole.
    let vector: Vec<f64> = vec![0.012_345_678_9; 400_000];
    let answer = json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8000, "total_tokens": 8000}
    });
    let expected_len = answer.to_string().len();
    let upstream = MockUpstream::start(move |_| json(StatusCode::OK, &answer)).await;
    let tollgate = Harness::start(&upstream.base_url).await;
    let response = tollgate
        .post("/v1/embeddings")
        .json(&json!({"model": "text-embedding-3-small", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-tollgate-cost-usd").is_none());
    assert_eq!(
        response.bytes().await.unwrap().len(),
        expected_len,
        "the body arrives whole"
    );
    let row = tollgate.only_row().await;
    assert_eq!(
        (row.prompt_tokens, row.usage_source.as_str()),
        (8000, "upstream")
    );
    // 8,000 x $0.02 per 1M = $0.00016.
    assert_eq!(row.cost_pico, Some(160_000_000));
}

#[tokio::test]
async fn a_request_beyond_the_context_window_is_refused_before_forwarding() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.pricing = toml::from_str(
            r#"
            enforce_context_window = true
            [models."tiny-model"]
            input = "1"
            output = "1"
            context_window = 100
            "#,
        )
        .unwrap();
    })
    .await;
    let ask = |content: String, cap: u64| json!({"model": "tiny-model", "max_completion_tokens": cap, "messages": [{"role": "user", "content": content}]});
    // "hello " x 50 is about 50 tokens; with 7 of message framing, under 60 in the
    // messages: 40 more fit in 100, 60 more do not.
    let fits = tollgate
        .post("/v1/chat/completions")
        .json(&ask("hello ".repeat(50), 40))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    let refused = tollgate
        .post("/v1/chat/completions")
        .json(&ask("hello ".repeat(50), 60))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(error["code"], "context_length_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 100 tokens"),
        "{body}"
    );
    assert_eq!(
        upstream.received().len(),
        1,
        "the refused request was not forwarded"
    );
    assert_eq!(tollgate.rows().await.len(), 1, "nor billed");
}
