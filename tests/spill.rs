//! The spill file against real databases (SQLite, and Postgres when
//! TOLLGATE_TEST_POSTGRES_URL is set) made really unavailable: rows recorded during an
//! outage wait on disk and reach the database exactly once when it is back, also after
//! a restart, a replay repeated by a crash, or a torn last line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::db::{Backend, backends, count_and_completion};
use common::forwarder::Forwarder;
use common::rows::usage;
use tollgate::config::{Config, LedgerConfig};
use tollgate::ledger::{LedgerRow, LedgerWriter, Store};

fn row(id: usize) -> LedgerRow {
    LedgerRow {
        ts_ms: 1_700_000_000_000 + i64::try_from(id).unwrap(),
        usage: usage(10, 0, u64::try_from(id).unwrap()),
        key_id: Some("key-a".to_owned()),
        ..common::rows::row(&format!("row-{id}"))
    }
}

/// Small batches so an outage spills several and a replay inserts several; a short
/// retry interval so recovery is quick.
fn config(spill_dir: &Path) -> LedgerConfig {
    LedgerConfig {
        batch_size: 64,
        max_batch_delay: Duration::from_millis(5),
        spill_dir: spill_dir.to_owned(),
        spill_retry_interval: Duration::from_millis(50),
        ..LedgerConfig::default()
    }
}

/// The same, but the replay task's interval never comes round during a test: whatever
/// is replayed comes from an ask or from the writer's own retries.
fn config_without_replay_interval(spill_dir: &Path) -> LedgerConfig {
    LedgerConfig {
        spill_retry_interval: Duration::from_secs(3600),
        ..config(spill_dir)
    }
}

/// A database that can really go away: Postgres behind a forwarder that drops its
/// connections; SQLite with a trigger that aborts every insert, as a full or read-only
/// disk would. (Holding its write lock from another connection also works, but every
/// insert then waits out the store's 5 s busy timeout.)
struct Db {
    /// What the writer uses: through the forwarder for Postgres.
    store: Store,
    /// What the test counts with: never cut.
    direct: Store,
    /// Postgres only.
    forwarder: Option<Forwarder>,
}

const OUTAGE_TRIGGER: &str = "CREATE TRIGGER test_outage BEFORE INSERT ON requests \
     BEGIN SELECT RAISE(ABORT, 'test outage: the database refuses writes'); END";

impl Db {
    async fn open(backend: &Backend) -> Self {
        let direct = backend.open().await;
        if backend.name != "postgres" {
            return Self {
                store: direct.clone(),
                direct,
                forwarder: None,
            };
        }
        let forwarder = Forwarder::start(backend.server_addr().unwrap()).await;
        let store = Store::open(&backend.url_through(forwarder.addr))
            .await
            .unwrap();
        Self {
            store,
            direct,
            forwarder: Some(forwarder),
        }
    }

    async fn go_down(&self) {
        match (&self.forwarder, &self.direct) {
            (Some(forwarder), _) => forwarder.cut(),
            (None, Store::Sqlite(ledger)) => {
                sqlx::query(OUTAGE_TRIGGER)
                    .execute(ledger.pool())
                    .await
                    .unwrap();
            }
            (None, Store::Postgres(_)) => unreachable!("Postgres goes through a forwarder"),
        }
    }

    async fn come_back(&self) {
        match (&self.forwarder, &self.direct) {
            (Some(forwarder), _) => forwarder.restore(),
            (None, Store::Sqlite(ledger)) => {
                sqlx::query("DROP TRIGGER test_outage")
                    .execute(ledger.pool())
                    .await
                    .unwrap();
            }
            (None, Store::Postgres(_)) => unreachable!("Postgres goes through a forwarder"),
        }
    }

    /// Rows stored, and the sum of their completion tokens (each row's id).
    async fn counted(&self) -> (i64, i64) {
        count_and_completion(&self.direct).await
    }
}

/// Completion tokens of rows `0..n`: each row has its id as its completion tokens.
fn sum_of_ids(n: usize) -> i64 {
    (0..i64::try_from(n).unwrap()).sum()
}

async fn record(writer: &LedgerWriter, ids: std::ops::Range<usize>) {
    for id in ids {
        writer.begin().record(row(id)).await;
    }
}

/// Spill segments waiting for replay.
fn segments(dir: &Path) -> Vec<PathBuf> {
    with_extension(dir, "jsonl")
}

fn with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

fn lines_in(paths: &[PathBuf]) -> usize {
    paths
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap().lines().count())
        .sum()
}

