//! An incremental server-sent-events parser. Events may be split across reads at any
//! byte; lines end in `\n`, `\r\n` or `\r`; `data:` may span several lines; `:` lines are
//! comments (keep-alives). Each event keeps its raw bytes so the relay can forward it
//! exactly as the upstream wrote it. An event that outgrows `MAX_EVENT_BYTES` before it
//! ends can be given up, raw bytes and all.

use std::ops::Range;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

/// The most the parser holds for one unfinished event before it gives the event up
/// (see `take_overlong`). Without a bound, an upstream that never ends a line, or never
/// sends the blank line that ends an event, grows the buffer until `total_timeout`.
/// The largest real events are a Responses stream's `response.completed` (and
/// `response.output_item.done`): the whole output (128k output tokens are ~0.5 MiB of
/// text), the echoed instructions (a 1M-token context is ~4 MiB) and any generated
/// images (a few MiB of base64 each). 16 MiB leaves room for all of that, and is what a
/// broken upstream can cost per stream.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

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
    data: Data,
    event: Option<String>,
}

/// The `data:` lines of the event being read. A single line (nearly every event) stays
/// a range of the event's raw bytes until the event is complete, so a large event is
/// held once, not twice, while it arrives.
#[derive(Debug, Default)]
enum Data {
    #[default]
    None,
    Line(Range<usize>),
    Joined(Vec<u8>),
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
        let joined = match &self.fields.data {
            Data::Joined(data) => data.len(),
            Data::None | Data::Line(_) => 0,
        };
        self.buf.len() + joined + self.fields.event.as_ref().map_or(0, String::len)
    }

    /// Once `next_event` has returned `None`: if the unfinished event holds more than
    /// `MAX_EVENT_BYTES`, gives it up and returns its raw bytes, leaving the parser empty
    /// with its memory freed. Bytes pushed after it would be read as if a new event
    /// began, so a caller that takes an overlong event stops parsing the stream.
    pub fn take_overlong(&mut self) -> Option<Bytes> {
        if self.buffered() <= MAX_EVENT_BYTES {
            return None;
        }
        let raw = std::mem::take(&mut self.buf).freeze();
        *self = Self::default();
        Some(raw)
    }

    /// The next complete event, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let rest = &self.buf[self.scanned..];
            let Some(found) = memchr::memchr2(b'\n', b'\r', &rest[self.searched..]) else {
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
            self.fields.read_line(&self.buf, line_start..line_end);
        }
    }

    /// At the end of the stream: whatever is left, as a final (possibly cut) event.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.is_empty() {
            return None;
        }
        if self.scanned < self.buf.len() {
            let end = self.buf.len() - usize::from(self.buf.ends_with(b"\r"));
            self.fields.read_line(&self.buf, self.scanned..end);
            self.scanned = self.buf.len();
        }
        Some(self.take_event())
    }

    fn take_event(&mut self) -> SseEvent {
        let raw = self.buf.split_to(self.scanned).freeze();
        self.scanned = 0;
        self.searched = 0;
        let data = match std::mem::take(&mut self.fields.data) {
            Data::None => None,
            Data::Line(range) => Some(raw[range].to_vec()),
            Data::Joined(data) => Some(data),
        };
        SseEvent {
            raw,
            data,
            event: self.fields.event.take(),
        }
    }
}

