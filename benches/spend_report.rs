//! Spend reports over a big ledger: seeds 10 million request rows (90 days, 20 keys in
//! 4 teams, 6 models) through the real rollup code, checks the rollups against a
//! direct `SUM` over `requests`, then times `rollup_spend` per grouping and filter and
//! `GET /admin/spend` and `GET /admin/dashboard/data` on a running tollgate. Medians of
//! several runs.
//!
//! `cargo bench --bench spend_report`; knobs: `TOLLGATE_BENCH_ROWS` (10000000),
//! `TOLLGATE_BENCH_RUNS` (7), `TOLLGATE_BENCH_BACKENDS` (`sqlite,postgres`),
//! `TOLLGATE_BENCH_STEPS` (`rollups,http,reconcile`: which timings to run),
//! `TOLLGATE_BENCH_KEEP=1` to keep the seeded databases (SQLite under
//! `$TMPDIR/tollgate-spend-bench/`, Postgres schema `tg_spend_bench_<rows>`) and reuse
//! them on the next run, `TOLLGATE_BENCH_SEED_JOBS` (Postgres seeding connections, 2).
//! Postgres runs when `TOLLGATE_BENCH_POSTGRES_URL` or `TOLLGATE_TEST_POSTGRES_URL` is set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{BenchDb, KEYS, MODELS, cpu_sample, env_number, load_average};
use tollgate::config::{Config, ENV_ADMIN_KEY};
use tollgate::ledger::Store;
use tollgate::ledger::report::SpendLine;
use tollgate::ledger::rollup::{RollupFilter, RollupGroup, rollup_spend};
use tollgate::metering::Usage;
use tollgate::pricing::{Catalog, Cost};
use tollgate::reconcile::{Days, ledger};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const SEED_DAYS: i64 = 90;
/// Rows per seeding statement (and transaction): big enough that per-statement costs
/// vanish, small enough to show progress and keep Postgres's transition tables modest.
const SEED_CHUNK: u64 = 250_000;
const ADMIN_KEY: &str = "bench-admin-key";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let rows: u64 = env_number("TOLLGATE_BENCH_ROWS", 10_000_000);
    let runs: usize = env_number("TOLLGATE_BENCH_RUNS", 7);
    let keep = std::env::var("TOLLGATE_BENCH_KEEP").is_ok_and(|v| v == "1");
    let backends =
        std::env::var("TOLLGATE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let steps = std::env::var("TOLLGATE_BENCH_STEPS")
        .unwrap_or_else(|_| "rollups,http,reconcile".to_owned());
    let postgres = common::postgres_base_url();
    for backend in backends.split(',') {
        let db = match (backend, &postgres, keep) {
            ("sqlite", _, false) => BenchDb::sqlite_temp(),
            ("sqlite", _, true) => BenchDb::sqlite_kept(
                &std::env::temp_dir()
                    .join("tollgate-spend-bench")
                    .join(format!("ledger-{rows}.db")),
            ),
            ("postgres", Some(base), false) => BenchDb::postgres_temp(base).await,
            ("postgres", Some(base), true) => {
                BenchDb::postgres(base, &format!("tg_spend_bench_{rows}"), true).await
            }
            ("postgres", None, _) => {
                eprintln!("note: TOLLGATE_BENCH_POSTGRES_URL unset; Postgres spend bench skipped");
                continue;
            }
            (other, ..) => panic!("unknown backend `{other}`"),
        };
        let store = db.open().await;
        let seed = ensure_seeded(&store, backend, rows).await;
        verify(&store, &seed).await;
        println!("\n### {backend}: {rows} rows, {}", describe(&store).await);
        if steps.contains("rollups") {
            time_rollups(&store, &seed, runs).await;
        }
        if steps.contains("http") {
            time_http(&db, &seed, runs).await;
        }
        if steps.contains("reconcile") {
            time_reconcile(&store, &seed, runs).await;
        }
        close(&store).await;
        db.cleanup().await;
    }
}

/// What a seeded ledger holds, as the timings need it.
struct Seed {
    start_ms: i64,
    end_ms: i64,
    team_id: String,
    team_name: String,
    key_id: String,
}

// === seeding ===

