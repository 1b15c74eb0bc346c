//! One scripted upstream per provider kind, each checking the auth header and path it
//! receives and answering in that provider's usage shape; the ledger row of each is
//! priced exactly by that provider's rules, and no provider ever sees another's key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use common::harness::Harness;
use common::mock_upstream::{MockUpstream, Received, json, sse};
use serde_json::{Value, json};
use sqlx::Row as _;
use tollgate::config::{Config, ProviderKind, UpstreamConfig};
use tollgate::pricing::ModelPriceOverride;

const OPENAI_KEY: &str = "sk-upstream-secret";
const AZURE_KEY: &str = "az-secret-key";
const ANTHROPIC_KEY: &str = "ant-secret-key";
const GEMINI_KEY: &str = "gem-secret-key";
const KEYS: [&str; 4] = [OPENAI_KEY, AZURE_KEY, ANTHROPIC_KEY, GEMINI_KEY];

/// A provider's mock: answers 401 unless `auth` accepts the headers, and 500 if any
/// header carries a key that belongs to another provider.
async fn provider(
    own: Option<&'static str>,
    auth: fn(&Received) -> bool,
    answer: fn(&Received) -> axum::response::Response,
) -> MockUpstream {
    MockUpstream::start(move |received| {
        let foreign = received.headers.values().any(|value| {
            let text = value.to_str().unwrap_or_default();
            KEYS.iter()
                .any(|key| Some(*key) != own && text.contains(key))
        });
        if foreign {
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": {"message": "foreign key seen"}}),
            );
        }
        if !auth(received) {
            return json(
                StatusCode::UNAUTHORIZED,
                &json!({"error": {"message": "bad auth"}}),
            );
        }
        answer(received)
    })
    .await
}

fn header<'a>(received: &'a Received, name: &str) -> Option<&'a str> {
    received.headers.get(name).and_then(|v| v.to_str().ok())
}

fn streamed(received: &Received) -> bool {
    received.json()["stream"] == true
}

fn chat(model: &str, content: &str, usage: Value) -> Value {
    json!({
        "id": "chatcmpl-p", "object": "chat.completion", "created": 1_732_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage,
    })
}

fn chunks(model: &str, usage: Value) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    vec![
        chunk(json!({"role": "assistant", "content": "Hi"}), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [], "usage": usage})
        .to_string(),
        "[DONE]".to_owned(),
    ]
}

fn anthropic_answer(received: &Received) -> axum::response::Response {
    let body = received.json();
    if body["model"] == "claude-sonnet-4-5" {
        return json(
            StatusCode::from_u16(529).unwrap(),
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        );
    }
    let model = "claude-haiku-4-5-20251001";
    if streamed(received) {
        // Anthropic's native field names: input_tokens excludes cache reads and writes.
        return sse(&chunks(
            model,
            json!({"input_tokens": 500, "cache_read_input_tokens": 200,
                   "cache_creation_input_tokens": 300, "output_tokens": 100}),
        ));
    }
    json(
        StatusCode::OK,
        &chat(
            model,
            "Hello",
            json!({"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                   "prompt_tokens_details": {"cached_tokens": 200},
                   "cache_creation_input_tokens": 300}),
        ),
    )
}

fn gemini_answer(received: &Received) -> axum::response::Response {
    let usage = json!({"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
                       "prompt_tokens_details": {"cached_tokens": 400},
                       "completion_tokens_details": {"reasoning_tokens": 50}});
    if streamed(received) {
        return sse(&chunks("gemini-2.5-flash", usage));
    }
    json(StatusCode::OK, &chat("gemini-2.5-flash", "Hello", usage))
}

