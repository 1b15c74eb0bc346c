//! Prompt-token estimates with tiktoken-rs. They size the TPM reservation before a request
//! is forwarded and stand in for usage when the upstream reports none; whenever the
//! upstream's `usage` exists it wins, so everything here may be slightly off.
//!
//! One walk over the request body serves three tallies: tokens for [`count_prompt`],
//! an upper bound of that count for [`prompt_bound`] (no tokenizer needed), and bytes
//! for [`prompt_text_len`], so the cheap figures can never drift from what the
//! expensive count actually visits.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use crate::metering::Endpoint;
use crate::metering::image::data_url_size;

/// Framing the model adds after the last message (`<|start|>assistant<|message|>`).
const REPLY_PRIMING: i64 = 3;
/// tiktoken-rs adds one token per function/tool call; the cookbook has no figure for it.
const CALL_OVERHEAD: i64 = 1;

/// Which encodings' tables are in memory (indexed by `Encoding as usize`).
static LOADED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// Whether counting for `model` can start at once: its table is loaded. The first load
/// takes ~0.5 s, which must happen on a blocking thread, never an async worker.
pub fn is_warm(model: &str) -> bool {
    LOADED[encoding_for_model(model) as usize].load(Ordering::Relaxed)
}

/// The two encodings tollgate loads. Every current OpenAI model uses one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        let bpe = match self {
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        };
        LOADED[self as usize].store(true, Ordering::Relaxed);
        bpe
    }
}

/// Which encoding a model uses; `ft:` names resolve by their base model.
pub fn encoding_for_model(model: &str) -> Encoding {
    match get_tokenizer(model) {
        Some(Tokenizer::Cl100kBase) => Encoding::Cl100kBase,
        // o200k_harmony differs from o200k_base only in special tokens, which ordinary
        // counting never produces. Unknown names are most likely new models, and every
        // model since gpt-4o uses o200k; retired p50k/r50k models are not worth a third
        // table in memory.
        _ => Encoding::O200kBase,
    }
}

/// Which BPE a model uses: o200k_base for gpt-4o*, gpt-4.1*, gpt-5*, o1/o3/o4*,
/// chatgpt-4o*; cl100k_base for gpt-4, gpt-4-*, gpt-3.5*, text-embedding-*, davinci-002,
/// babbage-002; `ft:` names resolve by their base; unknown models fall back to o200k_base.
pub fn bpe_for_model(model: &str) -> &'static CoreBPE {
    encoding_for_model(model).bpe()
}

/// Loads both singletons (call once at startup, from a blocking thread).
/// Loads both tables now rather than on first use. The proxy does not call it: the
/// tables cost ~70 MB of memory and are needed only to estimate the rare request whose
/// upstream reports no usage, which counts on a blocking thread anyway.
pub fn warm() {
    let _ = Encoding::O200kBase.bpe();
    let _ = Encoding::Cl100kBase.bpe();
}

/// Tokens of plain text, counted as ordinary text (special-token markers in user text
/// are NOT special: use encode_ordinary / count_ordinary semantics).
pub fn count_text(model: &str, text: &str) -> u64 {
    to_u64(bpe_for_model(model).count_ordinary(text))
}

/// Estimated prompt tokens of a request body for an endpoint.
pub fn count_prompt(endpoint: Endpoint, model: &str, body: &Value) -> u64 {
    let mut tally = TokenTally {
        bpe: bpe_for_model(model),
        total: 0,
    };
    walk_prompt(endpoint, body, &Rules::for_model(model), &mut tally);
    // Negative constants (enum_init) could only win on absurd inputs; clamp anyway.
    u64::try_from(tally.total).unwrap_or(0)
}

/// An upper bound of [`count_prompt`] that needs no tokenizer: each text counts its
/// length in bytes, which its token count never exceeds (the tokenizer splits bytes
/// into tokens of at least one byte each), and everything else (message framing,
/// images, function definitions) counts exactly as in `count_prompt`. Cheap enough for
/// every request, and it never loads a tokenizer table (tens of MB), so admission can
/// reserve with it and count only when the bound does not fit.
pub fn prompt_bound(endpoint: Endpoint, model: &str, body: &Value) -> u64 {
    let mut tally = BoundTally { total: 0 };
    walk_prompt(endpoint, body, &Rules::for_model(model), &mut tally);
    u64::try_from(tally.total).unwrap_or(0)
}

/// Rough size in bytes of the text count_prompt would tokenize (sum of string lengths it
/// visits), so callers can decide to move big counts to a blocking thread. Must be cheap
/// (no tokenization).
pub fn prompt_text_len(endpoint: Endpoint, body: &Value) -> usize {
    let mut tally = LenTally { bytes: 0 };
    // The model only changes constants, which a byte tally ignores.
    walk_prompt(endpoint, body, &Rules::for_model(""), &mut tally);
    tally.bytes
}