/// Polls every 10 ms for up to 20 s: the replay task works on its own schedule.
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn rows_recorded_during_an_outage_are_spilled_then_stored_once_when_it_ends() {
    for backend in backends().await {
        let name = backend.name;
        let db = Db::open(&backend).await;
        let spill = tempfile::tempdir().unwrap();
        let (writer, _task) = LedgerWriter::spawn(db.store.clone(), &config(spill.path())).unwrap();
        record(&writer, 0..1).await;
        writer.flush().await;
        assert!(
            segments(spill.path()).is_empty(),
            "{name}: nothing to spill yet"
        );

        db.go_down().await;
        record(&writer, 1..300).await;
        // Safe on disk counts as done: the flush does not wait for the database.
        writer.flush().await;
        assert_eq!(writer.spilled_rows(), 299, "{name}");
        assert_eq!(lines_in(&segments(spill.path())), 299, "{name}");
        assert_eq!(db.counted().await.0, 1, "{name}: the outage held");
        if db.forwarder.is_some() {
            // SQLite still answers the replay task's ping, which then lets the writer
            // try it again; Postgres does not answer at all.
            assert!(writer.is_spilling(), "{name}");
        }

        db.come_back().await;
        wait_until("the spill is replayed", async || {
            writer.spilled_rows() == 0 && segments(spill.path()).is_empty()
        })
        .await;
        record(&writer, 300..301).await;
        writer.flush().await;
        assert!(!writer.is_spilling(), "{name}");
        assert_eq!(db.counted().await, (301, sum_of_ids(301)), "{name}");
    }
}

/// What shutdown does after its flush: rows spilled while the database was busy are
/// stored before the process exits, not at the next interval; while it is still down
/// they stay on disk and the answer says how many.
#[tokio::test]
async fn a_replay_asked_for_stores_the_spill_now_or_says_what_is_left() {
    for backend in backends().await {
        let name = backend.name;
        let db = Db::open(&backend).await;
        let spill = tempfile::tempdir().unwrap();
        // Only the ask can replay.
        let config = config_without_replay_interval(spill.path());
        let (writer, _task) = LedgerWriter::spawn(db.store.clone(), &config).unwrap();
        db.go_down().await;
        record(&writer, 0..120).await;
        writer.flush().await;
        assert_eq!(writer.spilled_rows(), 120, "{name}");
        assert_eq!(
            writer.replay_spill().await,
            120,
            "{name}: still down, all kept"
        );
        assert_eq!(lines_in(&segments(spill.path())), 120, "{name}");

        db.come_back().await;
        assert_eq!(writer.replay_spill().await, 0, "{name}");
        assert!(segments(spill.path()).is_empty(), "{name}");
        assert_eq!(db.counted().await, (120, sum_of_ids(120)), "{name}");
        // Nothing spilled: the ask is answered without touching the database.
        assert_eq!(writer.replay_spill().await, 0, "{name}");
    }
}

#[tokio::test]
async fn a_restarted_writer_replays_what_the_last_one_spilled() {
    for backend in backends().await {
        let name = backend.name;
        let db = Db::open(&backend).await;
        let spill = tempfile::tempdir().unwrap();
        let (writer, task) = LedgerWriter::spawn(db.store.clone(), &config(spill.path())).unwrap();
        db.go_down().await;
        record(&writer, 0..200).await;
        writer.flush().await;
        assert_eq!(writer.spilled_rows(), 200, "{name}");
        drop(writer);
        task.await.unwrap();

        // A new process: its own pool, the same spill directory, the database up.
        db.come_back().await;
        let store = backend.open().await;
        let (writer, _task) = LedgerWriter::spawn(store, &config(spill.path())).unwrap();
        // Both: the gauge counts the old segments only once the new writer has read them.
        wait_until("the old segments are replayed", async || {
            segments(spill.path()).is_empty() && writer.spilled_rows() == 0
        })
        .await;
        assert_eq!(db.counted().await, (200, sum_of_ids(200)), "{name}");
    }
}

#[tokio::test]
async fn a_segment_replayed_twice_counts_nothing_twice() {
    for backend in backends().await {
        let name = backend.name;
        let db = Db::open(&backend).await;
        let spill = tempfile::tempdir().unwrap();
        let (writer, task) = LedgerWriter::spawn(db.store.clone(), &config(spill.path())).unwrap();
        db.go_down().await;
        record(&writer, 0..150).await;
        writer.flush().await;
        let copies = tempfile::tempdir().unwrap();
        let spilled = segments(spill.path());
        assert!(!spilled.is_empty(), "{name}");
        for segment in &spilled {
            std::fs::copy(segment, copies.path().join(segment.file_name().unwrap())).unwrap();
        }

        db.come_back().await;
        wait_until("the spill is replayed", async || {
            writer.spilled_rows() == 0 && segments(spill.path()).is_empty()
        })
        .await;
        assert_eq!(db.counted().await, (150, sum_of_ids(150)), "{name}");
        drop(writer);
        task.await.unwrap();

        // As if the process died after the commits but before the deletes.
        for segment in &spilled {
            std::fs::copy(copies.path().join(segment.file_name().unwrap()), segment).unwrap();
        }
        let (_writer, _task) =
            LedgerWriter::spawn(db.store.clone(), &config(spill.path())).unwrap();
        wait_until("the segments are replayed again", async || {
            segments(spill.path()).is_empty()
        })
        .await;
        assert_eq!(db.counted().await, (150, sum_of_ids(150)), "{name}");
    }
}