fn azure_answer(received: &Received) -> axum::response::Response {
    // Azure answers with the deployment's model as the body named it.
    let model = received.json()["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    json(
        StatusCode::OK,
        &chat(
            &model,
            "Hello",
            json!({"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}),
        ),
    )
}

fn local_answer(_: &Received) -> axum::response::Response {
    // A local server that reports no usage at all.
    json(
        StatusCode::OK,
        &json!({"id": "x", "object": "chat.completion", "model": "llama-3-8b",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, friend"}}]}),
    )
}

struct Providers {
    tollgate: Harness,
    openai: MockUpstream,
    azure: MockUpstream,
    deployed: MockUpstream,
    anthropic: MockUpstream,
    gemini: MockUpstream,
    local: MockUpstream,
}

fn upstream(
    name: &str,
    kind: ProviderKind,
    base: String,
    key: Option<&str>,
    model: &str,
) -> UpstreamConfig {
    UpstreamConfig {
        name: name.to_owned(),
        kind,
        base_url: base,
        api_key_env: key.map(str::to_owned),
        models: vec![model.to_owned()],
        ..UpstreamConfig::default()
    }
}

async fn start() -> Providers {
    let openai = provider(
        Some(OPENAI_KEY),
        |r| header(r, "authorization") == Some("Bearer sk-upstream-secret"),
        |_| {
            json(
                StatusCode::OK,
                &common::mock_upstream::chat_completion(10, 5),
            )
        },
    )
    .await;
    let azure = provider(
        Some(AZURE_KEY),
        |r| header(r, "api-key") == Some(AZURE_KEY) && header(r, "authorization").is_none(),
        azure_answer,
    )
    .await;
    let deployed = provider(
        Some(AZURE_KEY),
        |r| header(r, "api-key") == Some(AZURE_KEY) && header(r, "authorization").is_none(),
        azure_answer,
    )
    .await;
    let anthropic = provider(
        Some(ANTHROPIC_KEY),
        |r| {
            header(r, "x-api-key") == Some(ANTHROPIC_KEY)
                && header(r, "anthropic-version") == Some("2023-06-01")
        },
        anthropic_answer,
    )
    .await;
    let gemini = provider(
        Some(GEMINI_KEY),
        |r| header(r, "authorization") == Some("Bearer gem-secret-key"),
        gemini_answer,
    )
    .await;
    let local = provider(None, |_| true, local_answer).await;
    let urls = [
        format!("{}/openai/v1", azure.base_url),
        format!("{}/openai", deployed.base_url),
        format!("{}/v1", anthropic.base_url),
        format!("{}/v1beta/openai", gemini.base_url),
        format!("{}/v1", local.base_url),
    ];
    let env = [
        ("AZ_KEY", AZURE_KEY),
        ("ANT_KEY", ANTHROPIC_KEY),
        ("GEM_KEY", GEMINI_KEY),
    ];
    let tollgate = Harness::start_with_env(&openai.base_url, &env, |config: &mut Config| {
        config.upstreams[0].models = vec!["gpt-*".to_owned()];
        let [azure, deployed, anthropic, gemini, local] = urls;
        config.upstreams.extend([
            upstream(
                "azure",
                ProviderKind::Azure,
                azure,
                Some("AZ_KEY"),
                "azure/*",
            ),
            UpstreamConfig {
                deployments: BTreeMap::from([("my-4o".to_owned(), "gpt-4o".to_owned())]),
                api_version: Some("2024-10-21".to_owned()),
                ..upstream(
                    "azure-east",
                    ProviderKind::Azure,
                    deployed,
                    Some("AZ_KEY"),
                    "azd/*",
                )
            },
            upstream(
                "anthropic",
                ProviderKind::Anthropic,
                anthropic,
                Some("ANT_KEY"),
                "claude-*",
            ),
            upstream(
                "gemini",
                ProviderKind::Gemini,
                gemini,
                Some("GEM_KEY"),
                "gemini-*",
            ),
            upstream(
                "local",
                ProviderKind::OpenaiCompatible,
                local,
                None,
                "llama-*",
            ),
        ]);
        // A local model priced at 0 on purpose: recorded as priced, not unpriced.
        config.pricing.models.insert(
            "llama-3-8b".to_owned(),
            ModelPriceOverride {
                input: Some("0".parse().unwrap()),
                output: Some("0".parse().unwrap()),
                ..ModelPriceOverride::default()
            },
        );
    })
    .await;
    Providers {
        tollgate,
        openai,
        azure,
        deployed,
        anthropic,
        gemini,
        local,
    }
}

/// The provider columns of every row, in order.
#[derive(Debug, PartialEq, Eq)]
struct ProviderRow {
    provider: String,
    model_requested: Option<String>,
    priced_model: Option<String>,
    prompt: i64,
    cached: i64,
    cache_write: i64,
    completion: i64,
    reasoning: i64,
    cost_pico: Option<i64>,
    source: String,
    tokenizer: Option<String>,
    status: i64,
}

async fn provider_rows(harness: &Harness) -> Vec<ProviderRow> {
    harness.rows().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", harness.db.display()))
        .await
        .unwrap();
    let rows = sqlx::query("SELECT * FROM requests ORDER BY ts_ms, rowid")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| ProviderRow {
            provider: r.get("provider"),
            model_requested: r.get("model_requested"),
            priced_model: r.get("priced_model"),
            prompt: r.get("prompt_tokens"),
            cached: r.get("cached_tokens"),
            cache_write: r.get("cache_write_tokens"),
            completion: r.get("completion_tokens"),
            reasoning: r.get("reasoning_tokens"),
            cost_pico: r.get("cost_pico"),
            source: r.get("usage_source"),
            tokenizer: r.get("tokenizer"),
            status: r.get("status"),
        })
        .collect()
}

async fn ask(p: &Providers, model: &str, stream: bool) -> reqwest::Response {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if stream {
        body["stream"] = json!(true);
    }
    p.tollgate
        .post("/v1/chat/completions")
        .header("x-api-key", "client-sent-x-api-key")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_kind_is_addressed_authenticated_and_priced_by_its_rules() {
    let p = start().await;
    for (model, stream) in [
        ("gpt-4o-mini", false),
        ("azure/gpt-4o-mini", false),
        ("azd/gpt-4o", false),
        ("claude-haiku-4-5", false),
        ("claude-haiku-4-5", true),
        ("gemini-2.5-flash", false),
        ("gemini-2.5-flash", true),
        ("llama-3-8b", false),
    ] {
        let response = ask(&p, model, stream).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{model} stream={stream}: {text}");
    }

    // Paths and the model as each provider is asked for it.
    let last = |mock: &MockUpstream| mock.last();
    let at = |mock: &MockUpstream, path: &str| {
        let base = url::Url::parse(&mock.base_url).unwrap();
        format!("{}{path}", base.path().trim_end_matches('/'))
    };
    assert_eq!(last(&p.openai).path, at(&p.openai, "/chat/completions"));
    let azure = last(&p.azure);
    assert_eq!(azure.path, at(&p.azure, "/openai/v1/chat/completions"));
    assert_eq!(azure.json()["model"], "gpt-4o-mini", "prefix stripped");
    let deployed = last(&p.deployed);
    assert_eq!(
        deployed.path,
        at(&p.deployed, "/openai/deployments/my-4o/chat/completions")
    );
    assert_eq!(deployed.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(deployed.json()["model"], "my-4o");
    let anthropic = last(&p.anthropic);
    assert_eq!(anthropic.path, at(&p.anthropic, "/v1/chat/completions"));
    assert_eq!(anthropic.json()["model"], "claude-haiku-4-5");
    // The stream asked for its usage, as for OpenAI.
    assert_eq!(anthropic.json()["stream_options"]["include_usage"], true);
    assert_eq!(
        last(&p.gemini).path,
        at(&p.gemini, "/v1beta/openai/chat/completions")
    );
    assert_eq!(last(&p.local).path, at(&p.local, "/v1/chat/completions"));
    // A client's own key header never goes to an upstream tollgate holds a key for (a
    // keyless one in passthrough mode gets the client's credentials, as the bearer).
    assert_eq!(
        header(&last(&p.local), "x-api-key"),
        Some("client-sent-x-api-key")
    );
    for mock in [&p.openai, &p.azure, &p.deployed, &p.anthropic, &p.gemini] {
        for received in mock.received() {
            assert_eq!(
                header(&received, "x-api-key").filter(|v| v.contains("client")),
                None
            );
        }
    }

    let rows = provider_rows(&p.tollgate).await;
    assert_eq!(rows.len(), 8, "{rows:#?}");
    let row = |provider: &str,
               model: &str,
               priced: &str,
               usage: [i64; 5],
               cost: i64,
               source: &str,
               tokenizer: Option<&str>| ProviderRow {
        provider: provider.to_owned(),
        model_requested: Some(model.to_owned()),
        priced_model: Some(priced.to_owned()),
        prompt: usage[0],
        cached: usage[1],
        cache_write: usage[2],
        completion: usage[3],
        reasoning: usage[4],
        cost_pico: Some(cost),
        source: source.to_owned(),
        tokenizer: tokenizer.map(str::to_owned),
        status: 200,
    };
    // Hand-computed, USD per 1M tokens × tokens = micro-USD → × 10⁶ pico:
    // openai gpt-4o-mini: 10 × 0.15 + 5 × 0.60 = 4.5 micro
    assert_eq!(
        rows[0],
        row(
            "openai",
            "gpt-4o-mini",
            "gpt-4o-mini",
            [10, 0, 0, 5, 0],
            4_500_000,
            "upstream",
            None
        )
    );
    // azure v1, gpt-4o-mini: 1,000 × 0.15 + 100 × 0.60 = 210 micro
    assert_eq!(
        rows[1],
        row(
            "azure",
            "azure/gpt-4o-mini",
            "gpt-4o-mini",
            [1000, 0, 0, 100, 0],
            210_000_000,
            "upstream",
            None
        )
    );
    // azure deployment my-4o = gpt-4o: 1,000 × 2.50 + 100 × 10 = 3,500 micro
    assert_eq!(
        rows[2],
        row(
            "azure",
            "azd/gpt-4o",
            "gpt-4o",
            [1000, 0, 0, 100, 0],
            3_500_000_000,
            "upstream",
            None
        )
    );
    // anthropic haiku 4.5, plain and streamed (native fields): 500 × 1.00 + 200 × 0.10
    // + 300 × 1.25 (cache write) + 100 × 5.00 = 500 + 20 + 375 + 500 = 1,395 micro
    for r in &rows[3..5] {
        assert_eq!(
            *r,
            row(
                "anthropic",
                "claude-haiku-4-5",
                "claude-haiku-4-5",
                [1000, 200, 300, 100, 0],
                1_395_000_000,
                "upstream",
                None
            )
        );
    }
    // gemini 2.5 flash: 600 × 0.30 + 400 × 0.03 + 200 × 2.50 = 180 + 12 + 500 = 692 micro
    for r in &rows[5..7] {
        assert_eq!(
            *r,
            row(
                "gemini",
                "gemini-2.5-flash",
                "gemini-2.5-flash",
                [1000, 400, 0, 200, 50],
                692_000_000,
                "upstream",
                None
            )
        );
    }
    // local, no usage in its answer: estimated, with the tokenizer named as an
    // approximation, and priced at the configured 0 (not unpriced).
    let local = &rows[7];
    assert_eq!(local.provider, "openai_compatible");
    assert_eq!(local.source, "estimated");
    assert_eq!(
        local.tokenizer.as_deref(),
        Some("o200k_base (approximation)")
    );
    assert_eq!(local.cost_pico, Some(0));
    assert_eq!(local.priced_model.as_deref(), Some("llama-3-8b"));
    assert!(local.prompt > 0 && local.completion > 0, "{local:?}");
}

#[tokio::test]
async fn anthropic_overloaded_goes_out_as_a_retryable_503_with_its_body() {
    let p = start().await;
    let response = ask(&p, "claude-sonnet-4-5", false).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-upstream-status"], "529");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    let rows = provider_rows(&p.tollgate).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].provider.as_str(), rows[0].status),
        ("anthropic", 529)
    );
}

#[tokio::test]
async fn a_hosted_kind_with_its_key_variable_unset_is_refused_at_start() {
    let config = Config {
        upstreams: vec![UpstreamConfig {
            kind: ProviderKind::Gemini,
            api_key_env: Some("GEMINI_KEY_NOT_SET".to_owned()),
            ..UpstreamConfig::default()
        }],
        ..Config::default()
    };
    config.validate().unwrap();
    let error = tollgate::proxy::upstream::Upstreams::new(&config.upstreams, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("upstreams[0].api_key_env"), "{error}");
    assert!(error.contains("GEMINI_KEY_NOT_SET"), "{error}");
    assert!(!error.contains("secret"), "{error}");
}

/// The provider column and cache writes land on both backends, and the hourly rollup
/// is keyed by provider (migration 0006).
#[tokio::test]
async fn rows_and_rollups_carry_the_provider_on_every_backend() {
    use tollgate::ledger::{Kind, LedgerRow, Outcome, RowRoute};
    use tollgate::metering::{Usage, UsageSource};
    for backend in common::db::backends().await {
        let store = backend.open().await;
        let row = |id: &str, provider: &str| LedgerRow {
            id: id.to_owned(),
            provider: provider.to_owned(),
            tokenizer: None,
            request_id: id.to_owned(),
            upstream_request_id: None,
            ts_ms: 1_700_000_000_000,
            caller: "fp:a".to_owned(),
            upstream: provider.to_owned(),
            endpoint: "chat.completions".to_owned(),
            model_requested: Some("m".to_owned()),
            model_answered: None,
            service_tier_requested: None,
            service_tier: None,
            streamed: false,
            usage: Usage {
                prompt_tokens: 100,
                cache_write_tokens: 30,
                ..Usage::default()
            },
            usage_source: UsageSource::Upstream,
            status: 200,
            outcome: Outcome::Ok,
            latency_ms: 1,
            ttfb_ms: None,
            price: None,
            key_id: Some("k".to_owned()),
            team_id: None,
            kind: Kind::Realtime,
            route: RowRoute::default(),
        };
        store
            .insert(&[
                row("a", "anthropic"),
                row("b", "anthropic"),
                row("c", "gemini"),
            ])
            .await
            .unwrap();
        let sql = store.sql(
            "SELECT provider, CAST(sum(requests) AS BIGINT) FROM spend_hourly \
             GROUP BY provider ORDER BY provider",
        );
        let writes = "SELECT CAST(sum(cache_write_tokens) AS BIGINT) FROM requests";
        let (by_provider, written): (Vec<(String, i64)>, (i64,)) = match &store {
            tollgate::ledger::Store::Sqlite(l) => (
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(l.pool())
                    .await
                    .unwrap(),
                sqlx::query_as(writes).fetch_one(l.pool()).await.unwrap(),
            ),
            tollgate::ledger::Store::Postgres(l) => (
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(l.pool())
                    .await
                    .unwrap(),
                sqlx::query_as(writes).fetch_one(l.pool()).await.unwrap(),
            ),
        };
        assert_eq!(
            by_provider,
            [("anthropic".to_owned(), 2), ("gemini".to_owned(), 1)],
            "{}",
            backend.name
        );
        assert_eq!(written.0, 90, "{}", backend.name);
    }
}
