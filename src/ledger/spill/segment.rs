//! Spill segment files on disk: their names, their creation, their line counts, and
//! reading one back a batch at a time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::SpillError;
use crate::ledger::LedgerRow;

pub(super) const PREFIX: &str = "segment-";
pub(super) const EXTENSION: &str = "jsonl";
/// A segment with a line that does not parse is renamed to this extension: kept for a
/// person to look at, never replayed (or deleted) by tollgate.
pub(super) const BAD_EXTENSION: &str = "bad";

/// Segment files (`.jsonl` and `.bad`) with their sequence numbers; other names are not
/// ours and are left alone.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpillError> {
    let list_error = |source| SpillError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        if let Some(seq) = segment_seq(&path) {
            found.push((seq, path));
        }
    }
    Ok(found)
}

pub(super) fn segment_seq(path: &Path) -> Option<u64> {
    let extension = path.extension()?;
    if extension != EXTENSION && extension != BAD_EXTENSION {
        return None;
    }
    path.file_stem()?
        .to_str()?
        .strip_prefix(PREFIX)?
        .parse()
        .ok()
}

pub(super) fn create_segment(path: &Path, dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    // The new name must survive a power cut as surely as the rows written under it.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(file)
}

/// Lines in a segment, a torn last one included: what the gauge shows for it.
pub(super) fn count_lines(file: File) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut count = 0u64;
    let mut partial = false;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        let newlines = buffer.iter().filter(|b| **b == b'\n').count();
        count += u64::try_from(newlines).unwrap_or(u64::MAX);
        partial = buffer.last() != Some(&b'\n');
        let consumed = buffer.len();
        reader.consume(consumed);
    }
    Ok(count + u64::from(partial))
}

/// Reads a segment a batch at a time, remembering what it had to skip.
#[derive(Debug)]
pub(super) struct SegmentReader {
    pub(super) path: PathBuf,
    pub(super) lines: BufReader<File>,
    pub(super) line: u64,
    pub(super) bad_lines: u64,
    pub(super) first_bad_line: Option<u64>,
}

impl SegmentReader {
    pub(super) fn open(path: PathBuf) -> Result<Self, SpillError> {
        match File::open(&path) {
            Ok(file) => Ok(Self {
                lines: BufReader::with_capacity(64 * 1024, file),
                path,
                line: 0,
                bad_lines: 0,
                first_bad_line: None,
            }),
            Err(source) => Err(SpillError::Read { path, source }),
        }
    }

    /// Up to `max` rows; empty at the end of the segment.
    pub(super) fn next_batch(&mut self, max: usize) -> Result<Vec<LedgerRow>, SpillError> {
        let mut rows = Vec::with_capacity(max.min(1024));
        let mut buffer = Vec::new();
        while rows.len() < max {
            buffer.clear();
            let read = self
                .lines
                .read_until(b'\n', &mut buffer)
                .map_err(|source| SpillError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            self.line += 1;
            if let Some(row) = self.parse(&buffer) {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    fn parse(&mut self, line: &[u8]) -> Option<LedgerRow> {
        let whole = line.last() == Some(&b'\n');
        let text = line.trim_ascii();
        if text.is_empty() {
            return None;
        }
        match serde_json::from_slice(text) {
            Ok(row) => Some(row),
            // Only the last line can lack its newline: an append the process did not
            // finish, so the batch was never acknowledged as spilled. Nothing is lost.
            Err(error) if !whole => {
                tracing::warn!(
                    segment = %self.path.display(),
                    line = self.line,
                    %error,
                    "skipping the torn last line of a spill segment"
                );
                None
            }
            Err(error) => {
                if self.first_bad_line.is_none() {
                    tracing::error!(
                        segment = %self.path.display(),
                        line = self.line,
                        %error,
                        "a spill segment line does not parse; the segment will be kept"
                    );
                    self.first_bad_line = Some(self.line);
                }
                self.bad_lines += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counts_include_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        for (text, lines) in [("", 0), ("a\n", 1), ("a\nb\n", 2), ("a\nb", 2)] {
            let path = dir.path().join("count");
            fs::write(&path, text).unwrap();
            assert_eq!(count_lines(File::open(&path).unwrap()).unwrap(), lines);
        }
    }

    #[test]
    fn only_segment_names_are_ours() {
        for (name, seq) in [
            ("segment-00000000000000000007.jsonl", Some(7)),
            ("segment-00000000000000000007.bad", Some(7)),
            ("segment-7.jsonl.tmp", None),
            ("segment-x.jsonl", None),
            ("notes.jsonl", None),
        ] {
            assert_eq!(segment_seq(Path::new(name)), seq, "{name}");
        }
    }
}
