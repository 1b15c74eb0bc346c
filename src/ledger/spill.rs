//! The spill: where the writer puts batches the database refused, so an outage costs
//! neither rows nor memory. A directory of JSON-lines segment files, one `LedgerRow` a
//! line. The writer appends to the open segment and fsyncs before the batch counts as
//! safe; a replay closes the open segment, inserts the closed ones in order and deletes
//! each only once all its rows are committed. Row ids make a replay exactly-once: after
//! a crash between commit and delete the segment is replayed again and the database
//! skips the ids it already holds.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{LedgerError, LedgerRow, Store};
use segment::{BAD_EXTENSION, EXTENSION, PREFIX, SegmentReader, count_lines, create_segment, list};

mod segment;

/// The open segment is closed once this large, so a long outage leaves files a replay
/// deletes one by one, and a crash mid-replay repeats one file, not the whole outage.
const SEGMENT_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot create spill directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot list spill directory {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot encode a ledger row for the spill: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot append {rows} rows to spill segment {path}: {source}")]
    Append {
        path: PathBuf,
        rows: u64,
        source: io::Error,
    },
    #[error("cannot read spill segment {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot replay spill segment {path}: {source}")]
    Insert {
        path: PathBuf,
        #[source]
        source: LedgerError,
    },
    #[error("replaying spill segment {path}: no answer from the database within {after:?}")]
    InsertTimedOut { path: PathBuf, after: Duration },
    #[error("cannot remove replayed spill segment {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot move spill segment {path} aside: {source}")]
    MoveAside { path: PathBuf, source: io::Error },
    #[error("a spill file task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// The spill directory of one process: a second process on the same directory would
/// replay, and delete, the segment this one is appending to. Shared by the writer
/// (appends) and the replay task; file I/O runs on tokio's blocking pool.
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    state: Mutex<State>,
    /// Rows in segments not yet replayed: the gauge behind `spilled_rows`.
    rows: AtomicU64,
    /// Segments below this sequence number were left by an earlier process.
    adopted_below: u64,
    segment_limit: u64,
}

#[derive(Debug)]
struct State {
    open: Option<OpenSegment>,
    next_seq: u64,
    /// Rows per segment not yet replayed, by sequence number.
    rows: BTreeMap<u64, u64>,
}

#[derive(Debug)]
struct OpenSegment {
    seq: u64,
    file: File,
    /// Bytes known to be whole lines: a failed append is cut back to this.
    len: u64,
}

/// A closed segment, ready to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    seq: u64,
    path: PathBuf,
}

impl Spill {
    /// Creates the directory. Runs once, before the server accepts anything,
    /// and touches only names: segments left by an earlier run are read by `adopt`.
    pub fn open(dir: &Path) -> Result<Self, SpillError> {
        Self::with_segment_limit(dir, SEGMENT_LIMIT)
    }

