//! Reading a metered request: the few fields tollgate needs, and the one rewrite it
//! makes (asking a stream to report usage). Everything else is forwarded as received,
//! `service_tier` included, whatever its value: the upstream decides what it means.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::metering::Endpoint;
use crate::pricing::tier;

#[derive(Debug)]
pub struct MeteredRequest {
    pub model: Option<String>,
    pub stream: bool,
    /// tollgate added `include_usage`: the usage-only chunk is not the client's to see.
    pub hide_usage: bool,
    /// The output cap the client set (`max_completion_tokens`, `max_tokens` or
    /// `max_output_tokens`), for estimates before forwarding.
    pub max_output: Option<u64>,
    /// `service_tier` as the client gave it (a string's text, or other JSON as JSON
    /// text), cut to what a row keeps; `None` when absent or null.
    pub service_tier: Option<String>,
    /// What goes upstream: the client's bytes, or the rewrite when one was needed. Also
    /// what is counted when the upstream reports no usage (the rewrite adds no prompt).
    pub body: Bytes,
}

/// The only fields read on the hot path. Deserialising into it validates the whole
/// body as JSON without building a tree of the messages.
#[derive(Deserialize)]
struct Probe {
    model: Option<Value>,
    stream: Option<Value>,
    #[serde(default)]
    stream_options: Field,
    max_completion_tokens: Option<Value>,
    max_tokens: Option<Value>,
    max_output_tokens: Option<Value>,
    service_tier: Option<Value>,
}

/// A member that may be absent, which `Option` cannot tell from `null`: the rewrite may
/// add `stream_options` only where the client sent none at all.
#[derive(Default)]
enum Field {
    #[default]
    Absent,
    Present(Value),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::Present)
    }
}

impl Field {
    fn value(&self) -> Option<&Value> {
        match self {
            Self::Absent => None,
            Self::Present(value) => Some(value),
        }
    }
}

impl MeteredRequest {
    pub fn parse(endpoint: Endpoint, body: Bytes) -> Result<Self, ApiError> {
        // A struct also deserialises from a JSON array; only an object is a request.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(invalid_json("the body must be a JSON object".to_owned()));
        }
        let probe: Probe =
            serde_json::from_slice(&body).map_err(|error| invalid_json(error.to_string()))?;
        let model = match probe.model {
            None | Some(Value::Null) => None,
            Some(Value::String(model)) => Some(model),
            Some(_) => {
                return Err(ApiError::InvalidField {
                    param: "model",
                    message: "`model` must be a string".to_owned(),
                });
            }
        };
        let stream = probe
            .stream
            .as_ref()
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let asked = probe
            .stream_options
            .value()
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let hide_usage = stream && endpoint.needs_include_usage() && !asked;
        let max_output = [
            &probe.max_completion_tokens,
            &probe.max_tokens,
            &probe.max_output_tokens,
        ]
        .into_iter()
        .find_map(|field| field.as_ref().and_then(Value::as_u64));
        let service_tier = match probe.service_tier {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(tier::recorded(&text).to_owned()),
            Some(other) => Some(tier::recorded(&other.to_string()).to_owned()),
        };
        let body = match (hide_usage, &probe.stream_options) {
            (false, _) => body,
            (true, Field::Absent) => with_stream_options_added(&body),
            (true, Field::Present(_)) => with_include_usage(&body)?,
        };
        Ok(Self {
            model,
            stream,
            hide_usage,
            max_output,
            service_tier,
            body,
        })
    }
}

fn invalid_json(detail: String) -> ApiError {
    ApiError::InvalidJson { detail }
}

