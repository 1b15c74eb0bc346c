//! The background writer against real databases (SQLite, and Postgres when
//! TOLLGATE_TEST_POSTGRES_URL is set): every row begun is stored once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::db::{backends, count_and_completion, direct_totals};
use common::rows::usage;
use tollgate::config::{LedgerConfig, WriterPriority};
use tollgate::ledger::{Kind, LedgerRow, LedgerWriter, Store};

fn row(id: usize) -> LedgerRow {
    LedgerRow {
        ts_ms: 1_700_000_000_000 + i64::try_from(id).unwrap(),
        usage: usage(10, 0, u64::try_from(id).unwrap()),
        key_id: Some(format!("key-{}", id % 3)),
        team_id: Some("team-a".to_owned()),
        ..common::rows::row(&format!("row-{id}"))
    }
}

/// A writer over `store` with `config` and a spill directory of its own, which lives as
/// long as the returned guard.
fn spawn_writer(store: &Store, config: LedgerConfig) -> (LedgerWriter, tempfile::TempDir) {
    let spill = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        spill_dir: spill.path().to_owned(),
        ..config
    };
    let (writer, _task) = LedgerWriter::spawn(store.clone(), &config).unwrap();
    (writer, spill)
}

#[tokio::test]
async fn concurrent_rows_are_all_stored_once_and_replays_are_ignored_in_rows_and_rollups() {
    for backend in backends().await {
        let store = backend.open().await;
        let config = LedgerConfig {
            batch_size: 64,
            ..LedgerConfig::default()
        };
        let (writer, _spill) = spawn_writer(&store, config);

        let mut tasks = Vec::new();
        for worker in 0..10 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100 {
                    writer.begin().record(row(worker * 100 + i)).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // The same ids again, as a replay would send them, with a new row among every
        // five: batches that mix ids the ledger holds with new ones.
        for i in 0..100 {
            writer.begin().record(row(i)).await;
            if i % 5 == 0 {
                writer.begin().record(row(1000 + i / 5)).await;
            }
        }
        writer.flush().await;

        let (count, completion) = count_and_completion(&store).await;
        assert_eq!(count, 1020, "{}", backend.name);
        assert_eq!(completion, (0..1020).sum::<i64>(), "{}", backend.name);
        // The rollups, which reports and budgets read, count each row once too.
        use tollgate::ledger::rollup::{RollupFilter, RollupGroup, rollup_spend};
        let all = rollup_spend(&store, RollupGroup::All, &RollupFilter::default())
            .await
            .unwrap();
        let requests: u64 = all.iter().map(|line| line.requests).sum();
        let completion_tokens: u64 = all.iter().map(|line| line.completion_tokens).sum();
        assert_eq!(
            (requests, completion_tokens),
            (1020, (0..1020).sum::<u64>()),
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn flush_waits_for_rows_begun_but_not_yet_recorded() {
    for backend in backends().await {
        let store = backend.open().await;
        let (writer, _spill) = spawn_writer(&store, LedgerConfig::default());

        let pending = writer.begin();
        let flush = tokio::spawn({
            let writer = writer.clone();
            async move { writer.flush().await }
        });
        tokio::task::yield_now().await;
        assert!(!flush.is_finished(), "a begun row holds the flush");
        pending.record(row(1)).await;
        flush.await.unwrap();

        assert_eq!(count_and_completion(&store).await.0, 1, "{}", backend.name);
    }
}

/// Either priority, with batches that keep up (64) or come out full (1, the shared
/// pool's path even under `background`), stores every row once; under `background`
/// with SQLite on Linux, the writer's own connection runs on a thread at nice 19.
#[tokio::test]
async fn every_writer_priority_stores_every_row_and_background_lowers_its_thread() {
    for priority in [WriterPriority::Background, WriterPriority::Normal] {
        for batch_size in [64, 1] {
            for backend in backends().await {
                let store = backend.open().await;
                let config = LedgerConfig {
                    batch_size,
                    writer_priority: priority,
                    ..LedgerConfig::default()
                };
                let (writer, _spill) = spawn_writer(&store, config);
                for i in 0..50 {
                    writer.begin().record(row(i)).await;
                }
                writer.flush().await;

                let what = format!("{} {priority:?} batch {batch_size}", backend.name);
                let (count, completion) = count_and_completion(&store).await;
                assert_eq!((count, completion), (50, (0..50).sum()), "{what}");
                #[cfg(target_os = "linux")]
                if backend.name == "sqlite"
                    && priority == WriterPriority::Background
                    && batch_size == 64
                {
                    // The writer still holds its connection, so its thread is alive.
                    let writers = threads_named("tollgate-ledger");
                    assert!(!writers.is_empty(), "{what}: no writer thread");
                    assert!(
                        writers.iter().all(|&nice| nice == 19),
                        "{what}: {writers:?}"
                    );
                }
            }
        }
    }
}

/// The nice values of this process's threads called `name`.
#[cfg(target_os = "linux")]
fn threads_named(name: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // ended meanwhile
        };
        if comm.trim_end() == name {
            // Field 19 of stat; the name, field 2, is in parentheses and may hold spaces.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            nice.push(after_name.split(' ').nth(16).unwrap().parse().unwrap());
        }
    }
    nice
}

#[tokio::test]
async fn spend_and_reprice_agree_on_both_backends() {
    use tollgate::ledger::RowPrice;
    use tollgate::ledger::report::{self, Group};
    use tollgate::pricing::Catalog;

    let catalog: Catalog = Catalog::builtin()
        .merge(
            &toml::from_str("[models.\"mystery\"]\ninput = \"1\"\noutput = \"2\"\n").unwrap(),
            "test",
        )
        .unwrap();
    for backend in backends().await {
        let store = backend.open().await;
        let (writer, _spill) = spawn_writer(&store, LedgerConfig::default());
        for (i, model) in ["gpt-4o-mini", "gpt-4o-mini", "mystery"].iter().enumerate() {
            let mut row = row(i);
            row.model_requested = Some((*model).to_owned());
            row.usage.completion_tokens = 200;
            row.usage.prompt_tokens = 1_000;
            // Rows of gpt-4o-mini are priced as recorded; "mystery" was not yet priced.
            row.price = (*model != "mystery").then(|| {
                let priced = catalog.price(None, Some(model), &row.usage, false).unwrap();
                RowPrice {
                    cost: priced.cost,
                    model: priced.model.to_owned(),
                    variant: priced.variant,
                    rates: priced.rates,
                }
            });
            writer.begin().record(row).await;
        }
        writer.flush().await;

        let nano = report::what_if_rates(&catalog, "gpt-4.1-nano");
        let lines = report::spend(&store, 0, Group::Model, nano).await.unwrap();
        let mini = lines.iter().find(|l| l.group == "gpt-4o-mini").unwrap();
        assert_eq!(
            mini.cost_usd.to_decimal_string(),
            "0.00054",
            "{}",
            backend.name
        );
        assert_eq!(
            mini.what_if_usd.unwrap().to_decimal_string(),
            "0.00036",
            "{}",
            backend.name
        );
        let mystery = lines.iter().find(|l| l.group == "mystery").unwrap();
        assert_eq!(
            (mystery.unpriced_requests, mystery.unpriced_tokens),
            (1, 1_200),
            "{}",
            backend.name
        );
        let days = report::spend(&store, 0, Group::Day, None).await.unwrap();
        assert_eq!(days.len(), 1, "{}: {days:?}", backend.name);

        let done = report::reprice(&store, &catalog, "mystery", 0)
            .await
            .unwrap();
        assert_eq!(
            (done.priced, done.still_unpriced),
            (1, 0),
            "{}",
            backend.name
        );
        let again = report::reprice(&store, &catalog, "mystery", 0)
            .await
            .unwrap();
        assert_eq!(
            again.priced, 0,
            "{}: a reprice never counts twice",
            backend.name
        );
        let lines = report::spend(&store, 0, Group::Model, None).await.unwrap();
        let mystery = lines.iter().find(|l| l.group == "mystery").unwrap();
        // 1,000 x $1 + 200 x $2 per 1M = $0.0014.
        assert_eq!(
            mystery.cost_usd.to_decimal_string(),
            "0.0014",
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn daily_and_hourly_rollups_agree_with_the_rows_over_any_range() {
    use tollgate::ledger::RowPrice;
    use tollgate::ledger::report::SpendLine;
    use tollgate::ledger::rollup::{RollupFilter, RollupGroup, rollup_spend, rollup_spend_nested};
    use tollgate::pricing::Catalog;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    // 22:13:20 UTC: neither rows nor ranges start on a whole hour or day.
    const BASE: i64 = 1_700_000_000_000;
    let catalog: Catalog = Catalog::builtin()
        .merge(
            &toml::from_str("[models.\"mystery\"]\ninput = \"1\"\noutput = \"2\"\n").unwrap(),
            "test",
        )
        .unwrap();
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
    let floor_hour = |ms: i64| ms - ms.rem_euclid(HOUR);
    let ceil_hour = |ms: i64| floor_hour(ms + HOUR - 1);
    let ranges = [
        (None, None),
        (
            Some(BASE + 5 * HOUR + 17 * 60_000),
            Some(BASE + 2 * DAY + 3 * HOUR),
        ),
        (Some(floor_hour(BASE) - 22 * HOUR + DAY), None),
        (None, Some(BASE + DAY)),
        (Some(BASE + HOUR), Some(BASE + 2 * HOUR + 1)),
        (Some(BASE + 3 * DAY), Some(BASE + 3 * DAY)),
    ];
    for backend in backends().await {
        let store = backend.open().await;
        let (writer, _spill) = spawn_writer(&store, LedgerConfig::default());
        // 200 rows 21m40s apart: three days and a bit, two teams, two kinds, priced
        // and (for "mystery", until the reprice) unpriced.
        for i in 0..200 {
            let mut row = row(i);
            row.ts_ms = BASE + i64::try_from(i).unwrap() * 1_300_000;
            row.team_id = Some(format!("team-{}", i % 2));
            row.kind = if i % 5 == 0 {
                Kind::Batch
            } else {
                Kind::Realtime
            };
            let model = if i % 4 == 0 { "mystery" } else { "gpt-4o-mini" };
            row.model_requested = Some(model.to_owned());
            // Realtime rows served at three tiers (priced at each one's sheet, or at
            // standard where gpt-4o-mini has none); batch rows have no tier.
            row.service_tier = (row.kind == Kind::Realtime)
                .then(|| ["default", "flex", "priority"][i % 3].to_owned());
            let served = row
                .service_tier
                .clone()
                .unwrap_or_else(|| "default".to_owned());
            row.price = (model != "mystery").then(|| {
                let priced = catalog
                    .price_served(None, Some(model), &row.usage, &served)
                    .unwrap();
                RowPrice {
                    cost: priced.cost,
                    model: priced.model.to_owned(),
                    variant: priced.variant,
                    rates: priced.rates,
                }
            });
            writer.begin().record(row).await;
        }
        writer.flush().await;

        for repriced in [false, true] {
            if repriced {
                // Updates move figures between rollup rows in both tables.
                let done = tollgate::ledger::report::reprice(&store, &catalog, "mystery", 0)
                    .await
                    .unwrap();
                assert_eq!(done.priced, 50, "{}", backend.name);
            }
            for (from, to) in ranges {
                for team in [None, Some("team-1")] {
                    let filter = RollupFilter {
                        from_ms: from,
                        to_ms: to,
                        team_id: team.map(str::to_owned),
                        ..RollupFilter::default()
                    };
                    let want =
                        direct_totals(&store, from.map(floor_hour), to.map(ceil_hour), team).await;
                    let case = format!(
                        "{} from {from:?} to {to:?} team {team:?} repriced {repriced}",
                        backend.name
                    );
                    for group in [
                        RollupGroup::All,
                        RollupGroup::Day,
                        RollupGroup::Hour,
                        RollupGroup::Team,
                        RollupGroup::Kind,
                        RollupGroup::Tier,
                    ] {
                        let lines = rollup_spend(&store, group, &filter).await.unwrap();
                        assert_eq!(totals(&lines), want, "{case} by {group:?}");
                    }
                    // Two levels (the dashboard's team-per-bucket series) split the
                    // same totals, and each outer group's lines add up to its total.
                    for (outer, inner) in [
                        (RollupGroup::Team, RollupGroup::Day),
                        (RollupGroup::Team, RollupGroup::Hour),
                        (RollupGroup::Kind, RollupGroup::Team),
                        (RollupGroup::Tier, RollupGroup::Day),
                        (RollupGroup::Team, RollupGroup::Tier),
                    ] {
                        let nested = rollup_spend_nested(&store, outer, inner, &filter)
                            .await
                            .unwrap();
                        let lines: Vec<SpendLine> = nested.iter().map(|n| n.line.clone()).collect();
                        let by = format!("{case} by {outer:?} then {inner:?}");
                        assert_eq!(totals(&lines), want, "{by}");
                        for single in rollup_spend(&store, outer, &filter).await.unwrap() {
                            let parts: Vec<SpendLine> = lines
                                .iter()
                                .filter(|l| l.group == single.group)
                                .cloned()
                                .collect();
                            assert_eq!(totals(&parts), totals(&[single]), "{by}");
                        }
                        let mut pairs: Vec<_> =
                            nested.iter().map(|n| (&n.line.group, &n.inner)).collect();
                        let count = pairs.len();
                        pairs.dedup();
                        assert_eq!(pairs.len(), count, "{by}: one line per pair, in order");
                    }
                }
            }
        }
    }
}

/// Every rollup row, key columns and figures, as the table holds it (the figures as an
/// array: tuples past twelve fields have no `PartialEq` or `Debug` to compare them by).
type RollupRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    [i64; 8],
);

/// Both rollup tables, and what grouping `requests` directly gives for each: the
/// definition the triggers (Postgres, and a reprice's on SQLite) and SQLite's per-batch
/// upsert must both meet, column for column.
async fn rollups_and_their_definition(store: &Store) -> Vec<(Vec<RollupRow>, Vec<RollupRow>)> {
    let figures = "requests, prompt_tokens, cached_tokens, completion_tokens, \
                   reasoning_tokens, cost_pico, unpriced, unpriced_tokens";
    let mut pairs = Vec::new();
    for (table, bucket, span) in [
        ("spend_hourly", "hour_ms", 3_600_000),
        ("spend_daily", "day_ms", 86_400_000),
    ] {
        let casts = figures
            .split(", ")
            .map(|c| format!("CAST({c} AS BIGINT)"))
            .collect::<Vec<_>>()
            .join(", ");
        let stored = format!(
            "SELECT {bucket}, team_id, key_id, model, kind, service_tier, provider, {casts} \
             FROM {table} WHERE requests <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        );
        let defined = format!(
            "SELECT ts_ms - ts_ms % {span}, coalesce(team_id, ''), coalesce(key_id, caller), \
             coalesce(priced_model, model_answered, model_requested, ''), kind, \
             coalesce(service_tier, ''), coalesce(provider, 'openai'), CAST(count(*) AS BIGINT), \
             CAST(sum(prompt_tokens) AS BIGINT), CAST(sum(cached_tokens) AS BIGINT), \
             CAST(sum(completion_tokens) AS BIGINT), CAST(sum(reasoning_tokens) AS BIGINT), \
             CAST(sum(coalesce(cost_pico, 0)) AS BIGINT), \
             CAST(sum(CASE WHEN cost_pico IS NULL THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens \
                      ELSE 0 END) AS BIGINT) \
             FROM requests GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        );
        let mut both = Vec::new();
        for sql in [stored, defined] {
            type Raw = (
                i64,
                String,
                String,
                String,
                String,
                String,
                String,
                i64,
                i64,
                i64,
                i64,
                i64,
                i64,
                i64,
                i64,
            );
            let raw: Vec<Raw> = match store {
                Store::Sqlite(ledger) => sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(ledger.pool())
                    .await
                    .unwrap(),
                Store::Postgres(ledger) => sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(ledger.pool())
                    .await
                    .unwrap(),
            };
            both.push(
                raw.into_iter()
                    .map(|r| {
                        (
                            r.0,
                            r.1,
                            r.2,
                            r.3,
                            r.4,
                            r.5,
                            r.6,
                            [r.7, r.8, r.9, r.10, r.11, r.12, r.13, r.14],
                        )
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let defined = both.pop().unwrap();
        pairs.push((both.pop().unwrap(), defined));
    }
    pairs
}

#[tokio::test]
async fn the_rollup_tables_are_exactly_a_grouping_of_the_rows() {
    use tollgate::ledger::RowPrice;
    use tollgate::pricing::Catalog;
    let catalog = Catalog::builtin();
    // Rows that vary every grouping column and figure: team or none, key or caller only,
    // priced or not, answered model or not, three kinds, a tier or none, two providers,
    // cached and reasoning tokens, over two days.
    let varied = |i: usize| {
        let mut row = row(i);
        row.ts_ms = 1_700_000_000_000 + i64::try_from(i).unwrap() * 700_000;
        row.team_id = (i % 4 != 0).then(|| format!("team-{}", i % 3));
        row.key_id = (i % 5 != 0).then(|| format!("key-{}", i % 7));
        row.caller = format!("fp:{}", i % 2);
        row.kind = [Kind::Realtime, Kind::Batch, Kind::Shadow][i % 3];
        row.service_tier = (i % 2 == 0).then(|| ["default", "flex"][i % 4 / 2].to_owned());
        row.provider = ["openai", "anthropic"][i % 2].to_owned();
        row.model_answered = (i % 6 == 1).then(|| "gpt-4o-mini-2024-07-18".to_owned());
        row.usage = usage(100 + i as u64, (i as u64 * 7) % 100, 5 + i as u64);
        row.usage.reasoning_tokens = i as u64 % 3;
        row.price = (i % 3 != 2).then(|| {
            let priced = catalog
                .price(None, Some("gpt-4o-mini"), &row.usage, false)
                .unwrap();
            RowPrice {
                cost: priced.cost,
                model: priced.model.to_owned(),
                variant: priced.variant,
                rates: priced.rates,
            }
        });
        row
    };
    for backend in backends().await {
        let store = backend.open().await;
        let (writer, _spill) = spawn_writer(&store, LedgerConfig::default());
        for i in 0..300 {
            writer.begin().record(varied(i)).await;
        }
        writer.flush().await;
        // Then batches mixing ids the ledger holds with new ones, as a replay sends them.
        for i in 250..400 {
            writer.begin().record(varied(i)).await;
        }
        writer.flush().await;
        for (stored, defined) in rollups_and_their_definition(&store).await {
            assert!(defined.len() > 50, "{}: the rows vary", backend.name);
            assert_eq!(stored, defined, "{}", backend.name);
        }
    }
}
