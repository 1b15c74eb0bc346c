//! The load of concurrent clients, which remembers what each request was told, and the
//! exact ledger audit every scenario ends with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate::pricing::Cost;

use crate::kit::{Key, client};

// === the load ===

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct Shape {
    pub clients: usize,
    /// Pause between one client's requests.
    pub pause: Duration,
    /// Every Nth request of a client is a stream (0: none).
    pub stream_every: usize,
    /// Between stream chunks (4 gaps per stream).
    pub chunk_delay: Duration,
    /// Stop each client after this many requests (0: until stopped).
    pub per_client: usize,
}

impl Shape {
    /// Clients that go on until stopped, every fourth request a stream of 4 chunks
    /// 20 ms apart: the steady traffic an outage scenario runs under.
    pub fn steady(clients: usize, pause: Duration) -> Self {
        Self {
            clients,
            pause,
            stream_every: 4,
            chunk_delay: Duration::from_millis(20),
            per_client: 0,
        }
    }
}

/// What one request was told.
#[derive(Debug, Clone)]
pub struct Told {
    pub id: String,
    pub key: usize,
    pub stream: bool,
    pub prompt: u64,
    pub completion: u64,
    /// The status, or why there was none (connection refused or cut).
    pub status: Result<u16, String>,
    /// `x-tollgate-cost-usd` in pico-USD (non-streamed 200s).
    pub cost: Option<u128>,
    /// For streams: whether `[DONE]` arrived, i.e. the stream ran to its end.
    pub complete: bool,
    /// When the answer (for a stream: its end) arrived.
    pub at: Instant,
}

impl Told {
    /// A request the client got a whole, successful answer to.
    pub fn answered(&self) -> bool {
        self.status == Ok(200) && (!self.stream || self.complete)
    }
}

/// Concurrent clients sending chat completions over `keys` until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Told>>>,
}

impl Load {
    /// Starts the clients against `bases` (client i talks to `bases[i % len]`).
    pub fn start(bases: &[String], keys: &[Key], shape: &Shape) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let http = client();
        let clients = (0..shape.clients)
            .map(|c| {
                let (stop, http, shape) = (stop.clone(), http.clone(), shape.clone());
                let base = bases[c % bases.len()].clone();
                let keys = keys.to_vec();
                tokio::spawn(async move {
                    let mut told = Vec::new();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed)
                        && (shape.per_client == 0 || n < shape.per_client)
                    {
                        let key = (c + n * shape.clients) % keys.len();
                        let stream = shape.stream_every > 0 && n % shape.stream_every == 1;
                        let seed = c * 1_000_003 + n;
                        told.push(send(&http, &base, &keys, key, stream, seed, &shape).await);
                        n += 1;
                        if !shape.pause.is_zero() {
                            tokio::time::sleep(shape.pause).await;
                        }
                    }
                    told
                })
            })
            .collect();
        Self { stop, clients }
    }

    /// Stops the clients (each finishes the request it is in) and returns every answer.
    pub async fn stop(self) -> Vec<Told> {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await
    }

    /// Waits for clients with a request budget to finish.
    pub async fn finish(self) -> Vec<Told> {
        let mut all = Vec::new();
        for client in self.clients {
            all.extend(client.await.unwrap());
        }
        all
    }
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    keys: &[Key],
    key: usize,
    stream: bool,
    seed: usize,
    shape: &Shape,
) -> Told {
    // Odd token counts, so costs have long decimal tails; max_tokens covers the
    // completion, so a budget's reservation is the worst case and cannot be overshot.
    let prompt = ((seed * 7919 % 20_011) as u64 + 1).min(keys[key].prompt_cap.unwrap_or(u64::MAX));
    let completion = (seed * 104_729 % 997) as u64 + 1;
    let id = format!("faults-{}", uuid::Uuid::new_v4().simple());
    let mut told = Told {
        id: id.clone(),
        key,
        stream,
        prompt,
        completion,
        status: Err(String::new()),
        cost: None,
        complete: false,
        at: Instant::now(),
    };
    let body = json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": completion,
                      "messages": [{"role": "user", "content": "fault"}]});
    let sent = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&keys[key].secret)
        .header("x-request-id", &id)
        .header("x-mock-prompt", prompt.to_string())
        .header("x-mock-completion", completion.to_string())
        .header(
            "x-mock-chunk-delay-ms",
            shape.chunk_delay.as_millis().to_string(),
        )
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            told.status = Err(error.to_string());
            told.at = Instant::now();
            return told;
        }
    };
    told.status = Ok(response.status().as_u16());
    told.cost = response
        .headers()
        .get("x-tollgate-cost-usd")
        .map(|v| v.to_str().unwrap().parse::<Cost>().unwrap().as_pico());
    match response.bytes().await {
        Ok(body) => told.complete = body.windows(6).any(|w| w == b"[DONE]"),
        // The status arrived, the body broke off: not a whole answer.
        Err(error) => told.status = Err(format!("body: {error}")),
    }
    told.at = Instant::now();
    told
}

// === the ledger check ===

/// One ledger row, as the check reads it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub request_id: String,
    pub caller: String,
    pub team_id: Option<String>,
    pub cost_pico: Option<i64>,
    pub prompt: i64,
    pub completion: i64,
    pub outcome: String,
    pub usage_source: String,
}

const ROWS: &str = "SELECT request_id, caller, team_id, cost_pico, prompt_tokens, \
                    completion_tokens, outcome, usage_source FROM requests";

