//! What the ledger benches share: a throwaway database on either backend, the teams and
//! keys real rows point at, and a note of how busy the machine was.

// Each bench uses only part of this module.
#![allow(dead_code)]

use tollgate::auth::store::{KeyFields, TeamFields, create_key, create_team};
use tollgate::ledger::Store;

/// Teams and keys as the issue describes a mid-sized deployment: 20 keys in 4 teams.
pub const TEAMS: usize = 4;
pub const KEYS: usize = 20;

/// Five catalog models and one the catalog does not know, whose rows stay unpriced.
pub const MODELS: [&str; 6] = [
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-nano",
    "o3-mini",
    "local-llama-3",
];

/// The Postgres server the benches may use; `None` runs SQLite only.
pub fn postgres_base_url() -> Option<String> {
    ["TOLLGATE_BENCH_POSTGRES_URL", "TOLLGATE_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|url| !url.is_empty()))
}

/// A database the bench may fill and throw away: a SQLite file in a temp dir, or a
/// Postgres schema of its own, dropped by `cleanup` unless it is meant to be kept.
pub struct BenchDb {
    pub backend: &'static str,
    pub url: String,
    schema: Option<(String, String)>,
    keep: bool,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    pub fn sqlite_temp() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            backend: "sqlite",
            url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
            schema: None,
            keep: false,
            _dir: Some(dir),
        }
    }

    /// A SQLite file at `path`, left in place for the next run.
    pub fn sqlite_kept(path: &std::path::Path) -> Self {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        Self {
            backend: "sqlite",
            url: format!("sqlite://{}", path.display()),
            schema: None,
            keep: true,
            _dir: None,
        }
    }

    /// `schema` (created if missing) on the server at `base`; kept if `keep`.
    pub async fn postgres(base: &str, schema: &str, keep: bool) -> Self {
        let admin = sqlx::PgPool::connect(base).await.unwrap();
        let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        Self {
            backend: "postgres",
            url: format!("{base}{separator}options=-c%20search_path%3D{schema}"),
            schema: Some((base.to_owned(), schema.to_owned())),
            keep,
            _dir: None,
        }
    }

    /// A fresh schema with a random name, dropped by `cleanup`.
    pub async fn postgres_temp(base: &str) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let schema = format!("tg_{created}_bench_{}", uuid::Uuid::new_v4().simple());
        Self::postgres(base, &schema, false).await
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }

    /// Drops the Postgres schema (the temp dir goes with `self`) unless kept.
    pub async fn cleanup(self) {
        if self.keep {
            eprintln!("kept {} database: {}", self.backend, self.url);
            return;
        }
        if let Some((base, schema)) = &self.schema {
            let admin = sqlx::PgPool::connect(base).await.unwrap();
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }
}

/// One key as rows name it.
#[derive(Debug, Clone)]
pub struct BenchKey {
    pub id: String,
    pub team_id: String,
    pub prefix: String,
}

/// Creates teams `team-0` … and keys spread round-robin over them, through the same
/// functions the admin API uses, so reports join real names.
pub async fn create_keys(store: &Store) -> Vec<BenchKey> {
    let now = tollgate::clock::now_ms();
    let mut teams = Vec::new();
    for t in 0..TEAMS {
        let team = create_team(store, &format!("team-{t}"), &TeamFields::default(), now)
            .await
            .unwrap();
        teams.push(team.id);
    }
    let mut keys = Vec::new();
    for k in 0..KEYS {
        let fields = KeyFields {
            name: Some(format!("key-{k}")),
            ..KeyFields::default()
        };
        let (record, _secret) = create_key(store, &teams[k % TEAMS], &fields, now)
            .await
            .unwrap();
        keys.push(BenchKey {
            id: record.id,
            team_id: record.team_id,
            prefix: record.prefix,
        });
    }
    keys
}

/// The 1-, 5- and 15-minute load averages: other engineers build on this machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A number from the environment, else `default`.
pub fn env_number<T: std::str::FromStr>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(text) => text
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text} is not a number")),
        Err(_) => default,
    }
}

/// A cheap, deterministic scramble of a row number, so keys, models and token counts
/// vary from row to row the same way on every run (and the same way the SQL seed does).
pub fn scramble(n: u64) -> u64 {
    n.wrapping_mul(2_654_435_761) % 4_294_967_296
}

/// CPU time so far, in clock ticks (10 ms on Linux): the whole machine's busy time,
/// this process's, and the Postgres server processes'. Two samples tell the bench's
/// own work and the database's from other engineers' builds running alongside.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    machine_busy: u64,
    own: u64,
    postgres: u64,
    at: std::time::Instant,
}

/// What ran between two samples, in seconds of CPU (and other load in cores).
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub own_s: f64,
    pub postgres_s: f64,
    /// Busy time of everything else on the machine, as a share of one core.
    pub other_cores: f64,
}

pub fn cpu_sample() -> CpuSample {
    let machine_busy = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.to_owned();
            let ticks: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal: all but idle and iowait.
            Some(
                [0, 1, 2, 5, 6, 7]
                    .iter()
                    .filter_map(|&i| ticks.get(i))
                    .sum(),
            )
        })
        .unwrap_or(0);
    let mut postgres = 0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if stat.contains("(postgres)") {
                postgres += process_ticks(&stat);
            }
        }
    }
    let own = std::fs::read_to_string("/proc/self/stat").map_or(0, |stat| process_ticks(&stat));
    CpuSample {
        machine_busy,
        own,
        postgres,
        at: std::time::Instant::now(),
    }
}

/// utime + stime from a `/proc/PID/stat` line.
fn process_ticks(stat: &str) -> u64 {
    // Fields after the command name (which may hold spaces) start at `) `; utime and
    // stime are the 12th and 13th of those.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(Vec::new(), |(_, rest)| rest.split(' ').collect());
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

impl CpuSample {
    pub fn since(&self, earlier: &CpuSample) -> CpuUse {
        let secs = |ticks: u64| ticks as f64 / 100.0;
        let own = self.own.saturating_sub(earlier.own);
        let postgres = self.postgres.saturating_sub(earlier.postgres);
        let busy = self.machine_busy.saturating_sub(earlier.machine_busy);
        let wall = self.at.duration_since(earlier.at).as_secs_f64().max(1e-3);
        CpuUse {
            own_s: secs(own),
            postgres_s: secs(postgres),
            other_cores: secs(busy.saturating_sub(own + postgres)) / wall,
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU: bench {:.2} s, postgres {:.2} s; other load {:.0}% of a core",
            self.own_s,
            self.postgres_s,
            self.other_cores * 100.0
        )
    }
}