/// Seeds `rows` rows unless this database already holds a finished seed of that size.
async fn ensure_seeded(store: &Store, backend: &str, rows: u64) -> Seed {
    if let Some(seed) = finished_seed(store, rows).await {
        println!("{backend}: reusing the seeded ledger ({rows} rows)");
        return seed;
    }
    let keys = common::create_keys(store).await;
    let end_ms = tollgate::clock::now_ms();
    let start_ms = end_ms - end_ms.rem_euclid(HOUR_MS) - SEED_DAYS * DAY_MS;
    execute(
        store,
        "CREATE TABLE bench_keys (i BIGINT PRIMARY KEY, key_id TEXT NOT NULL, \
         team_id TEXT NOT NULL, prefix TEXT NOT NULL)",
    )
    .await;
    for (i, key) in keys.iter().enumerate() {
        let sql = format!(
            "INSERT INTO bench_keys VALUES ({i}, '{}', '{}', '{}')",
            key.id, key.team_id, key.prefix
        );
        execute(store, &sql).await;
    }
    execute(
        store,
        "CREATE TABLE bench_models (i BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         priced_model TEXT, input_rate BIGINT, cached_rate BIGINT, output_rate BIGINT, \
         reasoning BIGINT NOT NULL)",
    )
    .await;
    let catalog = Catalog::builtin();
    for (i, model) in MODELS.iter().enumerate() {
        // Rates as the proxy would charge them, taken from the built-in catalog.
        let priced = catalog.price(Some(model), Some(model), &Usage::default(), false);
        let (name, input, cached, output) = match priced {
            Some(p) => (
                format!("'{}'", p.model),
                p.rates.input.micros_per_million().to_string(),
                p.rates.cached_input.micros_per_million().to_string(),
                p.rates.output.micros_per_million().to_string(),
            ),
            None => ("NULL".into(), "NULL".into(), "NULL".into(), "NULL".into()),
        };
        let reasoning = i64::from(model.starts_with('o'));
        let sql = format!(
            "INSERT INTO bench_models VALUES ({i}, '{model}', {name}, {input}, {cached}, \
             {output}, {reasoning})"
        );
        execute(store, &sql).await;
    }
    let jobs: u64 = match store {
        // One writer at a time is all SQLite allows.
        Store::Sqlite(_) => 1,
        Store::Postgres(_) => env_number("TOLLGATE_BENCH_SEED_JOBS", 2),
    };
    println!(
        "{backend}: seeding {rows} rows over {SEED_DAYS} days, {jobs} connection(s); load avg {}",
        load_average()
    );
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (store, next) = (store.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let from = next.fetch_add(SEED_CHUNK, Ordering::Relaxed);
                    if from >= rows {
                        return;
                    }
                    let to = (from + SEED_CHUNK).min(rows);
                    let sql = seed_sql(&store, from, to, rows, start_ms, end_ms - start_ms);
                    match &store {
                        // The writer keeps SQLite's rollups per batch, not a trigger: do
                        // the same for the chunk's rows (one writer, so they are the
                        // rowids after the previous maximum).
                        Store::Sqlite(ledger) => {
                            let top = "SELECT coalesce(max(rowid), 0) FROM requests";
                            let before: i64 = sqlx::query_scalar(top)
                                .fetch_one(ledger.pool())
                                .await
                                .unwrap();
                            execute(&store, &sql).await;
                            ledger.roll_up_rowids(before + 1, i64::MAX).await.unwrap();
                        }
                        Store::Postgres(_) => execute(&store, &sql).await,
                    }
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!("  rows {from}..{to} in; {secs:.0} s");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let inserted = started.elapsed();
    // Autovacuum would do this on its own soon after such a load; doing it now keeps the
    // timings from depending on when it happens to run.
    if let Store::Postgres(_) = store {
        execute(store, "VACUUM ANALYZE requests").await;
        execute(store, "VACUUM ANALYZE spend_hourly").await;
    }
    println!(
        "{backend}: seeded {rows} rows in {:.0} s ({:.0} rows/s; {:.0} s with vacuum); load avg {}",
        inserted.as_secs_f64(),
        rows as f64 / inserted.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        load_average()
    );
    execute(
        store,
        "CREATE TABLE bench_seed (rows BIGINT NOT NULL, start_ms BIGINT NOT NULL, \
         end_ms BIGINT NOT NULL)",
    )
    .await;
    let done = format!("INSERT INTO bench_seed VALUES ({rows}, {start_ms}, {end_ms})");
    execute(store, &done).await;
    finished_seed(store, rows).await.unwrap()
}

/// The seed this database holds, if a run finished one; panics on a half-done or
/// differently sized one rather than mix two seeds.
async fn finished_seed(store: &Store, rows: u64) -> Option<Seed> {
    let sql = "SELECT rows, start_ms, end_ms FROM bench_seed";
    let found: Result<(i64, i64, i64), _> = match store {
        Store::Sqlite(ledger) => sqlx::query_as(sql).fetch_one(ledger.pool()).await,
        Store::Postgres(ledger) => sqlx::query_as(sql).fetch_one(ledger.pool()).await,
    };
    let Ok((seeded, start_ms, end_ms)) = found else {
        let sql = "SELECT count(*) FROM teams";
        let teams: i64 = match store {
            Store::Sqlite(ledger) => sqlx::query_scalar(sql).fetch_one(ledger.pool()).await,
            Store::Postgres(ledger) => sqlx::query_scalar(sql).fetch_one(ledger.pool()).await,
        }
        .unwrap();
        assert_eq!(
            teams, 0,
            "a kept bench database holds an unfinished seed: delete it and run again"
        );
        return None;
    };
    assert_eq!(
        seeded, rows as i64,
        "the kept database holds another seed size"
    );
    let sql = "SELECT k.key_id, k.team_id, t.name FROM bench_keys k \
               JOIN teams t ON t.id = k.team_id WHERE k.i = 0";
    let (key_id, team_id, team_name): (String, String, String) = match store {
        Store::Sqlite(ledger) => sqlx::query_as(sql).fetch_one(ledger.pool()).await,
        Store::Postgres(ledger) => sqlx::query_as(sql).fetch_one(ledger.pool()).await,
    }
    .unwrap();
    Some(Seed {
        start_ms,
        end_ms,
        team_id,
        team_name,
        key_id,
    })
}

/// One `INSERT … SELECT` of rows `from..to` of `total`, spread evenly over the span,
/// with the same scramble as the writer bench: the rollups are kept as for rows the
/// writer inserts (Postgres's triggers; on SQLite, `roll_up_rowids` after each chunk).
/// Ids are UUIDv7-shaped and time-ordered.
fn seed_sql(store: &Store, from: u64, to: u64, total: u64, start_ms: i64, span_ms: i64) -> String {
    let (series, id) = match store {
        Store::Sqlite(_) => (
            format!(
                "WITH RECURSIVE s(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM s \
                 WHERE n + 1 < {to}),"
            ),
            "printf('%08x-%04x-7000-8000-%012x', ts >> 16, ts & 65535, n)",
        ),
        Store::Postgres(_) => (
            format!("WITH s(n) AS (SELECT generate_series({from}::BIGINT, {to}::BIGINT - 1)),"),
            "lpad(to_hex(ts >> 16), 8, '0') || '-' || lpad(to_hex(ts & 65535), 4, '0') \
             || '-7000-8000-' || lpad(to_hex(n), 12, '0')",
        ),
    };
    let models = MODELS.len();
    format!(
        "{series}
        g AS (SELECT n, {start_ms} + n * {span_ms} / {total} AS ts,
                     (n * 2654435761) % 4294967296 AS h FROM s),
        t AS (SELECT g.n, g.ts, g.h, k.key_id, k.team_id, k.prefix, m.name, m.priced_model,
                     m.input_rate, m.cached_rate, m.output_rate,
                     200 + g.h % 1800 AS p,
                     CASE WHEN g.h % 3 = 0 THEN (200 + g.h % 1800) / 2 ELSE 0 END AS c,
                     20 + (g.h / 7) % 700 AS o,
                     CASE WHEN m.reasoning = 1 THEN (g.h / 11) % 300 ELSE 0 END AS r
              FROM g JOIN bench_keys k ON k.i = g.h % {KEYS}
                     JOIN bench_models m ON m.i = (g.h / 20) % {models})
        INSERT INTO requests (id, request_id, upstream_request_id, ts_ms, caller, upstream,
            endpoint, model_requested, model_answered, streamed, prompt_tokens,
            cached_tokens, completion_tokens, reasoning_tokens, usage_source, status,
            outcome, latency_ms, ttfb_ms, cost_pico, priced_model, price_variant,
            input_rate, cached_input_rate, output_rate, key_id, team_id, kind)
        SELECT {id}, 'req_' || n, 'chatcmpl-' || n, ts, prefix, 'openai',
            '/v1/chat/completions', name, name, h % 2 = 0, p, c, o, r, 'upstream', 200,
            'ok', 300 + h % 5000, 100 + h % 300,
            CASE WHEN input_rate IS NULL THEN NULL
                 ELSE (p - c) * input_rate + c * cached_rate + o * output_rate END,
            priced_model, CASE WHEN priced_model IS NULL THEN NULL ELSE 'standard' END,
            input_rate, cached_rate, output_rate, key_id, team_id, 'realtime'
        FROM t"
    )
}

async fn execute(store: &Store, sql: &str) {
    let text = || sqlx::AssertSqlSafe(sql.to_owned());
    match store {
        Store::Sqlite(ledger) => sqlx::query(text()).execute(ledger.pool()).await.map(|_| ()),
        Store::Postgres(ledger) => sqlx::query(text()).execute(ledger.pool()).await.map(|_| ()),
    }
    .unwrap_or_else(|error| panic!("{error}: {sql}"));
}

async fn close(store: &Store) {
    match store {
        Store::Sqlite(ledger) => ledger.pool().close().await,
        Store::Postgres(ledger) => ledger.pool().close().await,
    }
}

/// Rows in the rollup table and the database's size on disk.
async fn describe(store: &Store) -> String {
    let count = "SELECT count(*) FROM spend_hourly";
    let (rollups, bytes): (i64, i64) = match store {
        Store::Sqlite(ledger) => {
            let pool = ledger.pool();
            let rollups = sqlx::query_scalar(count).fetch_one(pool).await.unwrap();
            let size = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()";
            (
                rollups,
                sqlx::query_scalar(size).fetch_one(pool).await.unwrap(),
            )
        }
        Store::Postgres(ledger) => {
            let pool = ledger.pool();
            let rollups = sqlx::query_scalar(count).fetch_one(pool).await.unwrap();
            let size = "SELECT CAST(pg_total_relation_size('requests') \
                        + pg_total_relation_size('spend_hourly') AS BIGINT)";
            (
                rollups,
                sqlx::query_scalar(size).fetch_one(pool).await.unwrap(),
            )
        }
    };
    format!(
        "{rollups} spend_hourly rows, {:.1} GB on disk",
        bytes as f64 / 1e9
    )
}

// === verification ===

/// The rollups the triggers kept must equal a direct `SUM` over `requests`: over
/// everything, for one team over one day, and for one key by model over a week.
async fn verify(store: &Store, seed: &Seed) {
    let started = Instant::now();
    let all = rollup_spend(store, RollupGroup::All, &RollupFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_same(&all[0], &direct(store, "1 = 1", &[]).await, "all rows");

    let day = seed.start_ms + 45 * DAY_MS;
    let filter = RollupFilter {
        from_ms: Some(day),
        to_ms: Some(day + DAY_MS),
        team_id: Some(seed.team_id.clone()),
        ..RollupFilter::default()
    };
    let lines = rollup_spend(store, RollupGroup::Team, &filter)
        .await
        .unwrap();
    assert_eq!(lines.len(), 1);
    let from = day.to_string();
    let to = (day + DAY_MS).to_string();
    let sum = direct(
        store,
        "team_id = ? AND ts_ms >= ? AND ts_ms < ?",
        &[&seed.team_id, &from, &to],
    )
    .await;
    assert_same(&lines[0], &sum, "one team, one day");

    let week = seed.start_ms + 30 * DAY_MS;
    let filter = RollupFilter {
        from_ms: Some(week),
        to_ms: Some(week + 7 * DAY_MS),
        key_id: Some(seed.key_id.clone()),
        ..RollupFilter::default()
    };
    let lines = rollup_spend(store, RollupGroup::Model, &filter)
        .await
        .unwrap();
    assert_eq!(lines.len(), MODELS.len());
    let from = week.to_string();
    let to = (week + 7 * DAY_MS).to_string();
    for line in &lines {
        let sum = direct(
            store,
            "key_id = ? AND ts_ms >= ? AND ts_ms < ? \
             AND coalesce(priced_model, model_answered) = ?",
            &[&seed.key_id, &from, &to, &line.group],
        )
        .await;
        assert_same(line, &sum, "one key, one week, one model");
    }
    println!(
        "rollups match a direct SUM over requests (all; a team-day; a key-week by model), \
         all {} requests, {} USD; checked in {:.1} s",
        all[0].requests,
        all[0].cost_usd.to_decimal_string(),
        started.elapsed().as_secs_f64()
    );
}

#[track_caller]
fn assert_same(rollup: &SpendLine, direct: &SpendLine, what: &str) {
    let figures = |l: &SpendLine| {
        (
            l.requests,
            l.prompt_tokens,
            l.cached_tokens,
            l.completion_tokens,
            l.reasoning_tokens,
            l.cost_usd,
            l.unpriced_requests,
            l.unpriced_tokens,
        )
    };
    assert_eq!(figures(rollup), figures(direct), "{what}");
    assert!(rollup.requests > 0, "{what}: the sample is empty");
}

/// Totals straight from `requests`. Binds are text, compared as the column's type
/// (numbers are cast on Postgres), so one signature serves both backends.
async fn direct(store: &Store, condition: &str, binds: &[&str]) -> SpendLine {
    let condition = match store {
        Store::Sqlite(_) => condition
            .replace("ts_ms >= ?", "ts_ms >= CAST(? AS INTEGER)")
            .replace("ts_ms < ?", "ts_ms < CAST(? AS INTEGER)"),
        Store::Postgres(_) => condition
            .replace("ts_ms >= ?", "ts_ms >= CAST(? AS BIGINT)")
            .replace("ts_ms < ?", "ts_ms < CAST(? AS BIGINT)"),
    };
    let sql = store.sql(&format!(
        "SELECT count(*), \
         CAST(coalesce(sum(prompt_tokens), 0) AS BIGINT), \
         CAST(coalesce(sum(cached_tokens), 0) AS BIGINT), \
         CAST(coalesce(sum(completion_tokens), 0) AS BIGINT), \
         CAST(coalesce(sum(reasoning_tokens), 0) AS BIGINT), \
         CAST(coalesce(sum(cost_pico / 1000000), 0) AS BIGINT), \
         CAST(coalesce(sum(cost_pico % 1000000), 0) AS BIGINT), \
         count(*) - count(cost_pico), \
         CAST(coalesce(sum(CASE WHEN cost_pico IS NULL \
              THEN prompt_tokens + completion_tokens END), 0) AS BIGINT) \
         FROM requests WHERE {condition}"
    ));
    type Sums = (i64, i64, i64, i64, i64, i64, i64, i64, i64);
    macro_rules! fetch {
        ($pool:expr) => {{
            let mut query = sqlx::query_as::<_, Sums>(sqlx::AssertSqlSafe(sql));
            for bind in binds {
                query = query.bind(*bind);
            }
            query.fetch_one($pool).await.unwrap()
        }};
    }
    let s: Sums = match store {
        Store::Sqlite(ledger) => fetch!(ledger.pool()),
        Store::Postgres(ledger) => fetch!(ledger.pool()),
    };
    let u = |v: i64| u64::try_from(v).unwrap();
    SpendLine {
        group: String::new(),
        requests: u(s.0),
        prompt_tokens: u(s.1),
        cached_tokens: u(s.2),
        completion_tokens: u(s.3),
        reasoning_tokens: u(s.4),
        cost_usd: Cost::from_pico(u128::from(u(s.5)) * 1_000_000 + u128::from(u(s.6))),
        unpriced_requests: u(s.7),
        unpriced_tokens: u(s.8),
        what_if_usd: None,
    }
}

// === timings ===

/// Median, fastest and slowest of `runs` timed calls, after one untimed warm-up.
struct Timing {
    median: Duration,
    min: Duration,
    max: Duration,
    lines: usize,
}

async fn timed<F, Fut>(runs: usize, mut call: F) -> Timing
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    let lines = call().await;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    times.sort();
    Timing {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        lines,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

async fn time_rollups(store: &Store, seed: &Seed, runs: usize) {
    let week = RollupFilter {
        from_ms: Some(seed.end_ms - 7 * DAY_MS),
        to_ms: Some(seed.end_ms),
        ..RollupFilter::default()
    };
    let team = RollupFilter {
        team_id: Some(seed.team_id.clone()),
        ..RollupFilter::default()
    };
    let team_week = RollupFilter {
        team_id: Some(seed.team_id.clone()),
        ..week.clone()
    };
    let filters = [
        ("all 90 days", RollupFilter::default()),
        ("last 7 days (from/to)", week),
        ("one team, 90 days", team),
        ("one team, last 7 days", team_week),
    ];
    let groups = [
        ("team", RollupGroup::Team),
        ("key", RollupGroup::Key),
        ("model", RollupGroup::Model),
        ("day", RollupGroup::Day),
        ("hour", RollupGroup::Hour),
    ];
    println!(
        "\n`rollup_spend`, {runs} runs after a warm-up; load avg {}",
        load_average()
    );
    let cpu = cpu_sample();
    println!("\n| group_by | filter | lines | median ms | min ms | max ms |");
    println!("|---|---|--:|--:|--:|--:|");
    for (filter_name, filter) in &filters {
        for (group_name, group) in groups {
            let timing = timed(runs, || async {
                rollup_spend(store, group, filter).await.unwrap().len()
            })
            .await;
            println!(
                "| {group_name} | {filter_name} | {} | {} | {} | {} |",
                timing.lines,
                ms(timing.median),
                ms(timing.min),
                ms(timing.max)
            );
        }
    }
    println!(
        "\nload avg after: {}; {}",
        load_average(),
        cpu_sample().since(&cpu)
    );
}

/// Reconciliation's ledger side (`reconcile::ledger::read`: one grouped range scan of
/// `requests`) over the last complete day, 7 days and 30 days of the seed.
async fn time_reconcile(store: &Store, seed: &Seed, runs: usize) {
    let last = seed.end_ms.div_euclid(DAY_MS) - 1;
    let upstreams = ["openai".to_owned()];
    println!(
        "\nreconcile's ledger side, {runs} runs after a warm-up; load avg {}",
        load_average()
    );
    let cpu = cpu_sample();
    println!("\n| days | rows read | groups | median ms | min ms | max ms |");
    println!("|--:|--:|--:|--:|--:|--:|");
    for span in [1, 7, 30] {
        let days = Days::new(last - span + 1, last).unwrap();
        let groups = ledger::read(store, days, &upstreams).await.unwrap();
        let rows: u64 = groups.iter().map(|g| g.requests).sum();
        let timing = timed(runs, || async {
            ledger::read(store, days, &upstreams).await.unwrap().len()
        })
        .await;
        println!(
            "| {span} | {rows} | {} | {} | {} | {} |",
            timing.lines,
            ms(timing.median),
            ms(timing.min),
            ms(timing.max)
        );
    }
    println!(
        "\nload avg after: {}; {}",
        load_average(),
        cpu_sample().since(&cpu)
    );
}

/// `GET /admin/spend` on a real tollgate serving this ledger: the rollup query plus
/// auth, JSON rendering and the loopback hop.
async fn time_http(db: &BenchDb, seed: &Seed, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = db.url.clone();
    config.ledger.spill_dir = dir.path().join("spill");
    let env: HashMap<String, String> = [(ENV_ADMIN_KEY.to_owned(), ADMIN_KEY.to_owned())].into();
    let running = tollgate::server::start(config, &env).await.unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{}", running.addr);
    let week = format!(
        "from={}&to={}",
        (seed.end_ms - 7 * DAY_MS) / 1000,
        seed.end_ms / 1000
    );
    let quarter = format!(
        "from={}&to={}",
        (seed.end_ms - SEED_DAYS * DAY_MS) / 1000,
        seed.end_ms / 1000
    );
    let queries = [
        "/admin/spend?group_by=team".to_owned(),
        "/admin/spend?group_by=key".to_owned(),
        "/admin/spend?group_by=day".to_owned(),
        format!("/admin/spend?group_by=hour&{week}"),
        format!("/admin/spend?group_by=model&team={}", seed.team_name),
        // The dashboard's one call: five rollup reads (all, team, model, key, team x
        // day or hour) and the budget standings.
        format!("/admin/dashboard/data?{quarter}"),
        format!("/admin/dashboard/data?{week}"),
    ];
    println!(
        "\n`GET /admin/spend` and the dashboard's data on a running tollgate, {runs} runs after a warm-up"
    );
    let cpu = cpu_sample();
    println!("\n| query | lines | median ms | min ms | max ms |");
    println!("|---|--:|--:|--:|--:|");
    for query in &queries {
        let url = format!("{base}{query}");
        let timing = timed(runs, || async {
            let response = client
                .get(&url)
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{url}");
            let body: serde_json::Value = response.json().await.unwrap();
            // Lines, or for the dashboard the chart's buckets.
            body["data"]
                .as_array()
                .or(body["series"]["buckets"].as_array())
                .map_or(0, Vec::len)
        })
        .await;
        println!(
            "| `{query}` | {} | {} | {} | {} |",
            timing.lines,
            ms(timing.median),
            ms(timing.min),
            ms(timing.max)
        );
    }
    println!("\n{}", cpu_sample().since(&cpu));
    running.shutdown().await;
}