pub async fn ledger_rows(db_url: &str) -> Vec<Stored> {
    fn stored<R: sqlx::Row>(row: &R) -> Stored
    where
        for<'r> &'r str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Stored {
            request_id: row.get("request_id"),
            caller: row.get("caller"),
            team_id: row.get("team_id"),
            cost_pico: row.get("cost_pico"),
            prompt: row.get("prompt_tokens"),
            completion: row.get("completion_tokens"),
            outcome: row.get("outcome"),
            usage_source: row.get("usage_source"),
        }
    }
    if db_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(db_url).await.unwrap();
        let rows = sqlx::query(ROWS).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.iter().map(stored).collect()
    } else {
        let pool = sqlx::PgPool::connect(db_url).await.unwrap();
        let rows = sqlx::query(ROWS).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.iter().map(stored).collect()
    }
}

/// What the check found. Every scenario asserts `lost` and `doubled` empty (but the
/// kill -9 one, which measures its loss instead).
#[derive(Debug, Default)]
pub struct Audit {
    /// Requests the clients got a whole 200 answer to.
    pub answered: usize,
    pub rows: usize,
    /// Answered requests with no row.
    pub lost: Vec<String>,
    /// Request ids stored more than once.
    pub doubled: Vec<String>,
    /// Rows for requests whose answer the client did not get whole (cut by a crash or
    /// a shutdown): billed upstream, so rightly recorded.
    pub unanswered_rows: usize,
    /// Requests refused (non-200) or not answered at all, by status or error kind.
    pub refused: BTreeMap<String, usize>,
}

impl Audit {
    /// No answered request without its row, no request stored twice.
    #[track_caller]
    pub fn assert_none_lost_or_doubled(&self) {
        assert!(self.lost.is_empty(), "rows lost: {:?}", self.lost);
        assert!(self.doubled.is_empty(), "rows doubled: {:?}", self.doubled);
    }
}

/// Matches every answered request to its row: one row each, the cost it was told,
/// its tokens; then per-key and per-team totals against the sums the clients were told.
pub fn audit(told: &[Told], stored: &[Stored], keys: &[Key]) -> Audit {
    let mut by_id: HashMap<&str, Vec<&Stored>> = HashMap::new();
    for row in stored {
        by_id.entry(&row.request_id).or_default().push(row);
    }
    let mut audit = Audit {
        rows: stored.len(),
        doubled: by_id
            .iter()
            .filter(|(_, rows)| rows.len() > 1)
            .map(|(id, _)| (*id).to_owned())
            .collect(),
        ..Audit::default()
    };
    let mut told_key: BTreeMap<&str, u128> = BTreeMap::new();
    let mut told_team: BTreeMap<&str, u128> = BTreeMap::new();
    let mut seen = 0;
    for request in told {
        let rows = by_id.get(request.id.as_str());
        if !request.answered() {
            let kind = match &request.status {
                Ok(status) if *status != 200 => status.to_string(),
                Ok(_) => "stream cut".to_owned(),
                Err(_) => "no answer".to_owned(),
            };
            *audit.refused.entry(kind).or_default() += 1;
            if let Some(rows) = rows {
                // A refusal before forwarding writes no row; a cut one may.
                assert!(
                    request.status == Ok(200) || request.status.is_err(),
                    "refused request {} has a row: {rows:?}",
                    request.id
                );
                audit.unanswered_rows += 1;
                seen += 1;
            }
            continue;
        }
        audit.answered += 1;
        let Some(rows) = rows else {
            audit.lost.push(request.id.clone());
            continue;
        };
        seen += 1;
        let row = rows[0];
        let key = &keys[request.key];
        assert_eq!(row.caller, key.prefix, "{}", request.id);
        assert_eq!(
            (
                row.prompt,
                row.completion,
                row.outcome.as_str(),
                row.usage_source.as_str()
            ),
            (
                request.prompt as i64,
                request.completion as i64,
                "ok",
                "upstream"
            ),
            "{}",
            request.id
        );
        let cost = u128::try_from(row.cost_pico.unwrap()).unwrap();
        if let Some(told) = request.cost {
            assert_eq!(cost, told, "{}: stored vs told cost", request.id);
        }
        *told_key.entry(&key.prefix).or_default() += cost;
        *told_team.entry(&key.team).or_default() += cost;
    }
    assert_eq!(
        seen,
        by_id.len(),
        "the ledger holds rows for requests no client sent"
    );
    // Per-key and per-team totals, summed from the rows on their own.
    let team_of: HashMap<&str, &str> = keys
        .iter()
        .map(|k| (k.prefix.as_str(), k.team.as_str()))
        .collect();
    let mut team_ids: HashMap<&str, &str> = HashMap::new();
    let mut stored_key: BTreeMap<&str, u128> = BTreeMap::new();
    let mut stored_team: BTreeMap<&str, u128> = BTreeMap::new();
    let answered_ids: std::collections::HashSet<&str> = told
        .iter()
        .filter(|t| t.answered())
        .map(|t| t.id.as_str())
        .collect();
    for row in stored
        .iter()
        .filter(|r| answered_ids.contains(r.request_id.as_str()))
    {
        let team = team_of[row.caller.as_str()];
        let team_id = row.team_id.as_deref().unwrap();
        assert_eq!(
            *team_ids.entry(team_id).or_insert(team),
            team,
            "one team id, one team"
        );
        let cost = u128::try_from(row.cost_pico.unwrap()).unwrap();
        *stored_key.entry(&row.caller).or_default() += cost;
        *stored_team.entry(team).or_default() += cost;
    }
    if audit.doubled.is_empty() {
        assert_eq!(stored_key, told_key, "per-key totals");
        assert_eq!(stored_team, told_team, "per-team totals");
    }
    audit
}