/// The body with `"stream_options":{"include_usage":true}` as its first member, the
/// client's bytes otherwise as sent: for a body that has no `stream_options` (the
/// common stream), without parsing it again or re-serialising it, which would also
/// reorder its keys and rewrite its numbers. `body` is a JSON object (the probe read it
/// as one), so its first non-blank byte is the `{`, and it is not empty: it holds
/// `"stream":true`, so the added member is followed by a comma.
fn with_stream_options_added(body: &[u8]) -> Bytes {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let open = body.iter().position(|&b| b == b'{').map_or(0, |at| at + 1);
    let (head, rest) = body.split_at(open);
    let mut out = Vec::with_capacity(body.len() + MEMBER.len());
    out.extend_from_slice(head);
    out.extend_from_slice(MEMBER);
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// The body with `stream_options.include_usage = true`, merged into the client's other
/// stream options (for example `include_obfuscation`) rather than replacing them.
fn with_include_usage(body: &[u8]) -> Result<Bytes, ApiError> {
    let mut json: Value =
        serde_json::from_slice(body).map_err(|error| invalid_json(error.to_string()))?;
    let Some(object) = json.as_object_mut() else {
        return Err(invalid_json("the body must be a JSON object".to_owned()));
    };
    let options = object
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".to_owned(), Value::Bool(true));
    }
    serde_json::to_vec(&json)
        .map(Bytes::from)
        .map_err(|_| ApiError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(endpoint: Endpoint, body: &str) -> Result<MeteredRequest, ApiError> {
        MeteredRequest::parse(endpoint, Bytes::from(body.to_owned()))
    }

    #[test]
    fn a_plain_request_is_forwarded_byte_for_byte() {
        let body = r#"{"model":"gpt-4o-mini", "messages":[{"role":"user","content":"hi"}]}"#;
        let request = parse(Endpoint::ChatCompletions, body).unwrap();
        assert_eq!(request.body, body.as_bytes());
        assert_eq!(request.model.as_deref(), Some("gpt-4o-mini"));
        assert!(!request.stream && !request.hide_usage);
        assert_eq!(request.max_output, None);
    }

    #[test]
    fn the_output_cap_is_read_from_any_of_its_names() {
        for field in ["max_completion_tokens", "max_tokens", "max_output_tokens"] {
            let body = format!(r#"{{"model":"m","{field}":77}}"#);
            let request = parse(Endpoint::ChatCompletions, &body).unwrap();
            assert_eq!(request.max_output, Some(77), "{field}");
        }
    }

    #[test]
    fn a_stream_gets_include_usage_merged_into_its_options() {
        let request = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}"#,
        )
        .unwrap();
        assert!(request.hide_usage);
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            sent["stream_options"],
            serde_json::json!({"include_obfuscation": false, "include_usage": true})
        );
    }

    #[test]
    fn a_stream_without_options_gets_them_added_and_its_bytes_kept() {
        let cases = [
            (
                r#"{"model":"m","stream":true,"seed":18446744073709551616,"temperature":0.70}"#,
                r#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"seed":18446744073709551616,"temperature":0.70}"#,
            ),
            (
                " \n{ \"stream\" : true }",
                " \n{\"stream_options\":{\"include_usage\":true}, \"stream\" : true }",
            ),
        ];
        for (body, want) in cases {
            let request = parse(Endpoint::ChatCompletions, body).unwrap();
            assert!(request.hide_usage, "{body}");
            assert_eq!(std::str::from_utf8(&request.body).unwrap(), want);
            let sent: Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(sent["stream_options"]["include_usage"], true, "{body}");
        }
    }

    #[test]
    fn null_or_odd_stream_options_are_replaced_not_doubled() {
        for options in ["null", "5", r#""x""#, "{}", r#"{"include_usage":false}"#] {
            let body = format!(r#"{{"model":"m","stream":true,"stream_options":{options}}}"#);
            let request = parse(Endpoint::ChatCompletions, &body).unwrap();
            assert!(request.hide_usage, "{body}");
            let sent = std::str::from_utf8(&request.body).unwrap();
            assert_eq!(sent.matches("stream_options").count(), 1, "{sent}");
            let sent: Value = serde_json::from_str(sent).unwrap();
            assert_eq!(sent["stream_options"]["include_usage"], true, "{body}");
        }
    }

    #[test]
    fn a_client_that_asked_for_usage_keeps_its_body_and_sees_usage() {
        let body =
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"prompt":"x"}"#;
        let request = parse(Endpoint::Completions, body).unwrap();
        assert!(!request.hide_usage);
        assert_eq!(request.body, body.as_bytes());
    }

    #[test]
    fn responses_streams_are_not_rewritten() {
        let body = r#"{"model":"m","stream":true,"input":"x"}"#;
        let request = parse(Endpoint::Responses, body).unwrap();
        assert!(request.stream && !request.hide_usage);
        assert_eq!(request.body, body.as_bytes());
    }

    #[test]
    fn the_service_tier_is_read_as_given_and_forwarded_untouched() {
        let cases = [
            (r#"{"model":"m","service_tier":"flex"}"#, Some("flex")),
            (r#"{"model":"m","service_tier":"FLEX"}"#, Some("FLEX")),
            (r#"{"model":"m","service_tier":5}"#, Some("5")),
            (
                r#"{"model":"m","service_tier":{"a":[1]}}"#,
                Some(r#"{"a":[1]}"#),
            ),
            (r#"{"model":"m","service_tier":null}"#, None),
            (r#"{"model":"m"}"#, None),
        ];
        for (body, want) in cases {
            for endpoint in [Endpoint::ChatCompletions, Endpoint::Responses] {
                let request = parse(endpoint, body).unwrap();
                assert_eq!(request.service_tier.as_deref(), want, "{body}");
                assert_eq!(request.body, body.as_bytes(), "{body}");
            }
        }
        let long = format!(r#"{{"service_tier":"{}"}}"#, "é".repeat(100));
        let request = parse(Endpoint::ChatCompletions, &long).unwrap();
        assert_eq!(request.service_tier.map(|t| t.chars().count()), Some(32));
        // The stream rewrite keeps it too.
        let request = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"m","stream":true,"service_tier":"priority"}"#,
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["service_tier"], "priority");
    }

    #[test]
    fn bad_bodies_are_400s() {
        for body in ["", "{", "[1,2]", "\"text\"", "{\"model\":", "\u{0}"] {
            let error = parse(Endpoint::ChatCompletions, body).unwrap_err();
            assert!(
                matches!(error, ApiError::InvalidJson { .. }),
                "{body:?}: {error:?}"
            );
        }
        let error = parse(Endpoint::ChatCompletions, r#"{"model":5}"#).unwrap_err();
        assert!(matches!(
            error,
            ApiError::InvalidField { param: "model", .. }
        ));
    }
}