/// Estimated prompt tokens of one image input of `size` (width, height) pixels.
///
/// This is an admission/fallback estimate only; billing comes from upstream usage. The
/// family's rule from the model name (`ft:` names by their base; unknown models as gpt-4o):
///
/// - Tile models: `low` costs the base only. Otherwise the image is fitted inside
///   2048×2048, then its short side is scaled down to 768 if longer (never up), and each
///   512-pixel tile costs the tile figure on top of the base.
/// - Patch models: one 32-pixel patch each, scaled down to fit 1536 patches, times the
///   model's multiplier, rounded up. `detail` is ignored: it has not been seen to change
///   patch-model counts.
///
/// `auto` and a missing detail are priced as high, since the upstream may choose high.
/// An unknown size (an https URL, a file id, undecodable data) is assumed to be
/// 1024×1024: 765 tokens on gpt-4o at high detail, 1024 patches on patch models.
pub fn image_tokens(model: &str, detail: Option<&str>, size: Option<(u32, u32)>) -> u64 {
    image_cost(base_model(model)).tokens(detail, size)
}

/// The size assumed for images whose size is unknown.
const UNKNOWN_IMAGE_SIZE: (u32, u32) = (1024, 1024);

#[derive(Debug, Clone, Copy)]
enum ImageCost {
    Tiles {
        base: u64,
        tile: u64,
    },
    /// Tokens per patch, in hundredths, to keep the math in integers.
    Patches {
        multiplier_pct: u64,
    },
}

impl ImageCost {
    fn tokens(self, detail: Option<&str>, size: Option<(u32, u32)>) -> u64 {
        let (width, height) = size.unwrap_or(UNKNOWN_IMAGE_SIZE);
        match self {
            Self::Tiles { base, .. } if detail == Some("low") => base,
            Self::Tiles { base, tile } => {
                base.saturating_add(tile.saturating_mul(tile_count(width, height)))
            }
            // Rounding is undocumented; round up so an estimate never under-reserves.
            Self::Patches { multiplier_pct } => {
                (patch_count(width, height) * multiplier_pct).div_ceil(100)
            }
        }
    }
}

/// 512-pixel tiles after fitting inside 2048×2048 and then scaling the short side down to
/// 768. The scaled sides are exact fractions and partial tiles round up, so a side that
/// a resizer would round down to a tile boundary may count one tile more.
fn tile_count(width: u32, height: u32) -> u64 {
    const FIT: u64 = 2048;
    const SHORT: u64 = 768;
    const TILE: u64 = 512;
    let (w, h) = (u64::from(width), u64::from(height));
    let (long, short) = (w.max(h), w.min(h));
    // Each side becomes side·num/den. The fit scales by f = min(1, 2048/long); the second
    // step by 768/(short·f), so when it applies f cancels and each side is side·768/short.
    let (num, den) = if short.saturating_mul(FIT.min(long)) > SHORT.saturating_mul(long) {
        (SHORT, short)
    } else if long > FIT {
        (FIT, long)
    } else {
        (1, 1)
    };
    let tiles = |side: u64| (side * num).div_ceil(den * TILE);
    tiles(w) * tiles(h)
}

/// 32-pixel patches, scaled down to at most 1536 as the reference describes.
fn patch_count(width: u32, height: u32) -> u64 {
    const PATCH: f64 = 32.0;
    const MAX_PATCHES: u64 = 1536;
    let (w, h) = (u64::from(width), u64::from(height));
    let patches = w.div_ceil(32) * h.div_ceil(32);
    if patches <= MAX_PATCHES {
        return patches;
    }
    let (w, h) = (f64::from(width), f64::from(height));
    let mut scale = (PATCH * PATCH * 1536.0 / (w * h)).sqrt();
    // Shrink further so the tighter side holds whole patches. A side under one patch
    // keeps its length (it will count one patch), so scale never reaches zero.
    let whole = |side: f64| {
        let patches = side * scale / PATCH;
        patches.floor().max(1.0) / patches
    };
    scale *= whole(w).min(whole(h));
    // The tighter side lands on a whole number up to float error; don't let that round
    // up to one more patch.
    let sides = |side: f64| (side * scale / PATCH - 1e-9).ceil();
    let patches = sides(w) * sides(h);
    // Saturating float-to-int cast; the product is at most ~1536 here anyway.
    (patches as u64).clamp(1, MAX_PATCHES)
}

const fn tiles(base: u64, tile: u64) -> ImageCost {
    ImageCost::Tiles { base, tile }
}

const fn patches(multiplier_pct: u64) -> ImageCost {
    ImageCost::Patches { multiplier_pct }
}

