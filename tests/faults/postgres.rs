//! Postgres stopped for 30 s while 50 clients keep sending, then started again.

use std::time::{Duration, Instant};

use crate::kit::{self, Load, PrivatePostgres, Shape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_30s_under_load_loses_and_doubles_nothing() {
    if !kit::enabled("postgres_down_30s") {
        return;
    }
    let postgres = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut tollgate, keys, spill) = kit::one_tollgate(dir.path(), &postgres.url()).await;
    let load = Load::start(
        std::slice::from_ref(&tollgate.base),
        &keys,
        &Shape::steady(50, Duration::from_millis(20)),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    postgres.down();
    let outage = Instant::now();
    let mut most_spilled = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        most_spilled = most_spilled.max(tollgate.spilled().await);
    }
    postgres.up();
    let back = Instant::now();
    kit::eventually(
        "the database to answer",
        Duration::from_secs(30),
        async || tollgate.ready().await["database"] == "ok",
    )
    .await;
    let answered_after = back.elapsed();
    tollgate.await_replayed(Duration::from_secs(60)).await;
    let replayed_after = back.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = load.stop().await;

    tollgate.stop().await;
    let rows = kit::ledger_rows(&postgres.url()).await;
    let audit = kit::audit(&told, &rows, &keys);
    eprintln!(
        "postgres down 30s: {} answered, {} rows, {} lost, {} doubled, {} spilled at most, \
         tollgate saw the database again {:?} and had replayed the spill {:?} after \
         Postgres was back, not answered: {:?}",
        audit.answered,
        audit.rows,
        audit.lost.len(),
        audit.doubled.len(),
        most_spilled,
        answered_after,
        replayed_after,
        audit.refused
    );
    audit.assert_none_lost_or_doubled();
    assert_eq!(audit.rows, audit.answered, "one row per answered request");
    assert!(
        audit.refused.is_empty(),
        "every request is served through the outage: {:?}",
        audit.refused
    );
    assert!(
        most_spilled > 100,
        "the outage went to the spill: {most_spilled}"
    );
    let log = tollgate.log_text();
    assert!(
        log.contains("replayed spilled ledger rows into the database"),
        "{log}"
    );
    kit::assert_spill_deleted(&spill);
    // Served all along: the load went on at its rate through the outage.
    let during = told
        .iter()
        .filter(|t| t.at > outage && t.at < back && t.answered())
        .count();
    assert!(
        during > 1000,
        "{during} requests answered during the outage"
    );
}
