//! Metering one streamed chat completion as the relay does: 200 content chunks as
//! OpenAI writes them (`service_tier` and `"usage":null` on each), a usage chunk and
//! `[DONE]`, through a fresh `StreamMeter`. Content chunks take the deferred path (byte
//! scans for usage, errors and the service tier; no parse), so this is the per-chunk
//! cost every streamed token pays.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::metering::Endpoint;
use tollgate::metering::stream::StreamMeter;

fn chunks() -> Vec<String> {
    let head = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732000000,"model":"gpt-5-mini-2025-08-07","service_tier":"default","system_fingerprint":"fp_1","choices":"#;
    let mut chunks: Vec<String> = (0..200)
        .map(|i| {
            let delta = if i == 0 {
                r#"{"role":"assistant","content":"The"}"#.to_owned()
            } else {
                format!(r#"{{"content":" word{i}"}}"#)
            };
            format!(
                r#"{head}[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
            )
        })
        .collect();
    chunks.push(format!(
        r#"{head}[],"usage":{{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}}}"#
    ));
    chunks.push("[DONE]".to_owned());
    chunks
}

fn meter(c: &mut Criterion) {
    let chunks = chunks();
    c.bench_function("stream_meter/chat_202_chunks", |b| {
        b.iter(|| {
            let mut meter = StreamMeter::new(Endpoint::ChatCompletions);
            for chunk in &chunks {
                black_box(meter.observe(black_box(chunk.as_bytes())));
            }
            black_box(meter.service_tier().map(str::len))
        })
    });
}

criterion_group!(benches, meter);
criterion_main!(benches);