    fn with_segment_limit(dir: &Path, segment_limit: u64) -> Result<Self, SpillError> {
        fs::create_dir_all(dir).map_err(|source| SpillError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        // Past every name in use, `.bad` ones included, so a new segment never takes the
        // name of one that was moved aside.
        let next_seq = list(dir)?.iter().map(|(seq, _)| seq + 1).max().unwrap_or(1);
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                open: None,
                next_seq,
                rows: BTreeMap::new(),
            }),
            rows: AtomicU64::new(0),
            adopted_below: next_seq,
            segment_limit,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows in spill files not yet replayed.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Acquire)
    }

    /// Counts the rows of segments an earlier process left, so the gauge shows them
    /// before the database is back. Returns how many there are.
    pub async fn adopt(self: &Arc<Self>) -> Result<u64, SpillError> {
        let spill = Arc::clone(self);
        blocking(move || spill.adopt_blocking()).await
    }

    /// Appends the rows and fsyncs them: once this returns `Ok` they survive a crash.
    pub async fn append(self: &Arc<Self>, rows: &[LedgerRow]) -> Result<(), SpillError> {
        let mut lines = Vec::with_capacity(rows.len() * 512);
        for row in rows {
            serde_json::to_writer(&mut lines, row).map_err(SpillError::Encode)?;
            lines.push(b'\n');
        }
        let count = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        let spill = Arc::clone(self);
        blocking(move || spill.append_blocking(&lines, count)).await
    }

    /// Closes the open segment, then inserts every closed one, oldest first, in batches
    /// of `batch_size`, deleting each once all its rows are committed. Stops at the
    /// first failure; what is left is retried on the next call. Returns the rows
    /// inserted (ids the database already held included).
    pub async fn replay(
        self: &Arc<Self>,
        store: &Store,
        batch_size: usize,
        timeout: Duration,
    ) -> Result<u64, SpillError> {
        let spill = Arc::clone(self);
        let segments = blocking(move || spill.close_open_segment()).await?;
        let mut replayed = 0;
        for segment in segments {
            replayed += self
                .replay_segment(segment, store, batch_size.max(1), timeout)
                .await?;
        }
        Ok(replayed)
    }

    async fn replay_segment(
        self: &Arc<Self>,
        segment: Segment,
        store: &Store,
        batch_size: usize,
        timeout: Duration,
    ) -> Result<u64, SpillError> {
        let path = segment.path.clone();
        let mut reader = blocking(move || SegmentReader::open(path)).await?;
        let mut replayed = 0;
        loop {
            let (back, rows) = blocking(move || {
                let rows = reader.next_batch(batch_size)?;
                Ok((reader, rows))
            })
            .await?;
            reader = back;
            if rows.is_empty() {
                break;
            }
            match tokio::time::timeout(timeout, store.insert(&rows)).await {
                Ok(Ok(())) => replayed += u64::try_from(rows.len()).unwrap_or(u64::MAX),
                Ok(Err(source)) => {
                    return Err(SpillError::Insert {
                        path: segment.path,
                        source,
                    });
                }
                Err(_) => {
                    return Err(SpillError::InsertTimedOut {
                        path: segment.path,
                        after: timeout,
                    });
                }
            }
        }
        let spill = Arc::clone(self);
        blocking(move || spill.retire(&segment, &reader)).await?;
        Ok(replayed)
    }

    // === blocking parts, run on tokio's blocking pool ===

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a file handle and counters, each updated in one step: a panic
        // elsewhere while holding the lock cannot leave it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{seq:020}.{EXTENSION}"))
    }

    fn adopt_blocking(&self) -> Result<u64, SpillError> {
        let mut adopted = 0;
        for segment in self.segments_below(self.adopted_below)? {
            let file = File::open(&segment.path).map_err(|source| SpillError::Read {
                path: segment.path.clone(),
                source,
            })?;
            let rows = count_lines(file).map_err(|source| SpillError::Read {
                path: segment.path.clone(),
                source,
            })?;
            if let Entry::Vacant(entry) = self.state().rows.entry(segment.seq) {
                entry.insert(rows);
                self.rows.fetch_add(rows, Ordering::AcqRel);
                adopted += rows;
            }
        }
        Ok(adopted)
    }

    fn append_blocking(&self, lines: &[u8], rows: u64) -> Result<(), SpillError> {
        let mut state = self.state();
        let State {
            open,
            next_seq,
            rows: counts,
        } = &mut *state;
        if open.as_ref().is_some_and(|o| o.len >= self.segment_limit) {
            *open = None;
        }
        let segment = match open {
            Some(segment) => segment,
            None => {
                // Taken before the file is created, so a failed creation never leaves a
                // number a later append would trip over.
                let seq = *next_seq;
                *next_seq += 1;
                let path = self.segment_path(seq);
                let file =
                    create_segment(&path, &self.dir).map_err(|source| SpillError::Append {
                        path: path.clone(),
                        rows,
                        source,
                    })?;
                open.insert(OpenSegment { seq, file, len: 0 })
            }
        };
        match segment
            .file
            .write_all(lines)
            .and_then(|()| segment.file.sync_data())
        {
            Ok(()) => {
                segment.len += u64::try_from(lines.len()).unwrap_or(u64::MAX);
                *counts.entry(segment.seq).or_default() += rows;
                self.rows.fetch_add(rows, Ordering::AcqRel);
                Ok(())
            }
            Err(source) => {
                // Cut the partial batch off, and close the segment either way: if the
                // cut failed too, the torn batch stays its last line, which replay
                // skips, instead of sitting between two good ones.
                if let Err(error) = segment.file.set_len(segment.len) {
                    tracing::warn!(%error, "cannot cut a failed append off a spill segment");
                }
                let path = self.segment_path(segment.seq);
                *open = None;
                Err(SpillError::Append { path, rows, source })
            }
        }
    }

    /// New appends go to a fresh segment; returns every closed one, oldest first.
    fn close_open_segment(&self) -> Result<Vec<Segment>, SpillError> {
        let below = {
            let mut state = self.state();
            state.open = None;
            state.next_seq
        };
        self.segments_below(below)
    }

    fn segments_below(&self, below: u64) -> Result<Vec<Segment>, SpillError> {
        let mut segments: Vec<Segment> = list(&self.dir)?
            .into_iter()
            .filter(|(seq, path)| *seq < below && path.extension().is_some_and(|e| e == EXTENSION))
            .map(|(seq, path)| Segment { seq, path })
            .collect();
        segments.sort_by_key(|s| s.seq);
        Ok(segments)
    }

    /// Deletes a replayed segment, or moves it aside if a line in it did not parse:
    /// its good rows are stored, the rest is for a person to look at.
    fn retire(&self, segment: &Segment, reader: &SegmentReader) -> Result<(), SpillError> {
        if reader.bad_lines > 0 {
            let aside = segment.path.with_extension(BAD_EXTENSION);
            fs::rename(&segment.path, &aside).map_err(|source| SpillError::MoveAside {
                path: segment.path.clone(),
                source,
            })?;
            tracing::error!(
                segment = %aside.display(),
                bad_lines = reader.bad_lines,
                first_bad_line = reader.first_bad_line,
                "spill segment had lines that do not parse: its other rows are stored, \
                 the file is kept for inspection"
            );
        } else {
            fs::remove_file(&segment.path).map_err(|source| SpillError::Remove {
                path: segment.path.clone(),
                source,
            })?;
        }
        let mut state = self.state();
        if let Some(rows) = state.rows.remove(&segment.seq) {
            self.rows.fetch_sub(rows, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// Runs file I/O off the async worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SpillError> + Send + 'static,
) -> Result<T, SpillError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(SpillError::Task)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: std::ops::Range<usize>) -> Vec<LedgerRow> {
        ids.map(|i| {
            let mut row = crate::ledger::tests::sample();
            row.id = format!("row-{i}");
            row
        })
        .collect()
    }

    fn line(row: &LedgerRow) -> String {
        format!("{}\n", serde_json::to_string(row).unwrap())
    }

    fn read_all(path: PathBuf) -> (Vec<String>, SegmentReader) {
        let mut reader = SegmentReader::open(path).unwrap();
        let mut ids = Vec::new();
        loop {
            let batch = reader.next_batch(2).unwrap();
            if batch.is_empty() {
                return (ids, reader);
            }
            ids.extend(batch.into_iter().map(|r| r.id));
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn appends_go_to_the_open_segment_until_a_replay_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Arc::new(Spill::open(dir.path()).unwrap());
        spill.append(&rows(0..3)).await.unwrap();
        spill.append(&rows(3..5)).await.unwrap();
        assert_eq!(spill.rows(), 5);
        assert_eq!(names(dir.path()), ["segment-00000000000000000001.jsonl"]);

        let closed = spill.close_open_segment().unwrap();
        assert_eq!(closed.len(), 1);
        spill.append(&rows(5..6)).await.unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "segment-00000000000000000001.jsonl",
                "segment-00000000000000000002.jsonl"
            ]
        );
        // The new open segment is not among the closed ones until the next rotation.
        assert_eq!(spill.segments_below(2).unwrap(), closed);
        assert_eq!(spill.rows(), 6);
    }

    #[tokio::test]
    async fn a_full_segment_is_closed_and_the_next_append_starts_another() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Arc::new(Spill::with_segment_limit(dir.path(), 1).unwrap());
        spill.append(&rows(0..2)).await.unwrap();
        spill.append(&rows(2..3)).await.unwrap();
        assert_eq!(names(dir.path()).len(), 2);
        let (ids, _) = read_all(spill.segment_path(1));
        assert_eq!(ids, ["row-0", "row-1"]);
    }

    #[tokio::test]
    async fn a_restart_numbers_past_old_segments_and_counts_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spill = Arc::new(Spill::open(dir.path()).unwrap());
            spill.append(&rows(0..3)).await.unwrap();
            spill.close_open_segment().unwrap();
            spill.append(&rows(3..4)).await.unwrap();
        }
        fs::rename(
            dir.path().join("segment-00000000000000000002.jsonl"),
            dir.path().join("segment-00000000000000000002.bad"),
        )
        .unwrap();
        let spill = Arc::new(Spill::open(dir.path()).unwrap());
        assert_eq!(spill.rows(), 0, "counted by adopt, off the runtime");
        assert_eq!(
            spill.adopt().await.unwrap(),
            3,
            ".bad files are not counted"
        );
        assert_eq!(spill.rows(), 3);
        spill.append(&rows(4..5)).await.unwrap();
        assert!(spill.segment_path(3).exists(), "{:?}", names(dir.path()));
    }

    #[test]
    fn parsing_skips_a_torn_last_line_and_blank_lines_but_flags_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let all = rows(0..4);
        let torn = line(&all[3]);
        let cases: [(&str, String, &[&str], u64); 4] = [
            (
                "clean",
                all[..3].iter().map(line).collect(),
                &["row-0", "row-1", "row-2"],
                0,
            ),
            (
                "torn last line",
                format!("{}{}", line(&all[0]), &torn[..torn.len() / 2]),
                &["row-0"],
                0,
            ),
            (
                "last line whole but its newline never written",
                format!("{}{}", line(&all[0]), torn.trim_end()),
                &["row-0", "row-3"],
                0,
            ),
            (
                "garbage between good lines, and a blank line",
                format!("{}{{\"id\":\n\n{}", line(&all[0]), line(&all[1])),
                &["row-0", "row-1"],
                1,
            ),
        ];
        for (name, text, ids, bad) in cases {
            let path = dir.path().join("segment.jsonl");
            fs::write(&path, text).unwrap();
            let (read, reader) = read_all(path);
            assert_eq!(read, ids, "{name}");
            assert_eq!(reader.bad_lines, bad, "{name}");
        }
    }
}
