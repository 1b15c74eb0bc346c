//! The process itself under load: SIGTERM drains and flushes; `kill -9` loses only the
//! rows of its last moments, and a restart replays the spill without doubles.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::kit::{self, Load, Shape, Told};
use crate::sqlite::{Immutable, assert_immutable_refuses_writes, ledger_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_streams_and_flushes_every_row() {
    if !kit::enabled("sigterm_under_load") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let (mut tollgate, keys, _spill) = kit::one_tollgate(dir.path(), &db_url).await;

    // Every other request a stream of ~1 s, so SIGTERM always finds dozens open.
    let shape = Shape {
        clients: 50,
        pause: Duration::from_millis(10),
        stream_every: 2,
        chunk_delay: Duration::from_millis(250),
        per_client: 0,
    };
    let load = Load::start(std::slice::from_ref(&tollgate.base), &keys, &shape);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let term = Instant::now();
    tollgate.signal("TERM");
    let status = tollgate.wait(Duration::from_secs(40)).await;
    let drained_in = term.elapsed();
    let told = load.stop().await;
    assert!(status.success(), "{status}: {}", tollgate.log_text());
    tollgate.assert_no_panic();

    let rows = kit::ledger_rows(&db_url).await;
    let audit = kit::audit(&told, &rows, &keys);
    // Streams that were open when the signal came, and ran to [DONE].
    let finished_after_term: Vec<&Told> = told
        .iter()
        .filter(|t| t.stream && t.answered() && t.at > term)
        .collect();
    eprintln!(
        "sigterm under load: {} answered, {} rows, {} lost, {} doubled, {} streams finished \
         after SIGTERM, exit after {drained_in:?}, not answered: {:?}",
        audit.answered,
        audit.rows,
        audit.lost.len(),
        audit.doubled.len(),
        finished_after_term.len(),
        audit.refused
    );
    audit.assert_none_lost_or_doubled();
    assert_eq!(
        audit.unanswered_rows, 0,
        "no request was cut: each had its answer or was never taken"
    );
    assert!(
        !audit.refused.contains_key("stream cut"),
        "an open stream was cut: {:?}",
        audit.refused
    );
    assert!(
        finished_after_term.len() >= 10,
        "streams open at SIGTERM ran to their end: {}",
        finished_after_term.len()
    );
}

/// How much later than a kill an answer may be seen: kill(1) takes a moment to run.
const SLACK: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_keeps_written_rows_replays_the_spill_and_bounds_the_loss() {
    if !kit::enabled("kill_9_under_load") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert_immutable_refuses_writes(dir.path());
    let db = dir.path().join("ledger.db");
    let db_url = format!("sqlite://{}", db.display());
    let (mut tollgate, keys, _spill) = kit::one_tollgate(dir.path(), &db_url).await;
    let shape = Shape::steady(50, Duration::from_millis(10));
    let load = Load::start(std::slice::from_ref(&tollgate.base), &keys, &shape);

    // 1. The database healthy: rows die only between the answer and the commit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first_kill = Instant::now();
    tollgate.signal("KILL");
    tollgate.wait(Duration::from_secs(10)).await;
    tollgate.spawn().await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 2. The database refusing writes, rows going to the spill: killed mid-outage, the
    // spill is replayed by the next process.
    let frozen = Immutable::set(&ledger_files(&db));
    tollgate.await_spilling().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spilled_at_kill = tollgate.spilled().await;
    let second_kill = Instant::now();
    tollgate.signal("KILL");
    tollgate.wait(Duration::from_secs(10)).await;
    drop(frozen);
    let restart = Instant::now();
    tollgate.spawn().await;
    tollgate.await_replayed(Duration::from_secs(30)).await;
    let replayed_after = restart.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = load.stop().await;
    tollgate.stop().await;

    let rows = kit::ledger_rows(&db_url).await;
    let audit = kit::audit(&told, &rows, &keys);
    // Each lost row's age at the kill that lost it: [healthy database, spilling].
    let lost: HashSet<&str> = audit.lost.iter().map(String::as_str).collect();
    let kills = [first_kill, second_kill];
    let mut ages: [Vec<Duration>; 2] = Default::default();
    for t in told.iter().filter(|t| lost.contains(t.id.as_str())) {
        let which = usize::from(t.at > first_kill + SLACK);
        assert!(
            t.at < kills[which] + SLACK,
            "{} was answered after the kill and is lost",
            t.id
        );
        ages[which].push(kills[which].saturating_duration_since(t.at));
    }
    let oldest = |ages: &[Duration]| ages.iter().max().copied().unwrap_or_default();
    eprintln!(
        "kill -9 under load: {} answered, {} rows, {} lost ({} at the kill with the \
         database healthy, the oldest answered {:?} before it; {} at the kill while \
         spilling, the oldest {:?} before it), {} doubled, {} rows of requests cut by a \
         kill, {spilled_at_kill} rows in the spill at the kill, replayed \
         {replayed_after:?} after the restart, not answered: {:?}",
        audit.answered,
        audit.rows,
        audit.lost.len(),
        ages[0].len(),
        oldest(&ages[0]),
        ages[1].len(),
        oldest(&ages[1]),
        audit.doubled.len(),
        audit.unanswered_rows,
        audit.refused
    );
    assert!(
        audit.doubled.is_empty(),
        "rows doubled: {:?}",
        audit.doubled
    );
    assert!(
        spilled_at_kill > 0,
        "the second kill found rows in the spill"
    );
    let log = tollgate.log_text();
    assert!(
        log.contains("spill holds ledger rows from an earlier run"),
        "the restart adopted the spill: {log}"
    );
    // Every lost row was answered in the last moments before a kill: the rows older
    // than that were written and stayed intact. Healthy, the writer holds a row for
    // max_batch_delay (50 ms) plus one commit. While the database refuses writes but
    // answers pings, each ping sends the writer back to it for three tries (~0.45 s of
    // pauses) before it spills again, so rows wait up to that much longer. The bounds
    // leave room for a loaded 2-core machine and are far below a lost batch of history.
    for (ages, bound) in ages
        .iter()
        .zip([Duration::from_secs(1), Duration::from_secs(2)])
    {
        assert!(
            oldest(ages) < bound,
            "a row answered {:?} before a kill is lost (bound {bound:?})",
            oldest(ages)
        );
    }
}
