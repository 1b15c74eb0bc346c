//! Migrating a ledger from before service tiers (migration 4) to migration 5, on
//! SQLite and Postgres: the rollups carry over exactly, and stay equal to the rows as
//! tiered rows arrive and a reprice moves figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::db::{backends, direct_totals};
use common::rows::usage;
use tollgate::ledger::{Kind, LedgerRow};

/// A realtime row of key `key-{id % 3}` in team-a: 10 prompt tokens and `id` completion
/// tokens of gpt-4o-mini, unpriced until a test prices it.
fn row(id: usize) -> LedgerRow {
    LedgerRow {
        ts_ms: 1_700_000_000_000 + i64::try_from(id).unwrap(),
        usage: usage(10, 0, u64::try_from(id).unwrap()),
        key_id: Some(format!("key-{}", id % 3)),
        team_id: Some("team-a".to_owned()),
        ..common::rows::row(&format!("row-{id}"))
    }
}

/// Inserts `rows` with the columns a ledger had before migration 0005 (no tiers).
async fn insert_before_tiers(pool: &OldPool, rows: &[LedgerRow]) {
    let sql = "INSERT INTO requests (id, request_id, upstream_request_id, ts_ms, caller, \
        upstream, endpoint, model_requested, model_answered, streamed, prompt_tokens, \
        cached_tokens, completion_tokens, reasoning_tokens, usage_source, status, outcome, \
        latency_ms, ttfb_ms, cost_pico, priced_model, price_variant, input_rate, \
        cached_input_rate, output_rate, key_id, team_id, kind) ";
    macro_rules! insert {
        ($pool:expr, $db:ty) => {{
            let mut query: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(sql);
            query.push_values(rows, |mut b, row| {
                let i = |n: u64| i64::try_from(n).unwrap();
                let price = row.price.as_ref();
                let rate = |r: tollgate::pricing::Rate| i(r.micros_per_million());
                b.push_bind(row.id.clone())
                    .push_bind(row.request_id.clone())
                    .push_bind(row.upstream_request_id.clone())
                    .push_bind(row.ts_ms)
                    .push_bind(row.caller.clone())
                    .push_bind(row.upstream.clone())
                    .push_bind(row.endpoint.clone())
                    .push_bind(row.model_requested.clone())
                    .push_bind(row.model_answered.clone())
                    .push_bind(row.streamed)
                    .push_bind(i(row.usage.prompt_tokens))
                    .push_bind(i(row.usage.cached_tokens))
                    .push_bind(i(row.usage.completion_tokens))
                    .push_bind(i(row.usage.reasoning_tokens))
                    .push_bind(row.usage_source.as_str())
                    .push_bind(i64::from(row.status))
                    .push_bind(row.outcome.as_str())
                    .push_bind(i(row.latency_ms))
                    .push_bind(row.ttfb_ms.map(i))
                    .push_bind(price.map(|p| i64::try_from(p.cost.as_pico()).unwrap()))
                    .push_bind(price.map(|p| p.model.clone()))
                    .push_bind(price.map(|p| p.variant.as_str()))
                    .push_bind(price.map(|p| rate(p.rates.input)))
                    .push_bind(price.map(|p| rate(p.rates.cached_input)))
                    .push_bind(price.map(|p| rate(p.rates.output)))
                    .push_bind(row.key_id.clone())
                    .push_bind(row.team_id.clone())
                    .push_bind(row.kind.as_str());
            });
            query.build().execute($pool).await.unwrap();
        }};
    }
    match pool {
        OldPool::Sqlite(pool) => insert!(pool, sqlx::Sqlite),
        OldPool::Postgres(pool) => insert!(pool, sqlx::Postgres),
    }
}

