//! An incremental server-sent-events parser. Events may be split across reads at any
//! byte; lines end in `\n`, `\r\n` or `\r`; `data:` may span several lines; `:` lines are
//! comments (keep-alives). Each event keeps its raw bytes so the relay can forward it
//! exactly as the upstream wrote it.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    /// Bytes of `buf` already scanned into fields of the current event.
    scanned: usize,
    /// Bytes after `scanned` already searched and found to hold no line end: a long
    /// line arriving in many reads is searched once, not once per read (quadratic).
    searched: usize,
    fields: Fields,
}

/// The fields of the event being read, apart from `buf` so a line can be borrowed from
/// the buffer while they are updated.
#[derive(Debug, Default)]
struct Fields {
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event exactly as received, terminator included.
    pub raw: Bytes,
    /// `data:` lines joined with `\n`; `None` for comment-only or empty events.
    pub data: Option<Vec<u8>>,
    /// The `event:` field, when present (Responses streams name their events).
    pub event: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held waiting for the rest of an event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let rest = &self.buf[self.scanned..];
            let Some(found) = rest[self.searched..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.searched = rest.len();
                return None;
            };
            let at = self.searched + found;
            let terminator = match rest[at] {
                b'\r' => match rest.get(at + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A `\r` at the end may be the first half of `\r\n`: wait, and
                    // look at it again when more bytes arrive.
                    None => {
                        self.searched = at;
                        return None;
                    }
                },
                _ => 1,
            };
            let line_start = self.scanned;
            let line_end = line_start + at;
            self.scanned = line_end + terminator;
            self.searched = 0;
            if line_end == line_start {
                return Some(self.take_event());
            }
            self.fields.read_line(&self.buf[line_start..line_end]);
        }
    }

    /// At the end of the stream: whatever is left, as a final (possibly cut) event.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.is_empty() {
            return None;
        }
        if self.scanned < self.buf.len() {
            let line = &self.buf[self.scanned..];
            self.fields
                .read_line(line.strip_suffix(b"\r").unwrap_or(line));
            self.scanned = self.buf.len();
        }
        Some(self.take_event())
    }

    fn take_event(&mut self) -> SseEvent {
        let raw = self.buf.split_to(self.scanned).freeze();
        self.scanned = 0;
        self.searched = 0;
        let fields = &mut self.fields;
        let data = if fields.has_data {
            fields.has_data = false;
            Some(std::mem::take(&mut fields.data))
        } else {
            None
        };
        SseEvent {
            raw,
            data,
            event: fields.event.take(),
        }
    }
}

impl Fields {
    fn read_line(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
}

/// Removes the `"usage":null` member that `include_usage` adds to every chunk, so a
/// client that did not ask for usage sees the chunks it would have seen. Inside a JSON
/// string a quote is always escaped, so these byte patterns can only be structural.
pub fn strip_null_usage(raw: &Bytes) -> Bytes {
    const PATTERNS: [&[u8]; 4] = [
        b",\"usage\":null",
        b", \"usage\": null",
        b"\"usage\":null,",
        b"\"usage\": null, ",
    ];
    for pattern in PATTERNS {
        if let Some(at) = find(raw, pattern) {
            let mut out = BytesMut::with_capacity(raw.len() - pattern.len());
            out.extend_from_slice(&raw[..at]);
            out.extend_from_slice(&raw[at + pattern.len()..]);
            return out.freeze();
        }
    }
    raw.clone()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"a\":1}\n\n",
        "event: response.output_text.delta\r\ndata: {\"b\":2}\r\n\r\n",
        "data: line one\ndata: line two\n\n",
        "data:no-space\r\rid: 7\nretry: 10\ndata: [DONE]\n\n",
    );

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(event) = parser.next_event() {
                events.push(event);
            }
        }
        events.extend(parser.finish());
        events
    }

    #[test]
    fn parses_comments_crlf_cr_and_multiline_data() {
        let events = parse_all(&[STREAM.as_bytes()]);
        let data: Vec<Option<&[u8]>> = events.iter().map(|e| e.data.as_deref()).collect();
        assert_eq!(
            data,
            [
                None,
                Some(&b"{\"a\":1}"[..]),
                Some(&b"{\"b\":2}"[..]),
                Some(&b"line one\nline two"[..]),
                Some(&b"no-space"[..]),
                Some(&b"[DONE]"[..]),
            ]
        );
        assert_eq!(
            events[2].event.as_deref(),
            Some("response.output_text.delta")
        );
        let raw: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(
            raw,
            STREAM.as_bytes(),
            "raw bytes reproduce the stream exactly"
        );
    }

    #[test]
    fn a_split_at_every_byte_boundary_parses_the_same() {
        let whole = parse_all(&[STREAM.as_bytes()]);
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(parse_all(&[a, b]), whole, "split at {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(&singles), whole, "one byte at a time");
    }

    #[test]
    fn a_long_line_in_many_reads_is_searched_once() {
        let mut parser = SseParser::new();
        let line = vec![b'x'; 64 * 1024];
        for piece in line.chunks(100) {
            parser.push(piece);
            assert!(parser.next_event().is_none());
            // Everything pushed so far has been searched: the next read starts after it.
            assert_eq!(parser.searched, parser.buffered());
        }
        parser.push(b"\r");
        assert!(
            parser.next_event().is_none(),
            "a lone \\r may be half of \\r\\n"
        );
        parser.push(b"\n\n");
        let event = parser.next_event().unwrap();
        assert_eq!(event.raw.len(), line.len() + 3);
        assert_eq!(event.data, None, "a line without a field name or colon");
    }

    #[test]
    fn a_cut_stream_yields_its_partial_event() {
        let events = parse_all(&[b"data: {\"a\":1}\n\ndata: {\"trunc"]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].data.as_deref(), Some(&b"{\"trunc"[..]));
        assert_eq!(&events[1].raw[..], b"data: {\"trunc");
    }

    #[test]
    fn strips_null_usage_in_every_position() {
        let cases = [
            (
                r#"data: {"id":"1","choices":[],"usage":null}"#,
                r#"data: {"id":"1","choices":[]}"#,
            ),
            (r#"data: {"usage":null,"id":"1"}"#, r#"data: {"id":"1"}"#),
            (
                r#"data: {"id": "1", "usage": null}"#,
                r#"data: {"id": "1"}"#,
            ),
            (
                r#"data: {"content":"say \"usage\":null"}"#,
                r#"data: {"content":"say \"usage\":null"}"#,
            ),
            (
                r#"data: {"usage":{"prompt_tokens":1}}"#,
                r#"data: {"usage":{"prompt_tokens":1}}"#,
            ),
        ];
        for (input, expected) in cases {
            let out = strip_null_usage(&Bytes::from(input));
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        }
    }
}