#[tokio::test]
async fn a_torn_last_line_is_skipped_and_the_rest_replayed() {
    for backend in backends().await {
        let name = backend.name;
        let db = Db::open(&backend).await;
        let spill = tempfile::tempdir().unwrap();
        // What a crash in the middle of an append leaves: whole lines, then half of one.
        let mut text: String = (0..10)
            .map(|id| serde_json::to_string(&row(id)).unwrap() + "\n")
            .collect();
        let torn = serde_json::to_string(&row(10)).unwrap();
        text.push_str(&torn[..torn.len() / 2]);
        std::fs::write(
            spill.path().join("segment-00000000000000000001.jsonl"),
            text,
        )
        .unwrap();

        let (writer, _task) = LedgerWriter::spawn(db.store.clone(), &config(spill.path())).unwrap();
        wait_until("the segment is replayed", async || {
            segments(spill.path()).is_empty() && writer.spilled_rows() == 0
        })
        .await;
        assert_eq!(db.counted().await, (10, sum_of_ids(10)), "{name}");
        assert!(
            with_extension(spill.path(), "bad").is_empty(),
            "{name}: a torn tail is expected, not bad"
        );
    }
}

#[tokio::test]
async fn a_segment_with_a_garbled_line_is_stored_and_kept_aside() {
    for backend in backends().await {
        let name = backend.name;
        let db = Db::open(&backend).await;
        let spill = tempfile::tempdir().unwrap();
        let line = |id| serde_json::to_string(&row(id)).unwrap() + "\n";
        let text = format!(
            "{}{}{{\"id\": \"half a row\"\n{}",
            line(0),
            line(1),
            line(2)
        );
        let segment = spill.path().join("segment-00000000000000000001.jsonl");
        std::fs::write(&segment, &text).unwrap();

        let (_writer, _task) =
            LedgerWriter::spawn(db.store.clone(), &config(spill.path())).unwrap();
        wait_until("the segment is moved aside", async || {
            segments(spill.path()).is_empty()
        })
        .await;
        assert_eq!(db.counted().await, (3, sum_of_ids(3)), "{name}");
        let aside = with_extension(spill.path(), "bad");
        assert_eq!(aside.len(), 1, "{name}");
        assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), text, "{name}");
    }
}

#[tokio::test]
async fn rows_wait_in_memory_while_neither_the_database_nor_the_disk_takes_them() {
    for backend in backends().await {
        let name = backend.name;
        let db = Db::open(&backend).await;
        let spill = tempfile::tempdir().unwrap();
        // Recovery must come from the writer's own retries, not from a replay.
        let config = config_without_replay_interval(spill.path());
        let (writer, _task) = LedgerWriter::spawn(db.store.clone(), &config).unwrap();
        // A file where the directory was: every new segment fails, as on a full disk.
        std::fs::remove_dir(spill.path()).unwrap();
        std::fs::write(spill.path(), "not a directory").unwrap();

        db.go_down().await;
        record(&writer, 0..20).await;
        let flush = tokio::spawn({
            let writer = writer.clone();
            async move { writer.flush().await }
        });
        wait_until("the writer gives up on the database", async || {
            writer.is_spilling()
        })
        .await;
        assert!(
            !flush.is_finished(),
            "{name}: the rows are stored nowhere yet"
        );
        assert_eq!(writer.spilled_rows(), 0, "{name}");

        db.come_back().await;
        flush.await.unwrap();
        assert_eq!(db.counted().await, (20, sum_of_ids(20)), "{name}");
        std::fs::remove_file(spill.path()).unwrap();
    }
}

#[tokio::test]
async fn readiness_shows_the_spill() {
    let tollgate = common::harness::Harness::start("http://127.0.0.1:9/v1").await;
    let ready: serde_json::Value = tollgate
        .get("/readyz")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ledger_spilled"], 0, "{ready}");
    assert_eq!(ready["ledger_spilling"], false, "{ready}");
}

#[test]
fn spill_settings_are_validated_by_name() {
    let config = Config::from_toml(
        "[ledger]\nspill_dir = \"\"\nspill_retry_interval = \"0s\"\n",
        "t.toml",
    )
    .unwrap();
    let problems = config.validate().unwrap_err();
    let paths: Vec<&str> = problems.paths().collect();
    assert_eq!(paths, ["ledger.spill_dir", "ledger.spill_retry_interval"]);

    let defaults = LedgerConfig::default();
    assert_eq!(defaults.spill_dir, Path::new("tollgate-spill"));
    assert_eq!(defaults.spill_retry_interval, Duration::from_secs(1));
}
