//! tollgate keys: issued by the admin API, checked from the in-memory cache, revoked
//! everywhere within a second, limited to their models; the admin API itself; and
//! `/v1/tollgate/me`, which shows a key its own standing and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::db::{Backend, backends};
use common::harness::{ADMIN_KEY, Harness, assert_openai_error};
use common::mock_upstream::{MockUpstream, chat_completion, json};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::config::AuthMode;

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
}

/// tollgate in keys mode on `backend`'s database.
async fn keys_mode(upstream: &str, backend: &Backend) -> Harness {
    let url = backend.url.clone();
    Harness::start_with(upstream, |config| {
        config.auth.mode = AuthMode::Keys;
        config.database.url = url;
    })
    .await
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let code = assert_openai_error(&body)["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

#[tokio::test]
async fn a_key_authenticates_and_never_reaches_the_upstream() {
    for backend in backends().await {
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(3, 2))).await;
        let tollgate = keys_mode(&upstream.base_url, &backend).await;
        let key = tollgate.key("research", json!({"name": "notebook"})).await;
        assert!(key.starts_with("tg-") && key.len() == 46, "{key}");

        let response = tollgate
            .chat(&key, &ask("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let sent = upstream.last();
        assert_eq!(sent.headers["authorization"], "Bearer sk-upstream-secret");

        let by_team = tollgate.spend("group_by=team").await;
        assert_eq!(by_team["research"]["requests"], 1);
        assert_eq!(by_team["research"]["prompt_tokens"], 3);
        // 3 x $0.15 + 2 x $0.60 per 1M = $0.00000165.
        assert_eq!(by_team["research"]["cost_usd"], "0.00000165");
        let prefix = &key[..11];
        assert_eq!(tollgate.spend("group_by=key").await[prefix]["requests"], 1);
    }
}

#[tokio::test]
async fn missing_unknown_revoked_and_expired_keys_get_401() {
    for backend in backends().await {
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
        let tollgate = keys_mode(&upstream.base_url, &backend).await;
        let live = tollgate.key("a", json!({})).await;
        let expired = tollgate
            .key(
                "a",
                json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"}),
            )
            .await;

        let none = tollgate
            .client
            .post(format!("{}/v1/chat/completions", tollgate.url))
            .json(&ask("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(none).await, (401, "invalid_api_key".into()));
        let forged = format!("tg-{}", "A".repeat(43));
        for bad in [forged.as_str(), "sk-proj-123", expired.as_str()] {
            let response = tollgate
                .chat(bad, &ask("gpt-4o-mini"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                error_code(response).await,
                (401, "invalid_api_key".into()),
                "{bad}"
            );
        }
        // Pass-through routes need a key too.
        let models = tollgate.get("/v1/models").send().await.unwrap();
        assert_eq!(models.status(), 401);

        let revoked = tollgate
            .admin(Method::DELETE, &format!("/admin/keys/{}", &live[..11]))
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
        let body: Value = revoked.json().await.unwrap();
        assert!(body["revoked_ms"].is_i64(), "{body}");
        let response = tollgate
            .chat(&live, &ask("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("revoked"), "{text}");
        assert!(!text.contains(&live[11..]), "the secret is never echoed");
        assert!(upstream.received().is_empty());
    }
}

#[tokio::test]
async fn a_revocation_reaches_another_replica_within_a_second() {
    for backend in backends().await {
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
        let a = keys_mode(&upstream.base_url, &backend).await;
        let b = keys_mode(&upstream.base_url, &backend).await;
        // The replica learns of a new key by polling, too.
        let key = a.key("t", json!({})).await;
        let deadline = Instant::now() + Duration::from_secs(2);
        while b
            .chat(&key, &ask("gpt-4o-mini"))
            .send()
            .await
            .unwrap()
            .status()
            != 200
        {
            assert!(Instant::now() < deadline, "replica never saw the new key");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let revoked_at = Instant::now();
        a.admin(Method::POST, &format!("/admin/keys/{}/revoke", &key[..11]))
            .send()
            .await
            .unwrap();
        loop {
            let status = b
                .chat(&key, &ask("gpt-4o-mini"))
                .send()
                .await
                .unwrap()
                .status();
            if status == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "replica still accepts a revoked key after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_model_outside_the_allowed_list_is_forbidden() {
    for backend in backends().await {
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
        let tollgate = keys_mode(&upstream.base_url, &backend).await;
        let key = tollgate
            .key("t", json!({"allowed_models": ["gpt-4o-mini", "o3*"]}))
            .await;
        for allowed in ["gpt-4o-mini", "o3-mini"] {
            let response = tollgate.chat(&key, &ask(allowed)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{allowed}");
        }
        let response = tollgate.chat(&key, &ask("gpt-4o")).send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            (403, "model_not_allowed".into())
        );
        assert_eq!(upstream.received().len(), 2);
    }
}

#[tokio::test]
async fn the_admin_api_takes_only_the_admin_key() {
    for backend in backends().await {
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
        let tollgate = keys_mode(&upstream.base_url, &backend).await;
        let key = tollgate.key("t", json!({})).await;
        let url = format!("{}/admin/keys", tollgate.url);
        let none = tollgate.client.get(&url).send().await.unwrap();
        assert_eq!(error_code(none).await, (401, "invalid_api_key".into()));
        let wrong = tollgate
            .client
            .get(&url)
            .bearer_auth("admin-guess")
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(wrong).await, (401, "invalid_api_key".into()));
        let tenant = tollgate
            .client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(tenant).await, (403, "admin_only".into()));
        let admin = tollgate
            .client
            .get(&url)
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200);
        let listed: Value = admin.json().await.unwrap();
        let listed = listed.to_string();
        assert!(
            !listed.contains(&key[11..]),
            "a listing never holds a secret"
        );
        assert!(!listed.contains("hash"), "{listed}");
        // The admin key is not a tollgate key.
        let me = tollgate
            .get("/v1/tollgate/me")
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 401);
    }
}

#[tokio::test]
async fn admin_writes_validate_and_refuse_duplicates() {
    for backend in backends().await {
        let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
        let tollgate = keys_mode(&upstream.base_url, &backend).await;
        let post = |path: &str, body: Value| tollgate.admin(Method::POST, path).json(&body).send();

        let team = post(
            "/admin/teams",
            json!({"name": "ml", "tier": "tier-2", "budget_usd": 12.5, "budget_period": "weekly"}),
        )
        .await
        .unwrap();
        assert_eq!(team.status(), 201);
        let team: Value = team.json().await.unwrap();
        assert_eq!(team["budget_usd"], "12.5");
        assert_eq!(team["budget_period"], "weekly");
        assert_eq!(team["tier"], "tier-2");

        let again = post("/admin/teams", json!({"name": "ml"})).await.unwrap();
        assert_eq!(error_code(again).await, (409, "conflict".into()));
        let key = post("/admin/keys", json!({"team": "ml", "name": "k1"}))
            .await
            .unwrap();
        assert_eq!(key.status(), 201);
        let same = post("/admin/keys", json!({"team": "ml", "name": "k1"}))
            .await
            .unwrap();
        assert_eq!(error_code(same).await, (409, "conflict".into()));

        for (body, param) in [
            (json!({"team": "ml", "tier": "tier-9"}), "tier"),
            (json!({"team": "ml", "budget_usd": "-3"}), "budget_usd"),
            (
                json!({"team": "ml", "budget_usd": "0.0000001"}),
                "budget_usd",
            ),
            (
                json!({"team": "ml", "budget_usd": 1, "budget_period": "yearly"}),
                "budget_period",
            ),
            (json!({"team": "ml", "rpm": "sixty"}), "rpm"),
            (json!({"team": "ml", "expires_at": "soon"}), "expires_at"),
            (json!({"team": "nope"}), "team"),
            (json!({"name": "x"}), "team"),
            (json!({"team": "ml", "colour": "red"}), "colour"),
        ] {
            let response = post("/admin/keys", body.clone()).await.unwrap();
            assert_eq!(response.status(), 400, "{body}");
            let error: Value = response.json().await.unwrap();
            let named = assert_openai_error(&error)["param"]
                .as_str()
                .unwrap_or(".")
                .to_owned();
            assert!(
                named == param || error["error"]["message"].as_str().unwrap().contains(param),
                "{body}: {error}"
            );
        }
        let garbage = tollgate
            .admin(Method::POST, "/admin/keys")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(garbage.status(), 400);

        // PATCH: absent leaves a field, null clears it.
        let patched = tollgate
            .admin(Method::PATCH, "/admin/teams/ml")
            .json(&json!({"budget_usd": null}))
            .send()
            .await
            .unwrap();
        let patched: Value = patched.json().await.unwrap();
        assert!(patched.get("budget_usd").is_none(), "{patched}");
        assert_eq!(patched["tier"], "tier-2");
        let missing = tollgate
            .admin(Method::GET, "/admin/keys/nope")
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
}

#[tokio::test]
async fn admin_spend_validates_every_parameter_and_speaks_csv() {
    for backend in backends().await {
        let upstream =
            MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1_000, 500))).await;
        let tollgate = keys_mode(&upstream.base_url, &backend).await;
        let key = tollgate.key("alpha", json!({})).await;
        tollgate
            .chat(&key, &ask("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        tollgate.flush().await;

        for (query, param) in [
            ("group_by=week", "group_by"),
            ("from=yesterday", "from"),
            ("to=2026-13-45", "to"),
            ("format=xml", "format"),
            ("team=ghost", "team"),
            ("key=tg-nothing", "key"),
            ("colour=red", "colour"),
            ("from=2026-02-01&to=2026-01-01", "from"),
        ] {
            let response = tollgate
                .admin(Method::GET, &format!("/admin/spend?{query}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{query}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(assert_openai_error(&body)["param"], param, "{query}");
        }
        let csv = tollgate
            .admin(
                Method::GET,
                "/admin/spend?group_by=model&format=csv&from=1d",
            )
            .send()
            .await
            .unwrap();
        assert!(
            csv.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let csv = csv.text().await.unwrap();
        // 1,000 x $0.15 + 500 x $0.60 per 1M = $0.00045.
        assert!(csv.starts_with("group,requests,prompt_tokens"), "{csv}");
        assert!(csv.contains("gpt-4o-mini,1,1000,0,500,0,0.00045,"), "{csv}");
        let by_day = tollgate.spend("group_by=day&team=alpha").await;
        assert_eq!(by_day.len(), 1);
        let by_hour = tollgate
            .spend(&format!("group_by=hour&key={}", &key[..11]))
            .await;
        assert!(
            by_hour.keys().next().unwrap().ends_with(":00:00Z"),
            "{by_hour:?}"
        );
        // A range in the past holds nothing.
        assert!(tollgate.spend("to=2020-01-01").await.is_empty());
    }
}

#[tokio::test]
async fn me_shows_a_key_its_own_standing_and_nothing_of_others() {
    for backend in backends().await {
        let upstream =
            MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(10, 10))).await;
        let tollgate = keys_mode(&upstream.base_url, &backend).await;
        let mine = tollgate
            .key(
                "blue",
                json!({"name": "mine", "budget_usd": "1", "budget_period": "daily"}),
            )
            .await;
        let theirs = tollgate.key("red", json!({"name": "theirs"})).await;
        for _ in 0..3 {
            tollgate
                .chat(&theirs, &ask("gpt-4o-mini"))
                .send()
                .await
                .unwrap();
        }
        tollgate
            .chat(&mine, &ask("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        tollgate.flush().await;

        let me: Value = tollgate
            .get("/v1/tollgate/me")
            .bearer_auth(&mine)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["key"]["name"], "mine");
        assert_eq!(me["team"]["name"], "blue");
        assert_eq!(me["spend"]["today"]["requests"], 1);
        assert_eq!(me["spend"]["all_time"]["requests"], 1);
        // 10 x $0.15 + 10 x $0.60 per 1M = $0.0000075.
        assert_eq!(me["spend"]["all_time"]["cost_usd"], "0.0000075");
        let budget = &me["budgets"][0];
        assert_eq!(budget["scope"], "key");
        assert_eq!(budget["budget_usd"], "1");
        assert_eq!(budget["spent_usd"], "0.0000075");
        assert_eq!(budget["remaining_usd"], "0.9999925");
        let text = me.to_string();
        assert!(!text.contains("theirs") && !text.contains("red"), "{text}");
        // Nothing else of another key is reachable either.
        for path in ["/admin/keys", "/admin/spend", "/admin/teams/red"] {
            let response = tollgate.get(path).bearer_auth(&mine).send().await.unwrap();
            assert_eq!(response.status(), 403, "{path}");
        }
    }
}

#[tokio::test]
async fn passthrough_attributes_spend_to_the_callers_fingerprint() {
    let upstream = MockUpstream::start(|_| json(StatusCode::OK, &chat_completion(1, 1))).await;
    let tollgate = Harness::start_with(&upstream.base_url, |config| {
        config.auth.mode = AuthMode::Passthrough;
        config.upstreams[0].api_key_env = None;
    })
    .await;
    for key in ["sk-alice-1", "sk-alice-1", "sk-bob-2"] {
        tollgate
            .chat(key, &ask("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(upstream.last().headers["authorization"], "Bearer sk-bob-2");
    let by_key = tollgate.spend("group_by=key").await;
    let counts: Vec<u64> = by_key
        .values()
        .map(|l| l["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(by_key.len(), 2);
    assert!(counts.contains(&2) && counts.contains(&1));
    assert!(
        by_key.keys().all(|group| group.starts_with("fp:")),
        "{by_key:?}"
    );
    let text = serde_json::to_string(&by_key).unwrap();
    assert!(!text.contains("alice") && !text.contains("sk-"), "{text}");
}
