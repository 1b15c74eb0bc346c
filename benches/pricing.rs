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
        cache_write_tokens: 0,
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
    // At the tier the response named: its sheet, standard, or standard for want of one.
    let mut group = c.benchmark_group("price_served");
    for (case, answered, tier) in [
        ("default", "gpt-5-2025-08-07", "default"),
        ("flex", "gpt-5-2025-08-07", "flex"),
        ("no_sheet", "gpt-5-nano-2025-08-07", "priority"),
    ] {
        group.bench_function(case, |b| {
            b.iter(|| {
                catalog.price_served(
                    black_box(Some(answered)),
                    black_box(Some("gpt-5")),
                    black_box(&usage),
                    black_box(tier),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, price);
criterion_main!(benches);
