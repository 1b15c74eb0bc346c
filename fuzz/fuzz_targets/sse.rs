//! The SSE parser and the stream meter over arbitrary bytes split at arbitrary places:
//! no panic, the events' raw bytes give back the input exactly, and where the splits
//! fall changes nothing.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate::metering::Endpoint;
use tollgate::metering::stream::StreamMeter;
use tollgate::proxy::sse::{SseEvent, SseParser, strip_null_usage};

fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Some(event) = parser.next_event() {
            events.push(event);
        }
    }
    events.extend(parser.finish());
    events
}

fuzz_target!(|input: &[u8]| {
    // The first byte picks the split points: every (seed % 7 + 1)th byte.
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let step = usize::from(seed % 7) + 1;
    let whole = parse(&[stream]);
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    let split = parse(&chunks);
    assert_eq!(
        whole, split,
        "splitting every {step} bytes changed the events"
    );
    let raw: Vec<u8> = whole.iter().flat_map(|e| e.raw.to_vec()).collect();
    assert_eq!(raw, stream, "raw bytes must reproduce the stream");
    for endpoint in [Endpoint::ChatCompletions, Endpoint::Responses] {
        let mut meter = StreamMeter::new(endpoint);
        for event in &whole {
            if let Some(data) = &event.data {
                meter.observe(data);
            }
            let stripped = strip_null_usage(&Bytes::clone(&event.raw));
            assert!(stripped.len() <= event.raw.len());
        }
        let _ = (meter.usage(), meter.model(), meter.finished());
        let _ = meter.generated_text();
    }
});
