//! Resolve + price one request, as the proxy does once per metered response: by an exact
//! catalog name, by a dated snapshot (family fallback), and by a fine-tuned `ft:` name.
//! The hot path only borrows from the catalog, so these measure lookups and arithmetic.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::metering::Usage;
use tollgate::pricing::Catalog;

fn price(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let usage = Usage {
        prompt_tokens: 2_006,
        cached_tokens: 1_920,
        completion_tokens: 300,
        reasoning_tokens: 0,
    };
    let mut group = c.benchmark_group("price");
    for (case, answered) in [
        ("exact", "gpt-4o-mini"),
        ("snapshot", "gpt-4o-mini-2024-07-18"),
        (
            "fine_tuned",
            "ft:gpt-4.1-nano-2025-04-14:acme:x:id:ckpt-step-88",
        ),
    ] {
        group.bench_function(case, |b| {
            b.iter(|| {
                catalog.price(
                    black_box(Some(answered)),
                    black_box(Some("gpt-4o-mini")),
                    black_box(&usage),
                    black_box(false),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, price);
criterion_main!(benches);
