//! Metering a stream event by event: the usage the upstream reports, the model it
//! answered with, the service tier that served it (the last chunk that names one), and
//! the generated text and tool-call arguments, kept so that a stream that ends without
//! usage can still be counted.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::usage::{
    RawUsage, TIER_KEY, TierField, find_tier_key, merge_max, tier_key_at, tier_value,
};
use super::{Endpoint, Usage};

/// Deferred chunk bytes a stream may hold before they are parsed into text. A chunk is
/// ~150-200 bytes for a token of ~4, so a long stream deferred whole would hold
/// megabytes; past this, holding the text instead costs a parse now and saves ~40x
/// the memory. Short answers (a few hundred chunks) stay under it and are never parsed.
const DEFERRED_LIMIT: usize = 64 * 1024;

/// Room taken for deferred chunks when the first arrives: about twenty chunks, so a
/// short answer never regrows (a doubling Vec would copy itself six times to get there,
/// ~4,500 instructions a 20-chunk stream), and no more than it would have grown to.
const DEFERRED_START: usize = 4 * 1024;
const DEFERRED_START_CHUNKS: usize = 32;

/// What one event was, for the relay's filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Ordinary content (or anything unparseable): forward as is.
    Content,
    /// A chat/completions chunk with `choices: []` and a usage object: the one tollgate
    /// asked for. Hidden from clients that did not ask for usage themselves.
    UsageOnly,
    /// `data: [DONE]`, or a Responses terminal event: the stream ended normally.
    Done,
    /// An in-stream error object from the upstream.
    Error,
}

#[derive(Debug)]
pub struct StreamMeter {
    endpoint: Endpoint,
    usage: Option<Usage>,
    model: Option<String>,
    service_tier: Option<String>,
    /// Where the last deferred chunk had its `"service_tier"` key. OpenAI writes every
    /// chunk of a stream with the same head (id, object, created, model, tier), so the
    /// next chunk has the key at the same offset: a compare finds it there, and only a
    /// chunk that moved it is searched.
    tier_at: usize,
    /// The bytes from that key through its value's closing quote, as last seen.
    tier_seen: Vec<u8>,
    text: String,
    /// Content chunks not parsed yet, back to back; `deferred_ends` marks where each ends.
    deferred: Vec<u8>,
    deferred_ends: Vec<usize>,
    deferred_limit: usize,
    /// The text of deferred chunks parsed early to bound `deferred`. Apart from `text`
    /// so that the generated text reads exactly as if every deferred chunk had waited
    /// for the end: chunks read at once (`text`) first, then the deferred ones in order.
    compacted: String,
    seen_first: bool,
    finished: bool,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
    usage: Option<RawUsage>,
    service_tier: Option<TierField>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    /// Legacy completions stream text here instead of in a delta.
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// A Responses API stream event (`event: response.*` + `data: {"type":…}`).
#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    delta: Option<Cow<'a, str>>,
    response: Option<ResponseObject>,
}

#[derive(Deserialize)]
struct ResponseObject {
    model: Option<String>,
    usage: Option<RawUsage>,
    service_tier: Option<TierField>,
}

