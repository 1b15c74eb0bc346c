//! Splitting a JSONL byte stream into lines with a bound on each line's length, so a
//! file of any size is read in constant memory. Pure: bytes in, lines out.

/// One line of the file, numbered from 1, with the byte offset just past its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: u64,
    /// Bytes of the file consumed once this line is done: where a resumed read starts.
    pub end: u64,
    /// The line without its newline (and `\r`), or `None` when it was longer than the
    /// bound and its bytes were dropped.
    pub text: Option<Vec<u8>>,
}

/// Feeds on chunks as they arrive; keeps at most one partial line of `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    partial: Vec<u8>,
    /// The current line passed `max`: its bytes are being dropped up to its newline.
    overlong: bool,
    number: u64,
    offset: u64,
}

impl LineSplitter {
    /// Starts after `lines` lines and `offset` bytes already read (a resumed read).
    pub fn new(max: usize, lines: u64, offset: u64) -> Self {
        Self {
            max,
            partial: Vec::new(),
            overlong: false,
            number: lines,
            offset,
        }
    }

    /// The complete lines in `chunk` (with what earlier chunks left over).
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        while let Some(at) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..at]);
            self.offset += 1;
            lines.push(self.finish_line());
            chunk = &chunk[at + 1..];
        }
        self.take(chunk);
        lines
    }

    /// The last line, when the file does not end with a newline.
    pub fn finish(mut self) -> Option<Line> {
        (!self.partial.is_empty() || self.overlong).then(|| self.finish_line())
    }

    fn take(&mut self, bytes: &[u8]) {
        self.offset += bytes.len() as u64;
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > self.max {
            self.overlong = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn finish_line(&mut self) -> Line {
        self.number += 1;
        let text = if std::mem::take(&mut self.overlong) {
            None
        } else {
            let mut text = std::mem::take(&mut self.partial);
            if text.last() == Some(&b'\r') {
                text.pop();
            }
            Some(text)
        };
        Line {
            number: self.number,
            end: self.offset,
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line number, end offset, text.
    type Split = Vec<(u64, u64, Option<String>)>;

    fn split(chunks: &[&str], max: usize) -> Split {
        let mut splitter = LineSplitter::new(max, 0, 0);
        let mut out: Vec<Line> = chunks
            .iter()
            .flat_map(|c| splitter.push(c.as_bytes()))
            .collect();
        out.extend(splitter.finish());
        out.into_iter()
            .map(|l| {
                let text = l.text.map(|t| String::from_utf8(t).unwrap());
                (l.number, l.end, text)
            })
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_with_offsets() {
        let table: [(&[&str], Split); 4] = [
            (
                &["ab\ncd", "e\n"],
                vec![(1, 3, Some("ab".into())), (2, 7, Some("cde".into()))],
            ),
            // No final newline: the last line still counts.
            (
                &["x\ny"],
                vec![(1, 2, Some("x".into())), (2, 3, Some("y".into()))],
            ),
            // CRLF endings and blank lines.
            (
                &["a\r\n", "\n"],
                vec![(1, 3, Some("a".into())), (2, 4, Some(String::new()))],
            ),
            (&[""], vec![]),
        ];
        for (chunks, expected) in table {
            assert_eq!(split(chunks, 16), expected, "{chunks:?}");
        }
    }

    #[test]
    fn an_overlong_line_is_dropped_and_the_next_one_kept() {
        let lines = split(&["0123", "456789\nok\n", "abcdefghijk"], 8);
        assert_eq!(
            lines,
            vec![(1, 11, None), (2, 14, Some("ok".into())), (3, 25, None)]
        );
    }

    #[test]
    fn a_resumed_split_numbers_from_the_cursor() {
        let mut splitter = LineSplitter::new(64, 10, 500);
        let lines = splitter.push(b"z\n");
        assert_eq!(lines[0].number, 11);
        assert_eq!(lines[0].end, 502);
    }
}