/// A ledger's pool before tollgate opened it as a `Store`.
enum OldPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The database at `url` with migrations 1 to 4 applied, as a ledger from before
/// service tiers was.
async fn ledger_before_tiers(url: &str) -> OldPool {
    use std::str::FromStr as _;
    let backend = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let all = sqlx::migrate::Migrator::new(std::path::Path::new(&format!("migrations/{backend}")))
        .await
        .unwrap();
    let old: Vec<_> = all.iter().filter(|m| m.version <= 4).cloned().collect();
    assert_eq!(old.len(), 4);
    let migrator = sqlx::migrate::Migrator::with_migrations(old);
    if backend == "sqlite" {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        migrator.run(&pool).await.unwrap();
        OldPool::Sqlite(pool)
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        migrator.run(&pool).await.unwrap();
        OldPool::Postgres(pool)
    }
}

#[tokio::test]
async fn migrating_to_service_tiers_carries_the_rollups_over_exactly() {
    use tollgate::ledger::RowPrice;
    use tollgate::ledger::report::{SpendLine, reprice};
    use tollgate::ledger::rollup::{NO_TIER, RollupFilter, RollupGroup, rollup_spend};
    use tollgate::pricing::Catalog;

    const HOUR: i64 = 3_600_000;
    const BASE: i64 = 1_700_000_000_000;
    let totals = |lines: &[SpendLine]| {
        lines.iter().fold((0, 0, 0, 0, 0), |t, l| {
            (
                t.0 + l.requests,
                t.1 + l.prompt_tokens,
                t.2 + l.completion_tokens,
                t.3 + l.cost_usd.as_pico(),
                t.4 + l.unpriced_requests,
            )
        })
    };
    let price = |catalog: &Catalog, row: &LedgerRow| {
        let tier = row.service_tier.as_deref().unwrap_or("default");
        let model = row.model_requested.as_deref();
        catalog
            .price_served(None, model, &row.usage, tier)
            .map(|priced| RowPrice {
                cost: priced.cost,
                model: priced.model.to_owned(),
                variant: priced.variant,
                rates: priced.rates,
            })
    };
    let groups = [
        RollupGroup::All,
        RollupGroup::Hour,
        RollupGroup::Day,
        RollupGroup::Team,
        RollupGroup::Key,
        RollupGroup::Model,
        RollupGroup::Kind,
        RollupGroup::Tier,
    ];
    for backend in backends().await {
        let on = backend.name;
        let mut catalog = Catalog::builtin();
        // 120 rows over two days and a bit, before tiers: priced, unpriced, batch.
        let old: Vec<LedgerRow> = (0..120)
            .map(|i| {
                let mut row = row(i);
                row.ts_ms = BASE + i64::try_from(i).unwrap() * 1_700_000;
                row.team_id = Some(format!("team-{}", i % 2));
                row.kind = if i % 7 == 0 {
                    Kind::Batch
                } else {
                    Kind::Realtime
                };
                let model = if i % 5 == 0 {
                    "later-priced"
                } else {
                    "gpt-5-mini"
                };
                row.model_requested = Some(model.to_owned());
                row.price = price(&catalog, &row);
                row
            })
            .collect();
        let pool = ledger_before_tiers(&backend.url).await;
        insert_before_tiers(&pool, &old).await;
        match pool {
            OldPool::Sqlite(pool) => pool.close().await,
            OldPool::Postgres(pool) => pool.close().await,
        }
        let store = backend.open().await;
        let everything = RollupFilter::default();
        let want = direct_totals(&store, None, None, None).await;
        assert_eq!(want.0, 120, "{on}");
        for group in groups {
            let lines = rollup_spend(&store, group, &everything).await.unwrap();
            assert_eq!(totals(&lines), want, "{on}: carried over, by {group:?}");
        }
        let by_tier = rollup_spend(&store, RollupGroup::Tier, &everything)
            .await
            .unwrap();
        assert_eq!(by_tier.len(), 1, "{on}: {by_tier:?}");
        assert_eq!(
            by_tier[0].group, NO_TIER,
            "{on}: rows from before tiers have none"
        );

        // New rows land in the same hours, at three tiers; then the model that had no
        // price gets one and a reprice moves both old and new rows' figures.
        let new: Vec<LedgerRow> = (0..60)
            .map(|i| {
                let mut row = row(1_000 + i);
                row.ts_ms = BASE + HOUR * i64::try_from(i % 40).unwrap();
                row.team_id = Some(format!("team-{}", i % 2));
                row.service_tier = Some(["default", "flex", "priority"][i % 3].to_owned());
                let model = if i % 4 == 0 {
                    "later-priced"
                } else {
                    "gpt-5-mini"
                };
                row.model_requested = Some(model.to_owned());
                row.price = price(&catalog, &row);
                row
            })
            .collect();
        store.insert(&new).await.unwrap();
        catalog = catalog
            .merge(
                &toml::from_str(
                    "[models.\"later-priced\"]\ninput = \"1\"\noutput = \"2\"\n\
                     [models.\"later-priced\".flex]\ninput = \"0.5\"\noutput = \"1\"\n",
                )
                .unwrap(),
                "test",
            )
            .unwrap();
        let done = reprice(&store, &catalog, "later-priced", 0).await.unwrap();
        assert_eq!((done.priced, done.still_unpriced), (24 + 15, 0), "{on}");
        let want = direct_totals(&store, None, None, None).await;
        assert_eq!((want.0, want.4), (180, 0), "{on}");
        for group in groups {
            let lines = rollup_spend(&store, group, &everything).await.unwrap();
            assert_eq!(totals(&lines), want, "{on}: after new rows, by {group:?}");
        }
        for (from, to) in [
            (Some(BASE + 5 * HOUR), Some(BASE + 30 * HOUR)),
            (None, Some(BASE + HOUR)),
        ] {
            let filter = RollupFilter {
                from_ms: from,
                to_ms: to,
                ..RollupFilter::default()
            };
            let floor = |ms: i64| ms - ms.rem_euclid(HOUR);
            let want = direct_totals(
                &store,
                from.map(floor),
                to.map(|ms| floor(ms + HOUR - 1)),
                None,
            )
            .await;
            for group in groups {
                let lines = rollup_spend(&store, group, &filter).await.unwrap();
                assert_eq!(totals(&lines), want, "{on}: {from:?}..{to:?} by {group:?}");
            }
        }
        // The tier lines are each tier's rows: a later-priced flex row was repriced at
        // its flex sheet (10 × 0.5 + i × 1 per 1M), a batch row at batch rates.
        let by_tier: BTreeMap<String, SpendLine> =
            rollup_spend(&store, RollupGroup::Tier, &everything)
                .await
                .unwrap()
                .into_iter()
                .map(|l| (l.group.clone(), l))
                .collect();
        assert_eq!(
            by_tier.keys().map(String::as_str).collect::<Vec<_>>(),
            [NO_TIER, "default", "flex", "priority"],
            "{on}"
        );
        assert_eq!(by_tier[NO_TIER].requests, 120, "{on}");
        assert_eq!(by_tier["flex"].requests, 20, "{on}");
        let sql = "SELECT price_variant, cost_pico FROM requests WHERE id = 'row-1004'";
        let repriced: (String, i64) = match &store {
            tollgate::ledger::Store::Sqlite(l) => sqlx::query_as(sql).fetch_one(l.pool()).await,
            tollgate::ledger::Store::Postgres(l) => sqlx::query_as(sql).fetch_one(l.pool()).await,
        }
        .unwrap();
        // row(1004): 10 prompt and 1004 completion tokens, at flex (i = 4, 4 % 3 = 1).
        assert_eq!(
            repriced,
            ("flex".to_owned(), 10 * 500_000 + 1_004 * 1_000_000),
            "{on}"
        );
        let batch = "SELECT price_variant FROM requests WHERE id = 'row-0'";
        let variant: (String,) = match &store {
            tollgate::ledger::Store::Sqlite(l) => sqlx::query_as(batch).fetch_one(l.pool()).await,
            tollgate::ledger::Store::Postgres(l) => sqlx::query_as(batch).fetch_one(l.pool()).await,
        }
        .unwrap();
        assert_eq!(
            variant.0, "batch",
            "{on}: batch rows reprice at batch rates"
        );
    }
}
