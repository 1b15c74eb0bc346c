//! Whether a shadow answer agrees with the answer the client got: the first choice's
//! text (and tool calls) exactly, and, for a JSON or tool-call answer, its parsed value
//! (key order and whitespace aside). Pure: bodies in, two verdicts out.

use serde_json::Value;

use crate::metering::Endpoint;

/// What one answer said, as compared.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    text: Option<String>,
    /// Tool or function calls: name and arguments as sent (a JSON string).
    calls: Vec<(String, String)>,
}

/// The two verdicts; `value` is `None` when the client's answer was neither JSON nor
/// tool calls, `text` is `None` when the candidate's body held no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    pub text: Option<bool>,
    pub value: Option<bool>,
}

pub fn compare(endpoint: Endpoint, primary: &[u8], candidate: &[u8]) -> Agreement {
    let (Some(primary), candidate) = (answer(endpoint, primary), answer(endpoint, candidate))
    else {
        return Agreement {
            text: None,
            value: None,
        };
    };
    let Some(candidate) = candidate else {
        return Agreement {
            text: None,
            value: None,
        };
    };
    let text = primary == candidate;
    let structured = !primary.calls.is_empty() || primary.text.as_deref().and_then(json).is_some();
    let value = structured.then(|| {
        let parsed = |answer: &Answer| {
            let text = answer
                .text
                .as_deref()
                .map(|t| json(t).unwrap_or(Value::String(t.to_owned())));
            let calls: Vec<(String, Value)> = answer
                .calls
                .iter()
                .map(|(name, args)| {
                    (
                        name.clone(),
                        json(args).unwrap_or(Value::String(args.clone())),
                    )
                })
                .collect();
            (text, calls)
        };
        parsed(&primary) == parsed(&candidate)
    });
    Agreement {
        text: Some(text),
        value,
    }
}

/// A JSON object or array (a bare number or string is prose, not structure).
fn json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    serde_json::from_str(trimmed).ok()
}

fn answer(endpoint: Endpoint, body: &[u8]) -> Option<Answer> {
    let body: Value = serde_json::from_slice(body).ok()?;
    match endpoint {
        Endpoint::ChatCompletions => {
            let message = body.get("choices")?.get(0)?.get("message")?;
            let text = match message.get("content") {
                Some(Value::String(text)) => Some(text.clone()),
                Some(Value::Array(parts)) => Some(
                    parts
                        .iter()
                        .filter_map(|part| part.get("text").and_then(Value::as_str))
                        .collect(),
                ),
                _ => None,
            };
            let mut calls: Vec<(String, String)> = message
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|call| call.get("function"))
                .map(function)
                .collect();
            if let Some(legacy) = message.get("function_call") {
                calls.push(function(legacy));
            }
            Some(Answer { text, calls })
        }
        Endpoint::Completions => Some(Answer {
            text: body
                .get("choices")?
                .get(0)?
                .get("text")
                .and_then(Value::as_str)
                .map(str::to_owned),
            calls: Vec::new(),
        }),
        Endpoint::Responses => {
            let mut answer = Answer::default();
            let mut text = String::new();
            for item in body.get("output")?.as_array()? {
                match item.get("type").and_then(Value::as_str) {
                    Some("message") => {
                        for part in item
                            .get("content")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(piece) = part.get("text").and_then(Value::as_str) {
                                text.push_str(piece);
                            }
                        }
                    }
                    Some("function_call") => answer.calls.push(function(item)),
                    _ => {}
                }
            }
            answer.text = (!text.is_empty()).then_some(text);
            Some(answer)
        }
        Endpoint::Embeddings => None,
    }
}

fn function(call: &Value) -> (String, String) {
    let field = |name| {
        call.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (field("name"), field("arguments"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(content: Value) -> Vec<u8> {
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
            .to_string()
            .into_bytes()
    }

    fn tool(args: &str) -> Vec<u8> {
        json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "get_weather", "arguments": args}}]}}]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn prose_is_compared_exactly_and_has_no_value_verdict() {
        let same = compare(
            Endpoint::ChatCompletions,
            &chat(json!("Hello")),
            &chat(json!("Hello")),
        );
        assert_eq!(
            same,
            Agreement {
                text: Some(true),
                value: None
            }
        );
        let differ = compare(
            Endpoint::ChatCompletions,
            &chat(json!("Hello")),
            &chat(json!("Hello!")),
        );
        assert_eq!(
            differ,
            Agreement {
                text: Some(false),
                value: None
            }
        );
    }

    #[test]
    fn json_and_tool_calls_also_match_by_parsed_value() {
        let a = chat(json!(r#"{"city": "Paris", "days": [1, 2]}"#));
        let b = chat(json!(r#"{"days":[1,2],"city":"Paris"}"#));
        assert_eq!(
            compare(Endpoint::ChatCompletions, &a, &b),
            Agreement {
                text: Some(false),
                value: Some(true)
            }
        );
        let calls = compare(
            Endpoint::ChatCompletions,
            &tool(r#"{"city":"Paris"}"#),
            &tool(r#"{ "city": "Paris" }"#),
        );
        assert_eq!(
            calls,
            Agreement {
                text: Some(false),
                value: Some(true)
            }
        );
        let other = compare(
            Endpoint::ChatCompletions,
            &tool(r#"{"city":"Paris"}"#),
            &tool(r#"{"city":"Rome"}"#),
        );
        assert_eq!(
            other,
            Agreement {
                text: Some(false),
                value: Some(false)
            }
        );
        // A tool call answered with prose: no match either way.
        let prose = compare(Endpoint::ChatCompletions, &tool("{}"), &chat(json!("{}")));
        assert_eq!(
            prose,
            Agreement {
                text: Some(false),
                value: Some(false)
            }
        );
    }

    #[test]
    fn responses_and_completions_compare_their_text() {
        let response = |text: &str| {
            json!({"output": [{"type": "reasoning"}, {"type": "message", "content": [{"type": "output_text", "text": text}]}]})
                .to_string()
                .into_bytes()
        };
        assert_eq!(
            compare(Endpoint::Responses, &response("hi"), &response("hi")).text,
            Some(true)
        );
        let completion = |text: &str| {
            json!({"choices": [{"text": text}]})
                .to_string()
                .into_bytes()
        };
        assert_eq!(
            compare(Endpoint::Completions, &completion("a"), &completion("b")).text,
            Some(false)
        );
        // No answer from the candidate: nothing to compare.
        assert_eq!(
            compare(
                Endpoint::ChatCompletions,
                &chat(json!("x")),
                b"{\"error\":{}}"
            ),
            Agreement {
                text: None,
                value: None
            }
        );
    }
}