impl StreamMeter {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            usage: None,
            model: None,
            service_tier: None,
            tier_at: 0,
            tier_seen: Vec::new(),
            text: String::new(),
            deferred: Vec::new(),
            deferred_ends: Vec::new(),
            deferred_limit: DEFERRED_LIMIT,
            compacted: String::new(),
            seen_first: false,
            finished: false,
        }
    }

    #[cfg(test)]
    fn with_deferred_limit(endpoint: Endpoint, limit: usize) -> Self {
        Self {
            deferred_limit: limit,
            ..Self::new(endpoint)
        }
    }

    #[cfg(test)]
    fn deferred_bytes(&self) -> usize {
        self.deferred.len()
    }

    /// Observes one event's data (multi-line data already joined with `\n`).
    pub fn observe(&mut self, data: &[u8]) -> EventKind {
        if data.starts_with(b"[DONE]") {
            self.finished = true;
            return EventKind::Done;
        }
        match self.endpoint {
            Endpoint::Responses => self.observe_responses(data),
            _ => self.observe_chunk(data),
        }
    }

    fn observe_chunk(&mut self, data: &[u8]) -> EventKind {
        // Most chunks are plain content whose text matters only if the stream ends
        // without usage: keep their bytes and parse them then, or once they outgrow
        // `deferred_limit`. A chunk is read now when it is the first (the model),
        // carries usage, or may be an error.
        if self.seen_first && !carries_usage(data) && !may_be_error(data) {
            // Every chat chunk repeats the tier; the last chunk to name it wins. It is
            // read from the bytes: no parse, and no allocation while it stays put.
            self.deferred_tier(data);
            if self.deferred.capacity() == 0 {
                self.deferred.reserve(DEFERRED_START.max(data.len()));
                self.deferred_ends.reserve(DEFERRED_START_CHUNKS);
            }
            self.deferred.extend_from_slice(data);
            self.deferred_ends.push(self.deferred.len());
            if self.deferred.len() > self.deferred_limit {
                append_deferred(&mut self.compacted, &self.deferred, &self.deferred_ends);
                // Cleared, not freed: the next chunks reuse the room.
                self.deferred.clear();
                self.deferred_ends.clear();
            }
            return EventKind::Content;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return EventKind::Content;
        };
        if chunk.error.is_some() {
            return EventKind::Error;
        }
        if !self.seen_first {
            self.seen_first = true;
            self.model = chunk.model.map(Cow::into_owned);
        }
        if let Some(TierField(Some(tier))) = chunk.service_tier {
            self.set_tier(&tier);
        }
        let choices = chunk.choices.unwrap_or_default();
        append_choices(&mut self.text, &choices);
        match chunk.usage.filter(RawUsage::has_counts) {
            Some(usage) => {
                self.add_usage(usage.to_usage());
                if choices.is_empty() {
                    EventKind::UsageOnly
                } else {
                    EventKind::Content
                }
            }
            None => EventKind::Content,
        }
    }

    fn observe_responses(&mut self, data: &[u8]) -> EventKind {
        let Ok(event) = serde_json::from_slice::<ResponsesEvent<'_>>(data) else {
            return EventKind::Content;
        };
        if let Some(response) = event.response {
            if let Some(model) = response.model {
                self.model = Some(model);
            }
            if let Some(usage) = response.usage.filter(RawUsage::has_counts) {
                self.add_usage(usage.to_usage());
            }
            // `response.created` may echo the tier asked for; `response.completed`, the
            // last, names the one that served it.
            if let Some(TierField(Some(tier))) = response.service_tier {
                self.set_tier(&tier);
            }
        }
        match event.kind.as_ref() {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
            | "response.reasoning_summary_text.delta" => {
                if let Some(delta) = event.delta {
                    self.text.push_str(&delta);
                }
                EventKind::Content
            }
            // Some compatible providers end with `response.done`.
            "response.completed" | "response.incomplete" | "response.failed" | "response.done" => {
                self.finished = true;
                EventKind::Done
            }
            "error" => EventKind::Error,
            _ => EventKind::Content,
        }
    }

    fn deferred_tier(&mut self, data: &[u8]) {
        // The common case: the same key and value at the same offset as in the last
        // chunk, one compare of ~25 bytes.
        let same = data
            .get(self.tier_at..)
            .is_some_and(|rest| !self.tier_seen.is_empty() && rest.starts_with(&self.tier_seen));
        if same {
            return;
        }
        let at = if tier_key_at(data, self.tier_at) {
            Some(self.tier_at)
        } else {
            find_tier_key(data)
        };
        let Some(at) = at else { return };
        self.tier_at = at;
        let after = &data[at + TIER_KEY.len()..];
        let Some(tier) = tier_value(after) else {
            return;
        };
        self.set_tier(&tier);
        // Remember the bytes through the value's closing quote, when it has no escape.
        self.tier_seen.clear();
        if let Some(open) = after.iter().position(|&b| b == b'"') {
            let value = &after[open + 1..];
            if let Some(close) = value.iter().position(|&b| b == b'"' || b == b'\\') {
                if value[close] == b'"' {
                    let end = at + TIER_KEY.len() + open + 1 + close + 1;
                    self.tier_seen.extend_from_slice(&data[at..end]);
                }
            }
        }
    }

    fn set_tier(&mut self, tier: &str) {
        if self.service_tier.as_deref() != Some(tier) {
            self.service_tier = Some(tier.to_owned());
        }
    }

    fn add_usage(&mut self, usage: Usage) {
        match &mut self.usage {
            Some(total) => merge_max(total, usage),
            None => self.usage = Some(usage),
        }
    }

    /// Usage the upstream reported, if any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The model the upstream answered with.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The service tier the last chunk (or Responses event) that named one gave.
    pub fn service_tier(&self) -> Option<&str> {
        self.service_tier.as_deref()
    }

    /// Everything generated so far (text, refusals, tool-call names and arguments).
    pub fn generated_text(&self) -> String {
        let mut text = self.text.clone();
        text.push_str(&self.compacted);
        append_deferred(&mut text, &self.deferred, &self.deferred_ends);
        text
    }

    /// Whether the stream reached its normal end (`[DONE]` or a terminal event).
    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// Whether a chunk has a usage object (not `"usage":null`). Inside JSON strings quotes
