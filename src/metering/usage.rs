//! Reading usage from what the upstream sent. Field names differ by endpoint: chat,
//! completions and embeddings say `prompt_tokens`/`completion_tokens`; responses (and
//! batch-level usage) say `input_tokens`/`output_tokens`. Every field is optional:
//! compatible providers omit details, and older snapshots omit whole objects. The
//! `service_tier` that served the request is read in the same pass.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::{Usage, tier};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<RawDetails>,
    input_tokens_details: Option<RawDetails>,
    completion_tokens_details: Option<RawDetails>,
    output_tokens_details: Option<RawDetails>,
    /// Anthropic's names for cache reads and writes. Natively its `input_tokens` counts
    /// neither; through its OpenAI-compatible endpoint `prompt_tokens` counts both.
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDetails {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    /// Cache writes as some OpenAI-compatible layers report them.
    cache_creation_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
}

impl RawUsage {
    pub(crate) fn to_usage(&self) -> Usage {
        let details = |a: &Option<RawDetails>,
                       b: &Option<RawDetails>,
                       pick: fn(&RawDetails) -> Option<u64>| {
            a.as_ref()
                .and_then(pick)
                .or_else(|| b.as_ref().and_then(pick))
                .unwrap_or(0)
        };
        let read = self.cache_read_input_tokens;
        let written = self.cache_creation_input_tokens.or_else(|| {
            let pick = |d: &RawDetails| d.cache_creation_tokens.or(d.cache_write_tokens);
            self.prompt_tokens_details
                .as_ref()
                .and_then(pick)
                .or_else(|| self.input_tokens_details.as_ref().and_then(pick))
        });
        let prompt = match (self.prompt_tokens, self.input_tokens) {
            (Some(prompt), _) => prompt,
            // Anthropic's native shape: input_tokens is only the uncached remainder.
            (None, Some(input))
                if self.cache_read_input_tokens.is_some()
                    || self.cache_creation_input_tokens.is_some() =>
            {
                input
                    .saturating_add(read.unwrap_or(0))
                    .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            }
            (None, input) => input.unwrap_or(0),
        };
        let completion = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        // Subsets by definition; clamp so a confused provider cannot make them exceed
        // their parent and turn into negative uncached tokens downstream.
        let cached = match details(
            &self.prompt_tokens_details,
            &self.input_tokens_details,
            |d| d.cached_tokens,
        ) {
            0 => read.unwrap_or(0),
            cached => cached,
        }
        .min(prompt);
        let cache_write = written.unwrap_or(0).min(prompt - cached);
        Usage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: details(
                &self.completion_tokens_details,
                &self.output_tokens_details,
                |d| d.reasoning_tokens,
            )
            .min(completion),
            cache_write_tokens: cache_write,
        }
    }

    /// Whether the object held any count at all: an object of unknown fields is an
    /// unexpected shape, not a request that cost nothing.
    pub(crate) fn has_counts(&self) -> bool {
        [
            self.prompt_tokens,
            self.completion_tokens,
            self.input_tokens,
            self.output_tokens,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// A `service_tier` field: its text when it is a string (cut to what a row keeps),
/// nothing for any other JSON, so an upstream writing a number there loses its tier,
/// not the usage next to it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TierField(pub Option<String>);

impl<'de> Deserialize<'de> for TierField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = TierField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<TierField, E> {
                Ok(TierField(Some(tier::recorded(text).to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TierField, E> {
                Ok(TierField(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TierField, E> {
                Ok(TierField(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TierField, E> {
                Ok(TierField(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TierField, E> {
                Ok(TierField(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TierField, E> {
                Ok(TierField(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<TierField, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TierField(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<TierField, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TierField(None))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The key of the tier field, quotes included.
pub(crate) const TIER_KEY: &[u8] = b"\"service_tier\"";

/// Whether a `"service_tier"` key (not a string value of that text) starts at `at`.
pub(crate) fn tier_key_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..).is_some_and(|rest| {
        rest.starts_with(TIER_KEY)
            && rest[TIER_KEY.len()..].trim_ascii_start().first() == Some(&b':')
    })
}

/// Where the first `"service_tier"` key in `bytes` starts. Inside JSON strings quotes
/// are escaped, so the key's byte pattern can only be structural. Steps from quote to
/// quote rather than comparing every window: a chunk's key sits ~90 bytes in.
pub(crate) fn find_tier_key(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(quote) = bytes.get(from..)?.iter().position(|&b| b == b'"') {
        let at = from + quote;
        if tier_key_at(bytes, at) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The tier value after a `"service_tier"` key (`after` starts right after the key):
/// its text when it is a JSON string, cut to what a row keeps; nothing otherwise.
pub(crate) fn tier_value(after: &[u8]) -> Option<Cow<'_, str>> {
    let value = after
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    let text = value.strip_prefix(b"\"")?;
    let end = text.iter().position(|&b| b == b'"' || b == b'\\')?;
    if text[end] == b'"' {
        let plain = std::str::from_utf8(&text[..end]).ok()?;
        return Some(Cow::Borrowed(tier::recorded(plain)));
    }
    // An escape inside the value: let the JSON parser read it.
    let field = serde_json::Deserializer::from_slice(value)
        .into_iter::<TierField>()
        .next()?
        .ok()?;
    field.0.map(Cow::Owned)
}

/// The tier named by the last `"service_tier"` key in `bytes`: in a body's tail the
/// top-level key comes after the payload, so the last one is the body's own.
pub(crate) fn last_tier(bytes: &[u8]) -> Option<Cow<'_, str>> {
    let at = bytes.windows(TIER_KEY.len()).rposition(|w| w == TIER_KEY)?;
    tier_value(&bytes[at + TIER_KEY.len()..])
}

/// The parts of a non-streamed response body that metering reads.
#[derive(Debug, Deserialize)]
struct ResponseBody<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<RawUsage>,
    service_tier: Option<TierField>,
    #[serde(rename = "error")]
    _error: Option<IgnoredAny>,
}

/// What a whole (non-streamed) response body says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BodyUsage {
    pub model: Option<String>,
    pub usage: Option<Usage>,
    /// The tier that served the request, as the response names it.
    pub service_tier: Option<String>,
}

/// Reads model and usage from a complete JSON response body of any metered endpoint.
/// A body that is not JSON yields nothing rather than an error: metering never fails
/// a request.
pub fn from_body(body: &[u8]) -> BodyUsage {
    match serde_json::from_slice::<ResponseBody<'_>>(body) {
        Ok(parsed) => BodyUsage {
            model: parsed.model.map(Cow::into_owned),
            usage: parsed
                .usage
                .as_ref()
                .filter(|raw| raw.has_counts())
                .map(RawUsage::to_usage),
            service_tier: parsed.service_tier.and_then(|tier| tier.0),
        },
        Err(_) => BodyUsage::default(),
    }
}

/// Reads model and usage from the last bytes of a body too large to keep whole (a big
/// embeddings answer). Every endpoint writes `model` and `usage` after its payload, so
/// the last occurrence of each key in the tail is the top-level one.
pub fn from_tail(tail: &[u8]) -> BodyUsage {
    let value_after = |key: &[u8]| -> Option<&[u8]> {
        let at = memchr::memmem::rfind(tail, key)?;
        let rest = &tail[at + key.len()..];
        let colon = rest.iter().position(|&b| b == b':')?;
        Some(&rest[colon + 1..])
    };
    let first_value = |bytes: &[u8]| -> Option<serde_json::Value> {
        serde_json::Deserializer::from_slice(bytes)
            .into_iter::<serde_json::Value>()
            .next()?
            .ok()
    };
    let usage = value_after(b"\"usage\"")
        .and_then(|bytes| {
            serde_json::Deserializer::from_slice(bytes)
                .into_iter::<RawUsage>()
                .next()?
                .ok()
        })
        .filter(RawUsage::has_counts)
        .map(|raw| raw.to_usage());
    let model = value_after(b"\"model\"")
        .and_then(first_value)
        .and_then(|v| v.as_str().map(str::to_owned));
    let service_tier = last_tier(tail).map(Cow::into_owned);
    BodyUsage {
        model,
        usage,
        service_tier,
    }
}

/// The generated text of a whole response body (choices' content, text, refusals and
/// tool-call arguments; Responses output text), for counting when usage is missing.
pub fn generated_text(body: &[u8]) -> String {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let mut text = String::new();
    let mut push = |value: &serde_json::Value| {
        if let Some(s) = value.as_str() {
            text.push_str(s);
        }
    };
    for choice in json["choices"].as_array().into_iter().flatten() {
        push(&choice["text"]);
        let message = &choice["message"];
        push(&message["content"]);
        push(&message["refusal"]);
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            push(&call["function"]["name"]);
            push(&call["function"]["arguments"]);
        }
    }
    for item in json["output"].as_array().into_iter().flatten() {
        push(&item["arguments"]);
        for part in item["content"].as_array().into_iter().flatten() {
            push(&part["text"]);
            push(&part["refusal"]);
        }
    }
    text
}

/// Field-by-field maximum: usage that arrives more than once in a stream only grows.
pub fn merge_max(into: &mut Usage, other: Usage) {
    if other.prompt_tokens < into.prompt_tokens || other.completion_tokens < into.completion_tokens
    {
        tracing::warn!(
            ?into,
            ?other,
            "streamed usage shrank; keeping the larger figures"
        );
    }
    into.prompt_tokens = into.prompt_tokens.max(other.prompt_tokens);
    into.cached_tokens = into.cached_tokens.max(other.cached_tokens);
    into.completion_tokens = into.completion_tokens.max(other.completion_tokens);
    into.reasoning_tokens = into.reasoning_tokens.max(other.reasoning_tokens);
    into.cache_write_tokens = into.cache_write_tokens.max(other.cache_write_tokens);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: reasoning,
            cache_write_tokens: 0,
        }
    }

    #[test]
    fn every_endpoint_shape() {
        let cases: &[(&str, &str, Option<Usage>)] = &[
            (
                "chat with details",
                r#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":64,"audio_tokens":0}}}"#,
                Some(usage(2006, 1920, 300, 64)),
            ),
            (
                "chat without details",
                r#"{"model":"m","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
                Some(usage(9, 0, 2, 0)),
            ),
            (
                "completions",
                r#"{"object":"text_completion","model":"gpt-3.5-turbo-instruct","choices":[{"text":"x"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
                Some(usage(5, 0, 7, 0)),
            ),
            (
                "embeddings",
                r#"{"object":"list","data":[{"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
                Some(usage(8, 0, 0, 0)),
            ),
            (
                "responses",
                r#"{"id":"resp_1","object":"response","model":"gpt-4.1-2025-04-14","usage":{"input_tokens":12033,"input_tokens_details":{"cached_tokens":11904},"output_tokens":44,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12077}}"#,
                Some(usage(12033, 11904, 44, 0)),
            ),
            (
                "null details",
                r#"{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":null,"completion_tokens_details":null}}"#,
                Some(usage(3, 0, 1, 0)),
            ),
            (
                "details larger than parent are clamped",
                r#"{"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9},"completion_tokens_details":{"reasoning_tokens":5}}}"#,
                Some(usage(3, 3, 1, 1)),
            ),
            ("no usage", r#"{"model":"m","choices":[]}"#, None),
            ("usage null", r#"{"model":"m","usage":null}"#, None),
            (
                "error body",
                r#"{"error":{"message":"x","type":"y","param":null,"code":null}}"#,
                None,
            ),
            ("not json", "<html>bad gateway</html>", None),
            ("wrong types", r#"{"model":5,"usage":"lots"}"#, None),
        ];
        for (name, body, expected) in cases {
            assert_eq!(from_body(body.as_bytes()).usage, *expected, "{name}");
        }
    }

    #[test]
    fn model_is_the_answered_snapshot() {
        let body = br#"{"model":"gpt-4o-mini-2024-07-18","usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        assert_eq!(
            from_body(body).model.as_deref(),
            Some("gpt-4o-mini-2024-07-18")
        );
        let escaped = br#"{"model":"a\"b","usage":null}"#;
        assert_eq!(from_body(escaped).model.as_deref(), Some("a\"b"));
    }

    #[test]
    fn a_large_body_is_read_from_its_tail() {
        let tail = br#"0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8000,"total_tokens":8000}}"#;
        let read = from_tail(tail);
        assert_eq!(read.model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(read.usage.map(|u| u.prompt_tokens), Some(8000));
        assert_eq!(from_tail(b"no keys here"), BodyUsage::default());
        assert_eq!(from_tail(br#""usage":"#).usage, None);
    }

    #[test]
    fn the_served_tier_is_read_leniently_beside_the_usage() {
        let read = |body: &str| from_body(body.as_bytes());
        let chat = read(
            r#"{"model":"gpt-5","usage":{"prompt_tokens":3,"completion_tokens":1},"service_tier":"flex","system_fingerprint":"fp"}"#,
        );
        assert_eq!(chat.service_tier.as_deref(), Some("flex"));
        let responses = read(
            r#"{"object":"response","service_tier":"priority","model":"o3","usage":{"input_tokens":3,"output_tokens":1}}"#,
        );
        assert_eq!(responses.service_tier.as_deref(), Some("priority"));
        // Not a string: no tier, and the usage still counts.
        for odd in ["5", "null", "true", "[\"flex\"]", "{\"tier\":\"flex\"}"] {
            let body = format!(r#"{{"usage":{{"prompt_tokens":3}},"service_tier":{odd}}}"#);
            let read = from_body(body.as_bytes());
            assert_eq!(read.service_tier, None, "{odd}");
            assert_eq!(read.usage.map(|u| u.prompt_tokens), Some(3), "{odd}");
        }
        let long = format!(r#"{{"service_tier":"{}"}}"#, "x".repeat(500));
        assert_eq!(
            read(&long).service_tier.map(|t| t.len()),
            Some(tier::MAX_RECORDED_BYTES)
        );
        let tail = br#"0.2]}],"usage":{"prompt_tokens":8},"service_tier":"default"}"#;
        assert_eq!(from_tail(tail).service_tier.as_deref(), Some("default"));
    }

    #[test]
    fn a_tier_is_found_in_the_bytes_of_a_chunk() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (
                br#"{"id":"c","service_tier":"flex","choices":[]}"#,
                Some("flex"),
            ),
            (br#"{"service_tier" : "priority"}"#, Some("priority")),
            (br#"{"service_tier":"a\"b"}"#, Some("a\"b")),
            (br#"{"service_tier":null}"#, None),
            (br#"{"service_tier":5}"#, None),
            (br#"{"content":"say \"service_tier\":\"flex\""}"#, None),
            (
                br#"{"service_tier":"flex","x":{"service_tier":"default"}}"#,
                Some("default"),
            ),
            (br#"{"service_tier":"unterminated"#, None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            let shown = String::from_utf8_lossy(bytes);
            assert_eq!(last_tier(bytes).as_deref(), *want, "{shown}");
        }
        // The first key, found from quote to quote: the top-level one of a chunk.
        let chunk = br#"{"id":"c","model":"m","service_tier":"flex","choices":[{"delta":{"content":"\"service_tier\":\"x\""}}]}"#;
        let at = find_tier_key(chunk).unwrap();
        assert_eq!(at, 22);
        assert_eq!(
            tier_value(&chunk[at + TIER_KEY.len()..]).as_deref(),
            Some("flex")
        );
        for none in [
            &b""[..],
            b"\"",
            b"{\"service_tier",
            b"{\"a\":\"service_tier\"}",
        ] {
            let found = find_tier_key(none).map(|at| &none[at..]);
            let value = found.and_then(|rest| tier_value(&rest[TIER_KEY.len()..]));
            assert_eq!(value, None, "{}", String::from_utf8_lossy(none));
        }
    }

    #[test]
    fn generated_text_covers_chat_completions_and_responses() {
        let chat = br#"{"choices":[{"message":{"content":"Hi","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}},{"text":"!"}]}"#;
        assert_eq!(generated_text(chat), "Hif{}!");
        let responses = br#"{"output":[{"type":"message","content":[{"type":"output_text","text":"Hello"}]},{"type":"function_call","arguments":"{\"a\":1}"}]}"#;
        assert_eq!(generated_text(responses), "Hello{\"a\":1}");
        assert_eq!(generated_text(b"nope"), "");
    }

    #[test]
    fn merge_keeps_the_maximum_of_each_field() {
        let mut total = usage(10, 0, 5, 0);
        merge_max(&mut total, usage(10, 4, 7, 2));
        merge_max(&mut total, usage(9, 0, 6, 0));
        assert_eq!(total, usage(10, 4, 7, 2));
    }
}
