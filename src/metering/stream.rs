//! Metering a stream event by event: the usage the upstream reports, the model it
//! answered with, and the generated text and tool-call arguments, kept so that a stream
//! that ends without usage can still be counted.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::usage::{RawUsage, merge_max};
use super::{Endpoint, Usage};

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
    text: String,
    /// Content chunks not parsed yet, back to back; `deferred_ends` marks where each ends.
    deferred: Vec<u8>,
    deferred_ends: Vec<usize>,
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
}

impl StreamMeter {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            usage: None,
            model: None,
            text: String::new(),
            deferred: Vec::new(),
            deferred_ends: Vec::new(),
            seen_first: false,
            finished: false,
        }
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
        // without usage: keep their bytes and parse them then. A chunk is read now when
        // it is the first (the model), carries usage, or may be an error.
        if self.seen_first && !carries_usage(data) && !may_be_error(data) {
            self.deferred.extend_from_slice(data);
            self.deferred_ends.push(self.deferred.len());
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
        let choices = chunk.choices.unwrap_or_default();
        append_choices(&mut self.text, &choices);
        match chunk.usage {
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
            if let Some(usage) = response.usage {
                self.add_usage(usage.to_usage());
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

    /// Everything generated so far (text, refusals, tool-call names and arguments).
    pub fn generated_text(&self) -> String {
        let mut text = self.text.clone();
        let mut start = 0;
        for &end in &self.deferred_ends {
            if let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(&self.deferred[start..end]) {
                append_choices(&mut text, &chunk.choices.unwrap_or_default());
            }
            start = end;
        }
        text
    }

    /// Whether the stream reached its normal end (`[DONE]` or a terminal event).
    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// Whether a chunk has a usage object (not `"usage":null`). Inside JSON strings quotes
/// are escaped, so these byte patterns can only be structural.
fn carries_usage(data: &[u8]) -> bool {
    contains(data, b"\"usage\":{") || contains(data, b"\"usage\": {")
}

fn may_be_error(data: &[u8]) -> bool {
    contains(data, b"\"error\"")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
}
