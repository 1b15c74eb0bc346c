//! 10,000 requests from 100 concurrent clients over 20 keys in 4 teams: the per-key and
//! per-team totals in the ledger equal the exact sum of the costs the clients were told,
//! on SQLite and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::db::backends;
use common::harness::Harness;
use common::mock_upstream::scripted_usage;
use serde_json::json;
use tokio::sync::Mutex;
use tollgate::config::AuthMode;
use tollgate::pricing::Cost;

const REQUESTS: usize = 10_000;
const CLIENTS: usize = 100;
const TEAMS: usize = 4;
const KEYS_PER_TEAM: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_totals_equal_the_sum_of_every_request_cost() {
    for backend in backends().await {
        let upstream = scripted_usage().await;
        let url = backend.url.clone();
        let tollgate = Arc::new(
            Harness::start_with(&upstream.base_url, |config| {
                config.auth.mode = AuthMode::Keys;
                config.database.url = url;
            })
            .await,
        );
        let mut keys = Vec::new();
        for team in 0..TEAMS {
            for k in 0..KEYS_PER_TEAM {
                let secret = tollgate
                    .key(&format!("team-{team}"), json!({"name": format!("k{k}")}))
                    .await;
                keys.push((format!("team-{team}"), secret));
            }
        }
        let keys = Arc::new(keys);
        // What each client was told each request cost, summed exactly (pico-USD).
        let told: Arc<Mutex<BTreeMap<String, u128>>> = Arc::default();
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let (tollgate, keys, told) = (tollgate.clone(), keys.clone(), told.clone());
            clients.push(tokio::spawn(async move {
                let mut mine: BTreeMap<String, u128> = BTreeMap::new();
                for i in (client..REQUESTS).step_by(CLIENTS) {
                    let (team, key) = &keys[i % keys.len()];
                    // Odd token counts, so costs have long decimal tails.
                    let response = tollgate
                        .chat(key, &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
                        .header("x-mock-prompt", (i * 7919 % 100_003).to_string())
                        .header("x-mock-completion", (i * 104_729 % 9_973).to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let cost: Cost = response.headers()["x-tollgate-cost-usd"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    *mine.entry(key[..11].to_owned()).or_default() += cost.as_pico();
                    *mine.entry(team.clone()).or_default() += cost.as_pico();
                    response.bytes().await.unwrap();
                }
                let mut told = told.lock().await;
                for (group, pico) in mine {
                    *told.entry(group).or_default() += pico;
                }
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
        let told = told.lock().await;
        let by_key = tollgate.spend("group_by=key").await;
        let by_team = tollgate.spend("group_by=team").await;
        assert_eq!(by_key.len(), TEAMS * KEYS_PER_TEAM, "{}", backend.name);
        assert_eq!(by_team.len(), TEAMS, "{}", backend.name);
        let mut requests = 0;
        for (group, line) in by_key.iter().chain(by_team.iter()) {
            let stored: Cost = line["cost_usd"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                stored.as_pico(),
                told[group],
                "{}: {group} stored {stored}, clients were told {}",
                backend.name,
                Cost::from_pico(told[group])
            );
            requests += line["requests"].as_u64().unwrap();
        }
        assert_eq!(requests, 2 * REQUESTS as u64, "{}", backend.name);
    }
}
