//! The usage extractor over arbitrary bytes, as a whole body, as the tail of one too big
//! to keep, and as stream events of every metered endpoint: no panic, and details never
//! exceed their parent (cached ⊆ prompt, reasoning ⊆ completion).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::metering::stream::StreamMeter;
use tollgate::metering::{Endpoint, Usage, usage};

fn check(usage: Option<Usage>) {
    if let Some(usage) = usage {
        assert!(usage.cached_tokens <= usage.prompt_tokens, "{usage:?}");
        assert!(
            usage.reasoning_tokens <= usage.completion_tokens,
            "{usage:?}"
        );
    }
}

fuzz_target!(|body: &[u8]| {
    check(usage::from_body(body).usage);
    check(usage::from_tail(body).usage);
    let _ = usage::generated_text(body);
    for endpoint in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
    ] {
        let mut meter = StreamMeter::new(endpoint);
        // Each line is one event's data, as the relay hands them over.
        for data in body.split(|&b| b == b'\n') {
            meter.observe(data);
        }
        check(meter.usage());
        let _ = meter.generated_text();
    }
});
