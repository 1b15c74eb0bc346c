//! The walk over chat, responses and text-input bodies that reports every counted part.

use serde_json::{Map, Value};

use super::tally::{Rules, Tally};
use super::{CALL_OVERHEAD, REPLY_PRIMING};
use crate::metering::Endpoint;

pub(super) fn walk_prompt(endpoint: Endpoint, body: &Value, rules: &Rules, tally: &mut impl Tally) {
    match endpoint {
        Endpoint::ChatCompletions => walk_chat(body, rules, tally),
        Endpoint::Completions => walk_text_inputs(body.get("prompt"), tally),
        Endpoint::Embeddings => walk_text_inputs(body.get("input"), tally),
        Endpoint::Responses => walk_responses(body, rules, tally),
    }
}

/// A completions `prompt` or embeddings `input`: a string, strings, token ids, or arrays
/// of token ids. Token ids are already tokens, so each counts one and adds no text.
pub(super) fn walk_text_inputs(input: Option<&Value>, tally: &mut impl Tally) {
    match input {
        Some(Value::String(text)) => tally.text(text),
        Some(Value::Number(_)) => tally.tokens(1),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(text) => tally.text(text),
                    Value::Number(_) => tally.tokens(1),
                    Value::Array(ids) => tally.tokens(to_i64(ids.len())),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

pub(super) fn walk_chat(body: &Value, rules: &Rules, tally: &mut impl Tally) {
    for message in objects(body.get("messages")) {
        walk_chat_message(message, rules, tally);
    }
    tally.tokens(REPLY_PRIMING);
    // Chat tools nest the definition under "function"; legacy `functions` are flat.
    let tools = objects(body.get("tools")).filter_map(|tool| tool.get("function")?.as_object());
    let functions = objects(body.get("functions"));
    walk_function_defs(tools.chain(functions), rules, tally);
}

/// The cookbook counts the value of every string field, whatever its name, so fields it
/// never knew (tool_call_id, refusal) are covered without a list.
pub(super) fn walk_chat_message(
    message: &Map<String, Value>,
    rules: &Rules,
    tally: &mut impl Tally,
) {
    tally.tokens(rules.per_message);
    for (key, value) in message {
        match (key.as_str(), value) {
            (_, Value::String(text)) => {
                tally.text(text);
                if key == "name" {
                    tally.tokens(rules.per_name);
                }
            }
            ("content", Value::Array(parts)) => walk_parts(parts, rules, tally),
            ("tool_calls", Value::Array(calls)) => {
                for call in calls {
                    walk_call(call.get("function").and_then(Value::as_object), tally);
                }
            }
            ("function_call", call) => walk_call(call.as_object(), tally),
            _ => {}
        }
    }
}

/// A function call the model made earlier: `{name, arguments}`.
pub(super) fn walk_call(call: Option<&Map<String, Value>>, tally: &mut impl Tally) {
    let Some(call) = call else {
        return;
    };
    for key in ["name", "arguments"] {
        if let Some(text) = str_field(call, key) {
            tally.text(text);
        }
    }
    tally.tokens(CALL_OVERHEAD);
}

/// Content parts of chat and Responses messages. Audio and files have no estimate and
/// count nothing; the upstream's usage covers them.
pub(super) fn walk_parts(parts: &[Value], rules: &Rules, tally: &mut impl Tally) {
    for part in parts.iter().filter_map(Value::as_object) {
        let text = match str_field(part, "type") {
            Some("text" | "input_text" | "output_text") => str_field(part, "text"),
            Some("refusal") => str_field(part, "refusal"),
            // Chat nests `{url, detail}`; a bare string is taken as the URL.
            Some("image_url") => {
                let (url, detail) = match part.get("image_url") {
                    Some(Value::Object(image)) => {
                        (str_field(image, "url"), str_field(image, "detail"))
                    }
                    Some(Value::String(url)) => (Some(url.as_str()), None),
                    _ => (None, None),
                };
                tally.image(rules, url, detail);
                None
            }
            // Responses: `image_url` is a string, or absent when `file_id` is given.
            Some("input_image") => {
                tally.image(
                    rules,
                    str_field(part, "image_url"),
                    str_field(part, "detail"),
                );
                None
            }
            _ => None,
        };
        if let Some(text) = text {
            tally.text(text);
        }
    }
}

/// Context held upstream (`previous_response_id`, `conversation`) is invisible here, so
/// such requests are undercounted until the response's usage arrives.
pub(super) fn walk_responses(body: &Value, rules: &Rules, tally: &mut impl Tally) {
    // Instructions and a bare string input reach the model as a system and a user
    // message, so they get the same framing as those messages would.
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        walk_message_text("system", instructions, rules, tally);
    }
    match body.get("input") {
        Some(Value::String(input)) => walk_message_text("user", input, rules, tally),
        Some(Value::Array(items)) => {
            for item in items.iter().filter_map(Value::as_object) {
                walk_response_item(item, rules, tally);
            }
        }
        _ => {}
    }
    tally.tokens(REPLY_PRIMING);
    let functions =
        objects(body.get("tools")).filter(|tool| str_field(tool, "type") == Some("function"));
    walk_function_defs(functions, rules, tally);
}

pub(super) fn walk_message_text(role: &str, text: &str, rules: &Rules, tally: &mut impl Tally) {
    tally.tokens(rules.per_message);
    tally.text(role);
    tally.text(text);
}

/// Unlike a chat message, an item also carries `type`, `id` and `status`, which the model
/// never sees; only role and content count.
pub(super) fn walk_response_item(item: &Map<String, Value>, rules: &Rules, tally: &mut impl Tally) {
    match str_field(item, "type") {
        Some("message") => walk_response_message(item, rules, tally),
        // The short form `{role, content}` has no type.
        None if item.contains_key("role") => walk_response_message(item, rules, tally),
        Some("function_call") => walk_call(Some(item), tally),
        // Reaches the model as a tool message, so it is framed like one.
        Some("function_call_output") => {
            tally.tokens(rules.per_message);
            walk_content(item.get("output"), rules, tally);
        }
        _ => {}
    }
}

pub(super) fn walk_response_message(
    item: &Map<String, Value>,
    rules: &Rules,
    tally: &mut impl Tally,
) {
    tally.tokens(rules.per_message);
    if let Some(role) = str_field(item, "role") {
        tally.text(role);
    }
    walk_content(item.get("content"), rules, tally);
}

pub(super) fn walk_content(content: Option<&Value>, rules: &Rules, tally: &mut impl Tally) {
    match content {
        Some(Value::String(text)) => tally.text(text),
        Some(Value::Array(parts)) => walk_parts(parts, rules, tally),
        _ => {}
    }
}

/// The cookbook's approximation of how function definitions are rendered into the
/// prompt. Only flat `type`+`description` properties are modelled; nested schemas are
/// undercounted, which upstream usage corrects.
pub(super) fn walk_function_defs<'a>(
    functions: impl Iterator<Item = &'a Map<String, Value>>,
    rules: &Rules,
    tally: &mut impl Tally,
) {
    let mut any = false;
    for function in functions {
        any = true;
        tally.tokens(rules.func_init);
        let name = str_field(function, "name").unwrap_or_default();
        let description = strip_period(str_field(function, "description").unwrap_or_default());
        tally.text(&format!("{name}:{description}"));
        let properties = function
            .get("parameters")
            .and_then(|parameters| parameters.get("properties"))
            .and_then(Value::as_object)
            .filter(|properties| !properties.is_empty());
        let Some(properties) = properties else {
            continue;
        };
        tally.tokens(rules.prop_init);
        for (key, property) in properties {
            tally.tokens(rules.prop_key);
            if let Some(items) = property.get("enum").and_then(Value::as_array) {
                tally.tokens(rules.enum_init);
                for item in items {
                    tally.tokens(rules.enum_item);
                    match item {
                        Value::String(text) => tally.text(text),
                        other => tally.text(&other.to_string()),
                    }
                }
            }
            let kind = value_text(property.get("type"));
            let description = value_text(property.get("description"));
            tally.text(&format!("{key}:{kind}:{}", strip_period(&description)));
        }
    }
    if any {
        tally.tokens(rules.func_end);
    }
}

// === JSON helpers ===

/// The objects of a JSON array; anything else yields nothing.
pub(super) fn objects(value: Option<&Value>) -> impl Iterator<Item = &Map<String, Value>> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

pub(super) fn str_field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// A string as is; other values (e.g. `"type": ["string", "null"]`) as JSON; absent as "".
pub(super) fn value_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

pub(super) fn strip_period(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

pub(super) fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

pub(super) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
