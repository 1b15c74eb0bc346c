//! Choosing the upstream for a model: ten upstreams of two hundred patterns each
//! (literal names, `prefix*` families and a few other globs), against one upstream with
//! a catch-all. Each figure is one `Upstreams::position` call.
//!
//! - `upstream_match/one_catch_all`: the single-upstream baseline.
//! - `upstream_match/10x200_first`: a model the first upstream's prefix matches.
//! - `upstream_match/10x200_last`: a literal listed by the last upstream.
//! - `upstream_match/10x200_miss`: a model nothing matches (every check runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::config::UpstreamConfig;
use tollgate::proxy::upstream::Upstreams;

fn many() -> Upstreams {
    let configs: Vec<UpstreamConfig> = (0..10)
        .map(|u| UpstreamConfig {
            name: format!("up{u}"),
            base_url: format!("http://up{u}.test/v1"),
            models: (0..200)
                .map(|p| match p % 10 {
                    0 => format!("fam{u}-{p}-*"),
                    1 => format!("fam{u}-{p}-?x"),
                    _ => format!("model-{u}-{p}"),
                })
                .collect(),
            ..UpstreamConfig::default()
        })
        .collect();
    Upstreams::new(&configs, &HashMap::new()).unwrap()
}

fn bench(c: &mut Criterion) {
    let one = Upstreams::new(&[UpstreamConfig::default()], &HashMap::new()).unwrap();
    let many = many();
    assert_eq!(many.position(Some("fam0-0-anything")), Some(0));
    assert_eq!(many.position(Some("model-9-199")), Some(9));
    assert_eq!(many.position(Some("nothing-here")), None);
    let mut group = c.benchmark_group("upstream_match");
    group.bench_function("one_catch_all", |b| {
        b.iter(|| one.position(black_box(Some("gpt-4o-mini"))));
    });
    for (name, model) in [
        ("10x200_first", "fam0-0-anything"),
        ("10x200_last", "model-9-199"),
        ("10x200_miss", "nothing-here-at-all"),
    ] {
        group.bench_function(name, |b| b.iter(|| many.position(black_box(Some(model)))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
