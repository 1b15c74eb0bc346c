//! A SQLite ledger whose files become unwritable for a while under load.
//!
//! We run as root, so `chmod` stops nothing. The immutable attribute (`chattr +i`)
//! does: ext4 refuses every write to such a file, also through a descriptor opened
//! before, so SQLite's next commit fails with a disk I/O error. The test first checks
//! that it really does on this filesystem.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tollgate::ledger::{LedgerRow, Store};

use crate::common::db::count_and_completion;
use crate::common::rows::usage;
use crate::kit::{self, Load, Shape};

/// Files marked immutable, cleared again on drop so the temp dir can go even when the
/// test fails half-way.
pub struct Immutable(Vec<PathBuf>);

impl Immutable {
    pub fn set(files: &[PathBuf]) -> Self {
        chattr("+i", files);
        Self(files.to_vec())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, files: &[PathBuf]) {
    let output = Command::new("chattr")
        .arg(flag)
        .args(files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chattr {flag}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Checks, in `dir`, that an immutable file refuses a write through a descriptor
/// opened before: otherwise the scenario would prove nothing.
#[track_caller]
pub fn assert_immutable_refuses_writes(dir: &Path) {
    let probe = dir.join("probe");
    let mut file = std::fs::File::create(&probe).unwrap();
    {
        let _frozen = Immutable::set(std::slice::from_ref(&probe));
        let written = file.write_all(b"x").and_then(|()| file.sync_all());
        assert!(
            written.is_err(),
            "chattr +i does not stop writes here: the scenario cannot make SQLite fail"
        );
    }
    std::fs::remove_file(probe).unwrap();
}

/// The ledger file and its write-ahead log.
pub fn ledger_files(db: &Path) -> Vec<PathBuf> {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    vec![db.to_path_buf(), wal]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unwritable_for_10s_under_load_loses_and_doubles_nothing() {
    if !kit::enabled("sqlite_unwritable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert_immutable_refuses_writes(dir.path());
    let db = dir.path().join("ledger.db");
    let db_url = format!("sqlite://{}", db.display());
    let (mut tollgate, keys, spill) = kit::one_tollgate(dir.path(), &db_url).await;
    let load = Load::start(
        std::slice::from_ref(&tollgate.base),
        &keys,
        &Shape::steady(50, Duration::from_millis(20)),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let frozen = Immutable::set(&ledger_files(&db));
    let outage = Instant::now();
    tollgate.await_spilling().await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    let most_spilled = tollgate.spilled().await;
    drop(frozen);
    let back = Instant::now();
    tollgate.await_replayed(Duration::from_secs(30)).await;
    let replayed_after = back.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = load.stop().await;

    tollgate.stop().await;
    let rows = kit::ledger_rows(&db_url).await;
    let audit = kit::audit(&told, &rows, &keys);
    eprintln!(
        "sqlite unwritable 10s: {} answered, {} rows, {} lost, {} doubled, {} spilled, \
         spill replayed {:?} after the file was writable again, not answered: {:?}",
        audit.answered,
        audit.rows,
        audit.lost.len(),
        audit.doubled.len(),
        most_spilled,
        replayed_after,
        audit.refused
    );
    audit.assert_none_lost_or_doubled();
    assert_eq!(audit.rows, audit.answered, "one row per answered request");
    assert!(audit.refused.is_empty(), "{:?}", audit.refused);
    assert!(
        most_spilled > 100,
        "the outage went to the spill: {most_spilled}"
    );
    kit::assert_spill_deleted(&spill);
}

fn row(id: usize) -> LedgerRow {
    LedgerRow {
        usage: usage(1, 0, 1),
        ..crate::common::rows::row(&format!("row-{id}"))
    }
}

/// Regression: after one insert failed with an I/O error, the next inserts on the same
/// pooled connection reported success while storing nothing (sqlx nested them as
/// savepoints in a transaction SQLite had already rolled back). Every insert into an
/// unwritable file must fail, and inserts must succeed again once it is writable.
#[tokio::test]
async fn an_insert_into_an_unwritable_sqlite_file_never_reports_success() {
    if !kit::enabled("sqlite_insert_never_lies") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert_immutable_refuses_writes(dir.path());
    let db = dir.path().join("ledger.db");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    // Several connections in the pool, all opened while the file is writable.
    let first: Vec<LedgerRow> = (0..4).map(row).collect();
    let warm = first.iter().map(|r| store.insert(std::slice::from_ref(r)));
    for inserted in futures_util::future::join_all(warm).await {
        inserted.unwrap();
    }
    let frozen = Immutable::set(&ledger_files(&db));
    for i in 10..40 {
        let inserted = store.insert(&[row(i)]).await;
        assert!(
            inserted.is_err(),
            "insert {i} into an unwritable file succeeded"
        );
    }
    drop(frozen);
    // Connections SQLite opened read-only while the file was frozen may still be in the
    // pool; each insert they fail closes one, and the writer retries: so does this.
    let back = Instant::now();
    for i in 40..44 {
        while let Err(error) = store.insert(&[row(i)]).await {
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "inserts still fail 10 s after the file is writable: {error}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("sqlite insert: writable again after {:?}", back.elapsed());
    assert_eq!(count_and_completion(&store).await.0, 8);
}