/// Prefixes checked in order, so the mini/nano variants come before their families.
/// gpt-4o, gpt-4.1, gpt-4.5, chatgpt-4o and unknown models use the default.
const IMAGE_COSTS: &[(&str, ImageCost)] = &[
    ("gpt-4o-mini", tiles(2833, 5667)),
    ("gpt-4.1-mini", patches(162)),
    ("gpt-4.1-nano", patches(246)),
    ("gpt-5-mini", patches(162)),
    ("gpt-5-nano", patches(246)),
    ("o4-mini", patches(172)),
    ("o1", tiles(75, 150)),
    ("o3", tiles(75, 150)),
    ("computer-use-preview", tiles(65, 129)),
];
const DEFAULT_IMAGE_COST: ImageCost = tiles(85, 170);

fn image_cost(model: &str) -> ImageCost {
    IMAGE_COSTS
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map_or(DEFAULT_IMAGE_COST, |&(_, cost)| cost)
}

/// `ft:{base}:{org}:{suffix}:{id}` → `{base}`; other names unchanged.
fn base_model(model: &str) -> &str {
    match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest),
        None => model,
    }
}

// === Rules ===

/// The per-model constants of the cookbook's counting recipe.
#[derive(Debug, Clone, Copy)]
struct Rules {
    per_message: i64,
    per_name: i64,
    func_init: i64,
    prop_init: i64,
    prop_key: i64,
    enum_init: i64,
    enum_item: i64,
    func_end: i64,
    image: ImageCost,
}

impl Rules {
    fn for_model(model: &str) -> Self {
        // The cookbook's only exception; tiktoken-rs keeps it too.
        let (per_message, per_name) = if model == "gpt-3.5-turbo-0301" {
            (4, -1)
        } else {
            (3, 1)
        };
        // The cookbook measured 10 on gpt-3.5/gpt-4 and 7 on gpt-4o; the encoding is the
        // best available proxy for which generation a model belongs to.
        let func_init = match encoding_for_model(model) {
            Encoding::Cl100kBase => 10,
            Encoding::O200kBase => 7,
        };
        Self {
            per_message,
            per_name,
            func_init,
            prop_init: 3,
            prop_key: 3,
            enum_init: -3,
            enum_item: 3,
            func_end: 12,
            image: image_cost(base_model(model)),
        }
    }

    /// An image part; the size is read from a data URL's header, other URLs use the
    /// default size.
    fn image(&self, url: Option<&str>, detail: Option<&str>) -> i64 {
        let size = url.and_then(data_url_size);
        to_i64(self.image.tokens(detail, size))
    }
}

// === Tallies ===

/// What a walk over a request body reports: text to tokenize and fixed token overheads.
trait Tally {
    fn text(&mut self, text: &str);
    fn tokens(&mut self, n: i64);
    /// An image given by URL; not text, so a byte tally skips it without decoding.
    fn image(&mut self, rules: &Rules, url: Option<&str>, detail: Option<&str>);
}

struct TokenTally {
    bpe: &'static CoreBPE,
    total: i64,
}

impl Tally for TokenTally {
    fn text(&mut self, text: &str) {
        let n = to_i64(self.bpe.count_ordinary(text));
        self.total = self.total.saturating_add(n);
    }

    fn tokens(&mut self, n: i64) {
        self.total = self.total.saturating_add(n);
    }

    fn image(&mut self, rules: &Rules, url: Option<&str>, detail: Option<&str>) {
        self.tokens(rules.image(url, detail));
    }
}

/// Role names, one token each in both encodings (a test checks): a bound that counted
/// their bytes would charge a short chat message twice its size.
const ONE_TOKEN_ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "developer",
    "tool",
    "function",
];

struct BoundTally {
    total: i64,
}

impl Tally for BoundTally {
    fn text(&mut self, text: &str) {
        let n = if ONE_TOKEN_ROLES.contains(&text) {
            1
        } else {
            to_i64(text.len())
        };
        self.total = self.total.saturating_add(n);
    }

    fn tokens(&mut self, n: i64) {
        self.total = self.total.saturating_add(n);
    }

    fn image(&mut self, rules: &Rules, url: Option<&str>, detail: Option<&str>) {
        self.tokens(rules.image(url, detail));
    }
}

struct LenTally {
    bytes: usize,
}

impl Tally for LenTally {
    fn text(&mut self, text: &str) {
        self.bytes = self.bytes.saturating_add(text.len());
    }

    fn tokens(&mut self, _n: i64) {}

    fn image(&mut self, _rules: &Rules, _url: Option<&str>, _detail: Option<&str>) {}
}

// === Walks ===

fn walk_prompt(endpoint: Endpoint, body: &Value, rules: &Rules, tally: &mut impl Tally) {
    match endpoint {
        Endpoint::ChatCompletions => walk_chat(body, rules, tally),
        Endpoint::Completions => walk_text_inputs(body.get("prompt"), tally),
        Endpoint::Embeddings => walk_text_inputs(body.get("input"), tally),
        Endpoint::Responses => walk_responses(body, rules, tally),
    }
}