impl Fields {
    /// Reads the line at `line` of `event`, the raw bytes of the event so far.
    fn read_line(&mut self, event: &[u8], line: Range<usize>) {
        let bytes = &event[line.clone()];
        if bytes.first() == Some(&b':') {
            return;
        }
        let (name, value) = match bytes.iter().position(|&b| b == b':') {
            Some(colon) => {
                let space = usize::from(bytes.get(colon + 1) == Some(&b' '));
                (&bytes[..colon], line.start + colon + 1 + space..line.end)
            }
            None => (bytes, line.end..line.end),
        };
        match name {
            b"data" => {
                self.data = match std::mem::take(&mut self.data) {
                    Data::None => Data::Line(value),
                    Data::Line(first) => {
                        let mut joined = event[first].to_vec();
                        joined.push(b'\n');
                        joined.extend_from_slice(&event[value]);
                        Data::Joined(joined)
                    }
                    Data::Joined(mut joined) => {
                        joined.push(b'\n');
                        joined.extend_from_slice(&event[value]);
                        Data::Joined(joined)
                    }
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(&event[value]).into_owned()),
            _ => {}
        }
    }
}

/// Removes the `"usage":null` member that `include_usage` adds to every chunk, so a
/// client that did not ask for usage sees the chunks it would have seen. Inside a JSON
/// string a quote is always escaped, so these byte patterns can only be structural.
pub fn strip_null_usage(raw: &Bytes) -> Bytes {
    // Built once: building a finder costs more than a search of an event with it.
    static PATTERNS: LazyLock<[Finder<'static>; 4]> = LazyLock::new(|| {
        [
            Finder::new(b",\"usage\":null"),
            Finder::new(b", \"usage\": null"),
            Finder::new(b"\"usage\":null,"),
            Finder::new(b"\"usage\": null, "),
        ]
    });
    for pattern in PATTERNS.iter() {
        if let Some(at) = pattern.find(raw) {
            let len = pattern.needle().len();
            let mut out = BytesMut::with_capacity(raw.len() - len);
            out.extend_from_slice(&raw[..at]);
            out.extend_from_slice(&raw[at + len..]);
            return out.freeze();
        }
    }
    raw.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"a\":1}\n\n",
        "event: response.output_text.delta\r\ndata: {\"b\":2}\r\n\r\n",
        "data: line one\ndata: line two\n\n",
        "data: a\r\ndata:\r\n: between\r\ndata: c\r\n\r\n",
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
                Some(&b"a\n\nc"[..]),
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
            assert_eq!(parser.searched, parser.buf.len());
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

    /// Pushes `event`, then `filler` over and over until the parser gives the event
    /// up. Returns every byte pushed, what the parser gave back, and the most it held.
    fn push_until_overlong(event: &[u8], filler: &[u8]) -> (Vec<u8>, Bytes, usize) {
        let mut parser = SseParser::new();
        let mut pushed = Vec::new();
        let mut most = 0;
        let mut read = event;
        loop {
            parser.push(read);
            pushed.extend_from_slice(read);
            assert!(parser.next_event().is_none(), "the event never ends");
            most = most.max(parser.buffered());
            if let Some(raw) = parser.take_overlong() {
                assert_eq!((parser.buffered(), parser.buf.capacity()), (0, 0));
                return (pushed, raw, most);
            }
            assert!(pushed.len() < 2 * MAX_EVENT_BYTES, "never given up");
            read = filler;
        }
    }

    #[test]
    fn an_event_that_never_ends_is_given_up_past_the_cap() {
        let line = [&b"data: "[..], &[b'x'; 1017], b"\n"].concat();
        let cases: [(&str, &[u8], Vec<u8>); 4] = [
            ("a line without its end", b"data: ", vec![b'a'; 64 * 1024]),
            ("data lines, no blank line", b"", line.repeat(64)),
            (
                "comments, no blank line",
                b"",
                b": keep-alive\n".repeat(5_000),
            ),
            (
                "an event name without its end",
                b"event: ",
                vec![b'e'; 64 * 1024],
            ),
        ];
        for (case, event, filler) in cases {
            let (pushed, raw, most) = push_until_overlong(event, &filler);
            assert!(raw[..] == pushed[..], "{case}: every byte is given back");
            // One read adds its bytes, and again as much joined to earlier data lines.
            assert!(
                most > MAX_EVENT_BYTES && most <= MAX_EVENT_BYTES + 2 * filler.len(),
                "{case}: held {most} bytes, more than the cap and one read"
            );
        }
    }

    #[test]
    fn an_event_just_under_the_cap_is_parsed() {
        let mut parser = SseParser::new();
        let data = vec![b'{'; MAX_EVENT_BYTES - 100];
        parser.push(b"data: ");
        for piece in data.chunks(64 * 1024) {
            parser.push(piece);
            assert!(parser.next_event().is_none());
            assert!(parser.take_overlong().is_none());
        }
        parser.push(b"\n");
        assert!(parser.next_event().is_none());
        assert!(
            parser.take_overlong().is_none(),
            "a data line is held once while the event waits for its end"
        );
        parser.push(b"\n");
        let event = parser.next_event().unwrap();
        assert!(event.data.as_deref() == Some(&data[..]));
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
