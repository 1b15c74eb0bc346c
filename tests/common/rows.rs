//! Ledger rows for tests that write the ledger directly: one baseline row, so a test
//! names only the fields its story is about (`LedgerRow { usage: …, ..row("1") }`).

use tollgate::ledger::{Kind, LedgerRow, Outcome, RowPrice, RowRoute};
use tollgate::metering::{Usage, UsageSource};
use tollgate::pricing::Catalog;

/// A plain, answered, unpriced chat completion of gpt-4o-mini through `openai` by a
/// passthrough caller, at a fixed time: 10 prompt tokens, 1 completion token.
pub fn row(id: &str) -> LedgerRow {
    LedgerRow {
        id: id.to_owned(),
        request_id: format!("req-{id}"),
        upstream_request_id: None,
        ts_ms: 1_700_000_000_000,
        caller: "fp:abc".to_owned(),
        upstream: "openai".to_owned(),
        endpoint: "chat.completions".to_owned(),
        model_requested: Some("gpt-4o-mini".to_owned()),
        model_answered: None,
        service_tier_requested: None,
        service_tier: None,
        streamed: false,
        usage: usage(10, 0, 1),
        usage_source: UsageSource::Upstream,
        status: 200,
        outcome: Outcome::Ok,
        latency_ms: 1,
        ttfb_ms: Some(1),
        price: None,
        key_id: None,
        team_id: None,
        kind: Kind::Realtime,
        route: RowRoute::default(),
        provider: "openai".to_owned(),
        tokenizer: None,
    }
}

/// Usage as the upstream reported it: prompt (cached included) and completion tokens.
pub fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
        ..Usage::default()
    }
}

/// The price the built-in catalog gives `usage` of `answered` (or, without an answered
/// model, `requested`) at standard rates; `None` for a model it does not know.
pub fn priced(answered: Option<&str>, requested: Option<&str>, usage: &Usage) -> Option<RowPrice> {
    Catalog::builtin()
        .price(answered, requested, usage, false)
        .map(|priced| RowPrice {
            cost: priced.cost,
            model: priced.model.to_owned(),
            variant: priced.variant,
            rates: priced.rates,
        })
}