/// A completions `prompt` or embeddings `input`: a string, strings, token ids, or arrays
/// of token ids. Token ids are already tokens, so each counts one and adds no text.
fn walk_text_inputs(input: Option<&Value>, tally: &mut impl Tally) {
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

fn walk_chat(body: &Value, rules: &Rules, tally: &mut impl Tally) {
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
fn walk_chat_message(message: &Map<String, Value>, rules: &Rules, tally: &mut impl Tally) {
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
fn walk_call(call: Option<&Map<String, Value>>, tally: &mut impl Tally) {
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
fn walk_parts(parts: &[Value], rules: &Rules, tally: &mut impl Tally) {
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
fn walk_responses(body: &Value, rules: &Rules, tally: &mut impl Tally) {
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

fn walk_message_text(role: &str, text: &str, rules: &Rules, tally: &mut impl Tally) {
    tally.tokens(rules.per_message);
    tally.text(role);
    tally.text(text);
}

/// Unlike a chat message, an item also carries `type`, `id` and `status`, which the model
/// never sees; only role and content count.
fn walk_response_item(item: &Map<String, Value>, rules: &Rules, tally: &mut impl Tally) {
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

fn walk_response_message(item: &Map<String, Value>, rules: &Rules, tally: &mut impl Tally) {
    tally.tokens(rules.per_message);
    if let Some(role) = str_field(item, "role") {
        tally.text(role);
    }
    walk_content(item.get("content"), rules, tally);
}

fn walk_content(content: Option<&Value>, rules: &Rules, tally: &mut impl Tally) {
    match content {
        Some(Value::String(text)) => tally.text(text),
        Some(Value::Array(parts)) => walk_parts(parts, rules, tally),
        _ => {}
    }
}

/// The cookbook's approximation of how function definitions are rendered into the
/// prompt. Only flat `type`+`description` properties are modelled; nested schemas are
/// undercounted, which upstream usage corrects.
fn walk_function_defs<'a>(
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
fn objects(value: Option<&Value>) -> impl Iterator<Item = &Map<String, Value>> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn str_field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// A string as is; other values (e.g. `"type": ["string", "null"]`) as JSON; absent as "".
fn value_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn strip_period(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cookbook_messages() -> Value {
        json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            // The notebook's wording; "...before we deliver our final product." is one
            // token longer (125/130), which is how this example is sometimes misquoted.
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
        ])
    }

    fn weather_tool() -> Value {
        json!({
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        })
    }

    fn weather_messages() -> Value {
        json!([
            {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
            {"role": "user", "content": "What's the weather like in San Francisco?"},
        ])
    }

    fn chat(model: &str, body: Value) -> u64 {
        count_prompt(Endpoint::ChatCompletions, model, &body)
    }

    #[test]
    fn cookbook_messages_match_published_counts() {
        for (model, want) in [
            ("gpt-4o", 124),
            ("gpt-4o-mini", 124),
            ("gpt-4", 129),
            ("gpt-3.5-turbo", 129),
            ("gpt-3.5-turbo-0301", 127),
        ] {
            let body = json!({"model": model, "messages": cookbook_messages()});
            assert_eq!(chat(model, body), want, "{model}");
        }
    }

    #[test]
    fn cookbook_tools_match_published_counts() {
        for (model, want) in [
            ("gpt-4o", 101),
            ("gpt-4o-mini", 101),
            ("gpt-4", 105),
            ("gpt-3.5-turbo", 105),
        ] {
            let tools = json!([{"type": "function", "function": weather_tool()}]);
            let body = json!({"messages": weather_messages(), "tools": tools});
            assert_eq!(chat(model, body), want, "{model} tools");
            // Legacy `functions` are the same definitions, flat.
            let body = json!({"messages": weather_messages(), "functions": [weather_tool()]});
            assert_eq!(chat(model, body), want, "{model} functions");
        }
    }

    #[test]
    fn chat_counts_tool_calls_and_tool_messages() {
        let model = "gpt-4o";
        let call = json!({"id": "call_1", "type": "function",
            "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Paris\"}"}});
        let body = json!({"messages": [
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]});
        let want = 3
            + count_text(model, "assistant")
            + count_text(model, "get_current_weather")
            + count_text(model, "{\"location\":\"Paris\"}")
            + 1
            + 3
            + count_text(model, "tool")
            + count_text(model, "call_1")
            + count_text(model, "sunny")
            + 3;
        assert_eq!(chat(model, body), want);
    }

    #[test]
    fn chat_content_parts() {
        let image = |detail: Value| json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": detail}});
        let audio =
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}});
        let file = json!({"type": "file", "file": {"file_id": "file-1"}});
        for (model, part, extra) in [
            ("gpt-4o", image(json!("low")), 85),
            ("gpt-4o", image(json!("high")), 765),
            ("gpt-4o", image(Value::Null), 765),
            ("gpt-4o-mini", image(json!("low")), 2833),
            ("gpt-4o-mini", image(json!("auto")), 25501),
            ("gpt-4o", audio, 0),
            ("gpt-4o", file, 0),
        ] {
            let text_only = json!({"messages": [{"role": "user", "content": "describe this"}]});
            let with_part = json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "describe this"}, part]}]});
            assert_eq!(
                chat(model, with_part),
                chat(model, text_only) + extra,
                "{model} {part}"
            );
        }
    }

    #[test]
    fn image_estimates_of_unknown_size_assume_1024_square() {
        for (model, detail, want) in [
            ("gpt-4o", Some("low"), 85),
            ("gpt-4o-2024-08-06", None, 765),
            ("gpt-4.1", Some("high"), 765),
            ("chatgpt-4o-latest", Some("auto"), 765),
            ("gpt-4.5-preview", None, 765),
            ("gpt-4o-mini", Some("low"), 2833),
            ("gpt-4o-mini-2024-07-18", Some("high"), 25501),
            ("ft:gpt-4o-mini-2024-07-18:acme::abc123", None, 25501),
            ("o1", Some("high"), 675),
            ("o3-2025-04-16", Some("low"), 75),
            ("gpt-4.1-mini", None, 1659),
            ("gpt-4.1-nano", None, 2520),
            ("o4-mini", Some("low"), 1762),
            ("gpt-5-mini", None, 1659),
            ("gpt-5-nano-2025-08-07", None, 2520),
            ("some-unknown-model", None, 765),
        ] {
            assert_eq!(
                image_tokens(model, detail, None),
                want,
                "{model} {detail:?}"
            );
            assert_eq!(
                image_tokens(model, detail, Some((1024, 1024))),
                want,
                "{model} {detail:?} 1024x1024"
            );
        }
    }

    #[test]
    fn image_estimates_by_size() {
        for (model, detail, (w, h), want) in [
            // The reference's tile examples.
            ("gpt-4o", Some("high"), (1024, 1024), 765),
            ("gpt-4o", Some("high"), (2048, 4096), 1105),
            ("gpt-4o", Some("high"), (1920, 1080), 1105),
            ("gpt-4o", Some("high"), (128, 64), 85 + 170),
            ("gpt-4o-mini", Some("high"), (128, 64), 8500),
            ("gpt-4o-mini", Some("low"), (128, 64), 2833),
            ("gpt-4o-mini", Some("high"), (1024, 1024), 25501),
            // Low is the base at any size; auto and missing are high.
            ("gpt-4o", Some("low"), (128, 64), 85),
            ("gpt-4o", Some("low"), (8000, 6000), 85),
            ("gpt-4o", Some("auto"), (1920, 1080), 1105),
            ("gpt-4o", None, (1080, 1920), 1105),
            // Tile edges: no upscaling, a short side of exactly 768 is left alone.
            ("gpt-4o", None, (512, 512), 255),
            ("gpt-4o", None, (513, 512), 425),
            ("gpt-4o", None, (768, 768), 765),
            ("gpt-4o", None, (769, 769), 765),
            ("gpt-4o", None, (1536, 768), 1105),
            ("gpt-4o", None, (4096, 8192), 1105),
            // Fitted to 2048×20.48; the short side is then under 768.
            ("gpt-4o", None, (10_000, 100), 85 + 4 * 170),
            ("gpt-4o", None, (0, 0), 85),
            // Other tile families and fallbacks.
            ("gpt-4.1-2025-04-14", None, (1920, 1080), 1105),
            ("some-unknown-model", None, (128, 64), 255),
            ("o1-pro", None, (1920, 1080), 75 + 6 * 150),
            ("o3", Some("low"), (1920, 1080), 75),
            ("computer-use-preview", None, (1024, 1024), 65 + 4 * 129),
            (
                "ft:gpt-4o-mini-2024-07-18:acme::abc123",
                None,
                (128, 64),
                8500,
            ),
            // Patch models: 1800×2400 → 1452 patches in either orientation.
            ("gpt-4.1-mini", None, (1800, 2400), 2353), // 1452 × 1.62 = 2352.24
            ("gpt-4.1-mini", None, (2400, 1800), 2353),
            ("o4-mini", Some("high"), (1800, 2400), 2498), // 1452 × 1.72 = 2497.44
            ("gpt-4.1-nano", None, (64, 64), 10),          // 4 × 2.46 = 9.84
            ("gpt-4.1-nano", Some("low"), (64, 64), 10),   // detail is ignored
            ("gpt-5-nano", None, (33, 1), 5),              // 2 × 2.46 = 4.92
            ("gpt-5-mini", None, (1280, 1200), 2463),      // 40·38 = 1520 × 1.62 = 2462.4
            ("gpt-4.1-mini", None, (4000, 1474), 2348),    // 1449 × 1.62 = 2347.38
            ("gpt-4.1-mini", None, (0, 500), 0),
        ] {
            assert_eq!(
                image_tokens(model, detail, Some((w, h))),
                want,
                "{model} {detail:?} {w}x{h}"
            );
        }
    }

    #[test]
    fn patch_counts() {
        for ((w, h), want) in [
            ((1800, 2400), 1452),
            ((2400, 1800), 1452),
            ((4000, 1474), 1449),
            ((1024, 1024), 1024),
            ((1248, 1248), 1521),
            ((1280, 1280), 1521),
            ((64, 64), 4),
            ((1, 1), 1),
        ] {
            assert_eq!(patch_count(w, h), want, "{w}x{h}");
        }
        // Extreme shapes stay within 1..=1536 patches and 1..=any tiles without panicking.
        for (w, h) in [
            (1, 100_000),
            (100_000, 1),
            (u32::MAX, u32::MAX),
            (u32::MAX, 1),
        ] {
            let patches = patch_count(w, h);
            assert!((1..=1536).contains(&patches), "{w}x{h}: {patches}");
            let tiles = tile_count(w, h);
            assert!((1..=12).contains(&tiles), "{w}x{h}: {tiles}");
        }
    }

    /// A `data:` URL of a PNG header for `width`×`height` followed by garbage.
    fn png_data_url(width: u32, height: u32) -> String {
        use base64::Engine as _;
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        png.extend(width.to_be_bytes());
        png.extend(height.to_be_bytes());
        png.extend((0..200).map(|i| (i * 13 % 256) as u8));
        let payload = base64::engine::general_purpose::STANDARD.encode(png);
        format!("data:image/png;base64,{payload}")
    }

    #[test]
    fn data_url_images_count_by_their_size() {
        let text_only = json!({"messages": [{"role": "user", "content": "describe this"}]});
        let chat_image = |url: &str, detail: Value| {
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "describe this"},
                {"type": "image_url", "image_url": {"url": url, "detail": detail}},
            ]}]})
        };
        let small = png_data_url(300, 200);
        let large = png_data_url(1920, 1080);
        let base = chat("gpt-4o", text_only.clone());
        for (model, url, detail, extra) in [
            ("gpt-4o", small.as_str(), Value::Null, 85 + 170),
            ("gpt-4o", small.as_str(), json!("high"), 85 + 170),
            ("gpt-4o", small.as_str(), json!("low"), 85),
            ("gpt-4o", large.as_str(), json!("auto"), 1105),
            ("gpt-4o", "https://example.com/cat.png", Value::Null, 765),
            (
                "gpt-4o",
                "data:image/png;base64,bm90IGFuIGltYWdl",
                Value::Null,
                765,
            ),
            ("gpt-4o-mini", small.as_str(), Value::Null, 2833 + 5667),
            // 10·7 = 70 patches × 2.46 = 172.2
            ("gpt-4.1-nano", small.as_str(), Value::Null, 173),
        ] {
            let base = if model == "gpt-4o" {
                base
            } else {
                chat(model, text_only.clone())
            };
            assert_eq!(
                chat(model, chat_image(url, detail.clone())),
                base + extra,
                "{model} {detail} {}",
                &url[..url.len().min(40)]
            );
        }

        // A bare string image_url is taken as the URL.
        let bare = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe this"},
            {"type": "image_url", "image_url": small},
        ]}]});
        assert_eq!(chat("gpt-4o", bare), base + 255);

        // Responses: image_url is a plain string; a file_id has no size.
        let responses = |image: Value| {
            let input = json!([{"role": "user", "content": [
                {"type": "input_text", "text": "describe this"}, image]}]);
            count_prompt(Endpoint::Responses, "gpt-4o", &json!({"input": input}))
        };
        let without = count_prompt(
            Endpoint::Responses,
            "gpt-4o",
            &json!({"input": [{"role": "user", "content": [
                {"type": "input_text", "text": "describe this"}]}]}),
        );
        for (image, extra) in [
            (
                json!({"type": "input_image", "image_url": small, "detail": "high"}),
                255,
            ),
            (json!({"type": "input_image", "image_url": large}), 1105),
            (
                json!({"type": "input_image", "image_url": large, "detail": "low"}),
                85,
            ),
            (json!({"type": "input_image", "file_id": "file-1"}), 765),
        ] {
            assert_eq!(responses(image.clone()), without + extra, "{image:.80}");
        }

        // The byte tally neither decodes nor counts image URLs.
        assert_eq!(
            prompt_text_len(Endpoint::ChatCompletions, &chat_image(&large, Value::Null)),
            prompt_text_len(Endpoint::ChatCompletions, &text_only),
        );
    }

    #[test]
    fn text_input_shapes() {
        let model = "text-embedding-3-small";
        let hello = count_text(model, "hello world");
        let bye = count_text(model, "goodbye");
        for (input, want) in [
            (json!("hello world"), hello),
            (json!(["hello world", "goodbye"]), hello + bye),
            (json!([1, 2, 3, 4]), 4),
            (json!([[1, 2, 3], [4, 5]]), 5),
            (json!([]), 0),
            (Value::Null, 0),
            (json!({"not": "valid"}), 0),
        ] {
            let embeddings = json!({"model": model, "input": input});
            assert_eq!(
                count_prompt(Endpoint::Embeddings, model, &embeddings),
                want,
                "{input}"
            );
            let completions = json!({"model": model, "prompt": input});
            assert_eq!(
                count_prompt(Endpoint::Completions, model, &completions),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn responses_string_input_equals_message_item() {
        let model = "gpt-4o";
        let as_string = json!({"instructions": "Be brief.", "input": "What is 2+2?"});
        let as_items = json!({"instructions": "Be brief.", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]},
        ]});
        let short_form = json!({"instructions": "Be brief.", "input": [
            {"role": "user", "content": "What is 2+2?"},
        ]});
        let want = 3
            + count_text(model, "system")
            + count_text(model, "Be brief.")
            + 3
            + count_text(model, "user")
            + count_text(model, "What is 2+2?")
            + 3;
        for body in [as_string, as_items, short_form] {
            assert_eq!(
                count_prompt(Endpoint::Responses, model, &body),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn responses_items_and_tools() {
        let model = "gpt-4o-mini";
        let body = json!({
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What's in this image?"},
                    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
                ]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "42"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "status": "completed", "content": [
                    {"type": "output_text", "text": "It is 42."},
                ]},
            ],
        });
        let want = 3
            + count_text(model, "user")
            + count_text(model, "What's in this image?")
            + 2833
            + count_text(model, "lookup")
            + count_text(model, "{}")
            + 1
            + 3
            + count_text(model, "42")
            + 3
            + count_text(model, "assistant")
            + count_text(model, "It is 42.")
            + 3;
        assert_eq!(count_prompt(Endpoint::Responses, model, &body), want);

        // Responses tools are flat; only function tools are approximated.
        let mut flat = weather_tool();
        flat["type"] = json!("function");
        let with_tools =
            json!({"input": weather_messages(), "tools": [flat, {"type": "web_search"}]});
        let without = json!({"input": weather_messages()});
        let chat_with = json!({"messages": weather_messages(), "tools": [{"type": "function", "function": weather_tool()}]});
        let chat_without = json!({"messages": weather_messages()});
        let tools_cost = |with: &Value, without: &Value, endpoint| {
            count_prompt(endpoint, model, with) - count_prompt(endpoint, model, without)
        };
        assert_eq!(
            tools_cost(&with_tools, &without, Endpoint::Responses),
            tools_cost(&chat_with, &chat_without, Endpoint::ChatCompletions),
        );
    }

    #[test]
    fn malformed_bodies_do_not_panic() {
        let bodies = [
            json!(null),
            json!(42),
            json!("just a string"),
            json!([1, 2, 3]),
            json!({"messages": null}),
            json!({"messages": [null, 1, "x", [], {"role": 5, "content": 7}]}),
            json!({"messages": [{"role": "user", "content": [null, 1, {"type": 3}, {"type": "text", "text": 9}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [null, {"function": 3}, {"function": {"name": 1}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "bare"}]}]}),
            json!({"tools": [null, {"function": null}, {"function": {"parameters": {"properties": {"a": null, "b": {"enum": [1, null, {}]}}}}}]}),
            json!({"functions": {"not": "an array"}}),
            json!({"prompt": [null, {}, [null, "x"], true]}),
            json!({"input": [null, 3, {"type": "function_call", "name": 1}, {"type": "function_call_output", "output": {}}]}),
            json!({"instructions": 5, "input": {"role": "user"}, "tools": [{"type": "function", "parameters": 1}]}),
        ];
        let endpoints = [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::Responses,
        ];
        for body in &bodies {
            for endpoint in endpoints {
                for model in ["gpt-4o", "gpt-4", "gpt-3.5-turbo-0301", "", "ft:"] {
                    let _ = count_prompt(endpoint, model, body);
                }
                let _ = prompt_text_len(endpoint, body);
            }
        }
        // A wrong-typed message still gets its framing: 3 per message plus priming.
        let body = json!({"messages": [{"role": 5, "content": 7}]});
        assert_eq!(chat("gpt-4o", body), 6);
    }

    #[test]
    fn special_token_markers_are_ordinary_text() {
        // Counting with special tokens would give 2 ("<|endoftext|>" as one token).
        for model in ["gpt-4o", "gpt-4"] {
            let n = count_text(model, "<|endoftext|> hello");
            assert!(n > 2, "{model}: {n}");
        }
        let body = json!({"messages": [{"role": "user", "content": "<|endoftext|> hello"}]});
        assert!(chat("gpt-4o", body) > 3 + 1 + 2 + 3);
    }

    #[test]
    fn encodings_by_model_name() {
        use Encoding::{Cl100kBase, O200kBase};
        for (model, want) in [
            ("gpt-4o", O200kBase),
            ("gpt-4o-mini-2024-07-18", O200kBase),
            ("chatgpt-4o-latest", O200kBase),
            ("gpt-4.1-nano", O200kBase),
            ("gpt-5", O200kBase),
            ("o1", O200kBase),
            ("o3-mini", O200kBase),
            ("o4-mini-2025-04-16", O200kBase),
            ("ft:gpt-4o-mini-2024-07-18:acme::abc123", O200kBase),
            ("ft:gpt-4.1-mini-2025-04-14:acme:suffix:abc123", O200kBase),
            ("gpt-oss-120b", O200kBase),
            ("some-unknown-model", O200kBase),
            ("", O200kBase),
            ("gpt-4", Cl100kBase),
            ("gpt-4-turbo", Cl100kBase),
            ("gpt-3.5-turbo", Cl100kBase),
            ("gpt-35-turbo-16k", Cl100kBase),
            ("text-embedding-3-small", Cl100kBase),
            ("text-embedding-ada-002", Cl100kBase),
            ("davinci-002", Cl100kBase),
            ("ft:gpt-3.5-turbo-0125:acme::abc123", Cl100kBase),
        ] {
            assert_eq!(encoding_for_model(model), want, "{model}");
            assert!(std::ptr::eq(bpe_for_model(model), want.bpe()), "{model}");
        }
    }

    /// Every body the other tests count, and a few that stress the bound: non-ASCII
    /// text, special-token markers, long words, images, tools and negative constants.
    #[test]
    fn the_bound_is_never_below_the_count() {
        let hard =
            "Straße 東京 🦊 <|endoftext|> supercalifragilisticexpialidocious 12345678 \n\t  x";
        let bodies = [
            (
                Endpoint::ChatCompletions,
                json!({"messages": cookbook_messages()}),
            ),
            (
                Endpoint::ChatCompletions,
                json!({"messages": weather_messages(), "functions": [weather_tool()]}),
            ),
            (
                Endpoint::ChatCompletions,
                json!({"messages": [{"role": "user", "content": hard}]}),
            ),
            (
                Endpoint::ChatCompletions,
                json!({"messages": [{"role": "user", "content": [
                    {"type": "text", "text": hard},
                    {"type": "image_url", "image_url": {"url": png_data_url(4096, 100), "detail": "high"}},
                ]}]}),
            ),
            (
                Endpoint::ChatCompletions,
                json!({"messages": [], "tools": [{"type": "function", "function": {
                "name": "f", "parameters": {"properties": {"a": {"type": "string", "enum": [1, "x", null]}}}}}]}),
            ),
            (
                Endpoint::Completions,
                json!({"prompt": [hard, [1, 2, 3], 7]}),
            ),
            (Endpoint::Embeddings, json!({"input": hard})),
            (
                Endpoint::Responses,
                json!({"instructions": hard, "input": [
                    {"role": "user", "content": hard},
                    {"type": "function_call", "name": "f", "arguments": "{\"a\":1}"},
                    {"type": "function_call_output", "output": hard},
                ]}),
            ),
            (
                Endpoint::ChatCompletions,
                json!({"messages": "not an array"}),
            ),
        ];
        for model in [
            "gpt-4o-mini",
            "gpt-4",
            "gpt-3.5-turbo-0301",
            "o3",
            "house-model",
        ] {
            for (endpoint, body) in &bodies {
                let count = count_prompt(*endpoint, model, body);
                let bound = prompt_bound(*endpoint, model, body);
                assert!(
                    bound >= count,
                    "{model} {endpoint:?}: bound {bound} < count {count}: {body}"
                );
            }
        }
        // English text is about four bytes a token: the bound is loose, never low.
        let chat = json!({"messages": cookbook_messages()});
        let (count, bound) = (
            count_prompt(Endpoint::ChatCompletions, "gpt-4o", &chat),
            prompt_bound(Endpoint::ChatCompletions, "gpt-4o", &chat),
        );
        assert!(count < bound && bound < 6 * count, "{count} {bound}");
    }

    #[test]
    fn role_names_are_one_token_in_both_encodings() {
        for model in ["gpt-4o", "gpt-4"] {
            for role in ONE_TOKEN_ROLES {
                assert_eq!(count_text(model, role), 1, "{model}: {role}");
            }
        }
    }

    #[test]
    fn prompt_text_len_sums_visited_strings() {
        let body = json!({"messages": [
            {"role": "user", "name": "bob", "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": "https://example.com/huge.png"}},
            ]},
        ]});
        // "user" + "bob" + "hello"; URLs are not tokenized.
        assert_eq!(prompt_text_len(Endpoint::ChatCompletions, &body), 12);
        let ids = json!({"input": [[1, 2, 3], "abc"]});
        assert_eq!(prompt_text_len(Endpoint::Embeddings, &ids), 3);
        let responses = json!({"instructions": "ab", "input": "cd"});
        assert_eq!(
            prompt_text_len(Endpoint::Responses, &responses),
            "system".len() + 2 + "user".len() + 2
        );
    }
}