/// are escaped, so these byte patterns can only be structural. One search for the key,
/// then a look at what follows it (any blanks around the colon), rather than a search
/// per spelling: every chunk of an `include_usage` stream is scanned, and has the key.
// Built once: building a finder costs more than a search of a chunk with it.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));

fn carries_usage(data: &[u8]) -> bool {
    let blank = |b: &u8| b" \t\r\n".contains(b);
    USAGE.find_iter(data).any(|at| {
        let mut rest = data[at + USAGE.needle().len()..]
            .iter()
            .skip_while(|b| blank(b));
        rest.next() == Some(&b':') && rest.find(|b| !blank(b)) == Some(&b'{')
    })
}

fn may_be_error(data: &[u8]) -> bool {
    ERROR.find(data).is_some()
}

/// Appends the text of deferred chunks, `ends` marking where each ends in `deferred`.
fn append_deferred(text: &mut String, deferred: &[u8], ends: &[usize]) {
    let mut start = 0;
    for &end in ends {
        if let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(&deferred[start..end]) {
            append_choices(text, &chunk.choices.unwrap_or_default());
        }
        start = end;
    }
}

fn append_choices(text: &mut String, choices: &[Choice<'_>]) {
    for choice in choices {
        if let Some(part) = &choice.text {
            text.push_str(part);
        }
        let Some(delta) = &choice.delta else { continue };
        for part in [&delta.content, &delta.refusal].into_iter().flatten() {
            text.push_str(part);
        }
        for call in delta.tool_calls.iter().flatten() {
            if let Some(function) = &call.function {
                for part in [&function.name, &function.arguments].into_iter().flatten() {
                    text.push_str(part);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &[&str] = &[
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        "[DONE]",
    ];

    #[test]
    fn a_usage_object_is_seen_in_any_spacing_and_null_or_a_value_is_not() {
        for yes in [
            r#"{"usage":{"prompt_tokens":1}}"#,
            r#"{"usage": {"prompt_tokens":1}}"#,
            "{\"usage\" :\n\t{\"prompt_tokens\":1}}",
            r#"{"a":"usage","usage":{"prompt_tokens":1}}"#,
        ] {
            assert!(carries_usage(yes.as_bytes()), "{yes}");
        }
        for no in [
            r#"{"usage":null}"#,
            r#"{"usage": null}"#,
            r#"{"a":"usage"}"#,
            r#"{"a":["usage",{"b":1}]}"#,
            r#"{"content":"say \"usage\":{ here"}"#,
            r#"{"usage":"#,
            r#"{"usage""#,
        ] {
            assert!(!carries_usage(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn chat_stream_yields_usage_text_and_model() {
        let mut meter = StreamMeter::new(Endpoint::ChatCompletions);
        let kinds: Vec<EventKind> = CHAT.iter().map(|d| meter.observe(d.as_bytes())).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Content,
                EventKind::Content,
                EventKind::Content,
                EventKind::Content,
                EventKind::UsageOnly,
                EventKind::Done
            ]
        );
        assert_eq!(
            meter
                .usage()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((9, 2))
        );
        assert_eq!(meter.model(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(meter.generated_text(), "Hif{\"a\":1}");
        assert!(
            meter.compacted.is_empty(),
            "a short stream is parsed only at its end"
        );
        assert!(meter.finished());
    }

    #[test]
    fn completions_text_and_in_stream_errors() {
        let mut meter = StreamMeter::new(Endpoint::Completions);
        let kind = meter.observe(br#"{"object":"text_completion","model":"gpt-3.5-turbo-instruct","choices":[{"text":"Hello","index":0}]}"#);
        assert_eq!(kind, EventKind::Content);
        assert_eq!(meter.generated_text(), "Hello");
        assert_eq!(
            meter.observe(br#"{"error":{"message":"overloaded","type":"server_error"}}"#),
            EventKind::Error
        );
        assert_eq!(meter.observe(b"not json"), EventKind::Content);
        assert!(!meter.finished());
        assert_eq!(meter.usage(), None);
    }

    #[test]
    fn responses_stream_reads_the_terminal_usage() {
        let mut meter = StreamMeter::new(Endpoint::Responses);
        let events = [
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"r","model":"gpt-4.1-2025-04-14","usage":null}}"#,
            r#"{"type":"response.output_text.delta","sequence_number":1,"delta":"Hel"}"#,
            r#"{"type":"response.output_text.delta","sequence_number":2,"delta":"lo"}"#,
            r#"{"type":"response.completed","sequence_number":3,"response":{"id":"r","model":"gpt-4.1-2025-04-14","usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14}}}"#,
        ];
        let last = events.iter().map(|e| meter.observe(e.as_bytes())).last();
        assert_eq!(last, Some(EventKind::Done));
        assert_eq!(meter.generated_text(), "Hello");
        assert_eq!(
            meter
                .usage()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((12, 2))
        );
        assert_eq!(meter.model(), Some("gpt-4.1-2025-04-14"));
    }

    #[test]
    fn the_last_chunk_naming_a_tier_wins() {
        let chunk = |tier: &str, usage: &str| {
            format!(
                r#"{{"id":"c1","object":"chat.completion.chunk","model":"gpt-5","service_tier":{tier},"choices":[{{"index":0,"delta":{{"content":"x"}}}}],"usage":{usage}}}"#
            )
        };
        // (chunks, served): deferred content chunks and parsed first / usage chunks alike.
        let usage = r#"{"prompt_tokens":1,"completion_tokens":3}"#;
        let cases: [(Vec<String>, Option<&str>); 6] = [
            // A value that only extends the last one is a new value.
            (
                vec![
                    chunk("\"flex\"", "null"),
                    chunk("\"flex\"", "null"),
                    chunk("\"flexible\"", "null"),
                ],
                Some("flexible"),
            ),
            (
                vec![chunk("\"flex\"", "null"), chunk("\"flex\"", "null")],
                Some("flex"),
            ),
            (
                vec![
                    chunk("\"flex\"", "null"),
                    chunk("\"default\"", "null"),
                    chunk("\"default\"", "null"),
                ],
                Some("default"),
            ),
            (
                vec![
                    chunk("\"flex\"", "null"),
                    chunk("\"flex\"", "null"),
                    chunk("\"priority\"", usage),
                ],
                Some("priority"),
            ),
            // A chunk without the field, or with a non-string, leaves the last one.
            (
                vec![
                    chunk("\"flex\"", "null"),
                    chunk("null", "null"),
                    chunk("7", usage),
                ],
                Some("flex"),
            ),
            (vec![CHAT[0].to_owned(), CHAT[1].to_owned()], None),
        ];
        for (chunks, want) in cases {
            let mut meter = StreamMeter::new(Endpoint::ChatCompletions);
            for chunk in &chunks {
                meter.observe(chunk.as_bytes());
            }
            assert_eq!(meter.service_tier(), want, "{chunks:?}");
        }
        let mut meter = StreamMeter::new(Endpoint::Responses);
        for event in [
            r#"{"type":"response.created","response":{"model":"o3","service_tier":"auto","usage":null}}"#,
            r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            r#"{"type":"response.completed","response":{"model":"o3","service_tier":"default","usage":{"input_tokens":2,"output_tokens":1}}}"#,
        ] {
            meter.observe(event.as_bytes());
        }
        assert_eq!(meter.service_tier(), Some("default"));
    }

    /// A chat stream of `n` chunks after the first, cycling through every kind of
    /// content a deferred chunk can carry, as OpenAI writes them with `include_usage`.
    fn long_chat(n: usize) -> Vec<String> {
        let mut chunks = vec![CHAT[0].to_owned()];
        for i in 0..n {
            let delta = match i % 5 {
                0 => format!(r#"{{"content":" w{i}"}}"#),
                1 => format!(r#"{{"refusal":" r{i}"}}"#),
                2 => format!(
                    r#"{{"tool_calls":[{{"index":0,"function":{{"name":"f{i}","arguments":"{{\"a\":{i}}}"}}}}]}}"#
                ),
                3 => r#"{"content":"\u00e9\n"}"#.to_owned(),
                _ => r#"{}"#.to_owned(),
            };
            chunks.push(format!(
                r#"{{"id":"c1","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"delta":{delta},"finish_reason":null}}],"usage":null}}"#
            ));
        }
        chunks
    }

    #[test]
    fn compacting_deferred_chunks_keeps_the_generated_text() {
        let mut chunks = long_chat(2_000);
        // Parsed at once (it may be an error), between deferred chunks: its text must
        // keep its place relative to theirs whatever was compacted.
        chunks.insert(1_000, CHAT[1].replace("\"Hi\"", "\"error\""));
        chunks.push(CHAT[3].to_owned());
        let text = |limit: usize| {
            let mut meter = StreamMeter::with_deferred_limit(Endpoint::ChatCompletions, limit);
            for chunk in &chunks {
                assert_eq!(meter.observe(chunk.as_bytes()), EventKind::Content);
            }
            meter.generated_text()
        };
        let whole = text(usize::MAX);
        assert!(
            whole.contains(" w1995")
                && whole.contains(" r1996")
                && whole.contains("f1997{\"a\":1997}")
        );
        assert!(whole.contains("é\n") && whole.contains("error"));
        for limit in [0, 1, 500, 4_096, DEFERRED_LIMIT] {
            assert_eq!(text(limit), whole, "limit {limit}");
        }
    }

    #[test]
    fn deferred_chunks_stay_under_the_limit() {
        let chunks = long_chat(100_000);
        let longest = chunks.iter().map(String::len).max().unwrap_or_default();
        let mut meter = StreamMeter::new(Endpoint::ChatCompletions);
        let mut peak = 0;
        for chunk in &chunks {
            meter.observe(chunk.as_bytes());
            peak = peak.max(meter.deferred_bytes());
        }
        assert!(peak <= DEFERRED_LIMIT + longest, "{peak} bytes deferred");
        assert!(
            peak > DEFERRED_LIMIT / 2,
            "short streams still defer: {peak}"
        );
        let text = meter.generated_text();
        assert!(
            text.starts_with(" w0 r1f2{\"a\":2}é\n w5")
                && text.ends_with(" r99996f99997{\"a\":99997}é\n")
        );
    }
}
