//! The background writer against a real SQLite file: every row begun is stored once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollgate::config::LedgerConfig;
use tollgate::ledger::{LedgerRow, LedgerWriter, Outcome, Store};
use tollgate::metering::{Usage, UsageSource};

fn row(id: usize) -> LedgerRow {
    LedgerRow {
        id: format!("row-{id}"),
        request_id: format!("req-{id}"),
        upstream_request_id: None,
        ts_ms: 1_700_000_000_000 + i64::try_from(id).unwrap(),
        caller: "fp:abc".to_owned(),
        upstream: "openai".to_owned(),
        endpoint: "chat.completions".to_owned(),
        model_requested: Some("gpt-4o-mini".to_owned()),
        model_answered: None,
        streamed: false,
        usage: Usage {
            prompt_tokens: 10,
            cached_tokens: 0,
            completion_tokens: u64::try_from(id).unwrap(),
            reasoning_tokens: 0,
        },
        usage_source: UsageSource::Upstream,
        status: 200,
        outcome: Outcome::Ok,
        latency_ms: 1,
        ttfb_ms: Some(1),
        price: None,
    }
}

#[tokio::test]
async fn concurrent_rows_are_all_stored_once_and_replays_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = Store::open(&url).await.unwrap();
    let config = LedgerConfig {
        batch_size: 64,
        ..LedgerConfig::default()
    };
    let (writer, _task) = LedgerWriter::spawn(store.clone(), &config);

    let mut tasks = Vec::new();
    for worker in 0..10 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                writer.begin().record(row(worker * 100 + i)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The same ids again, as a replay would send them.
    for i in 0..100 {
        writer.begin().record(row(i)).await;
    }
    writer.flush().await;

    let Store::Sqlite(sqlite) = &store;
    let (count, completion): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(completion_tokens) FROM requests")
            .fetch_one(sqlite.pool())
            .await
            .unwrap();
    assert_eq!(count, 1000);
    assert_eq!(completion, (0..1000).sum::<i64>());
}

#[tokio::test]
async fn flush_waits_for_rows_begun_but_not_yet_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = Store::open(&url).await.unwrap();
    let (writer, _task) = LedgerWriter::spawn(store.clone(), &LedgerConfig::default());

    let pending = writer.begin();
    let flush = tokio::spawn({
        let writer = writer.clone();
        async move { writer.flush().await }
    });
    tokio::task::yield_now().await;
    assert!(!flush.is_finished(), "a begun row holds the flush");
    pending.record(row(1)).await;
    flush.await.unwrap();

    let Store::Sqlite(sqlite) = &store;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM requests")
        .fetch_one(sqlite.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
}
