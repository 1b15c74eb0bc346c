//! The request-body token estimator (what admission counts before forwarding) over any
//! JSON, for every metered endpoint and each tokenizer family and image rule: no panic
//! and no overflow (the fuzz build keeps overflow checks on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::metering::{Endpoint, tokens};

const MODELS: [&str; 4] = ["gpt-4o-mini", "gpt-4", "gpt-4.1-mini", "ft:gpt-4o:org::x"];

fuzz_target!(|input: &[u8]| {
    let Some((&pick, body)) = input.split_first() else {
        return;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let endpoint = match pick % 4 {
        0 => Endpoint::ChatCompletions,
        1 => Endpoint::Completions,
        2 => Endpoint::Embeddings,
        _ => Endpoint::Responses,
    };
    let model = MODELS[usize::from(pick / 4) % MODELS.len()];
    let _ = tokens::count_prompt(endpoint, model, &json);
    let _ = tokens::prompt_text_len(endpoint, &json);
});
