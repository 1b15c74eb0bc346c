//! The background writer. Recording tasks hand rows to a bounded queue; one task drains
//! it in batches of one transaction each. A batch the database refuses for half a
//! second goes to the spill file and the writer moves on, so an outage fills neither
//! the queue nor memory; a replay task hands spilled rows back once the database
//! answers. The request path never touches the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::background;
use super::spill::{Spill, SpillError};
use super::{LedgerError, LedgerRow, Store};
use crate::config::{LedgerConfig, WriterPriority};

/// Pauses between the tries a batch gets before it is spilled (three tries in ~0.5 s):
/// enough to ride out a blip such as a pooler restart without touching the disk.
const INSERT_BACKOFF: [Duration; 2] = [Duration::from_millis(150), Duration::from_millis(300)];

/// Bound on one insert or ping. While a database host refuses connections, sqlx's
/// pool keeps retrying for its 30 s acquire timeout; unbounded, that would hold the
/// whole queue behind one batch. A slow commit cut off here is spilled and its replay
/// skips whatever did commit, so a short bound risks nothing.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest pause while neither the database nor the spill takes a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why one try at the database failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("no answer from the database within {0:?}")]
    TimedOut(Duration),
}

enum Command {
    Row(Box<LedgerRow>),
    /// Acknowledged once every row queued before it is committed or spilled.
    Flush(oneshot::Sender<()>),
}

/// Rows promised but not yet queued: lets `flush` wait for requests whose recording
/// task is still metering, so "flush" means "everything that was served is stored".
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    fn finish(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Writes that failed since start, by where they were going (for metrics).
#[derive(Debug, Default)]
pub struct WriteFailures {
    /// Inserts (and replays) the database refused or did not answer in time.
    pub database: AtomicU64,
    /// Appends to the spill file that failed: rows then wait in memory.
    pub spill: AtomicU64,
}

impl WriteFailures {
    fn database(&self) {
        self.database.fetch_add(1, Ordering::Relaxed);
    }

    fn spill(&self) {
        self.spill.fetch_add(1, Ordering::Relaxed);
    }
}

/// Handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::Sender<Command>,
    pending: Arc<Pending>,
    spill: Arc<Spill>,
    /// Set by the writer when an insert fails, cleared when the database answers.
    spilling: Arc<AtomicBool>,
    failures: Arc<WriteFailures>,
    /// Asks the replay task for a replay now; answered once it has tried.
    replay_now: mpsc::Sender<oneshot::Sender<()>>,
}

/// A row that will be recorded. Taken when a request is admitted, before the client can
/// see a response, so `flush` cannot miss it. Dropping it unrecorded releases it.
pub struct PendingRow {
    writer: LedgerWriter,
    done: bool,
}

impl PendingRow {
    /// Queues the row. Waits only for queue space, and only in the recording task.
    /// The row is boxed when this is called, so the future holds a pointer to it rather
    /// than the row itself (it is awaited inside every relay's future).
    pub fn record(mut self, row: LedgerRow) -> impl Future<Output = ()> + Send + 'static {
        let command = Command::Row(Box::new(row));
        async move {
            if self.writer.tx.send(command).await.is_err() {
                tracing::error!("ledger writer has stopped; a row was not recorded");
            }
            self.done = true;
            self.writer.pending.finish();
        }
    }
}

impl Drop for PendingRow {
    fn drop(&mut self) {
        if !self.done {
            self.writer.pending.finish();
        }
    }
}

impl LedgerWriter {
    /// Opens the spill directory and starts the writer and its replay task. The writer
    /// ends when every handle is dropped and the queue is drained, and stops the replay
    /// task; await the returned handle to know the last row is committed or spilled.
    pub fn spawn(
        store: Store,
        config: &LedgerConfig,
    ) -> Result<(Self, JoinHandle<()>), SpillError> {
        let spill = Arc::new(Spill::open(&config.spill_dir)?);
        let spilling = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(WriteFailures::default());
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let stop = CancellationToken::new();
        let (replay_now, asks) = mpsc::channel(1);
        let replayer = Replayer {
            sink: Sink {
                store: store.clone(),
                spill: Arc::clone(&spill),
                spilling: Arc::clone(&spilling),
                failures: Arc::clone(&failures),
                background_below: None,
            },
            batch_size: config.batch_size,
            unsure: false,
            failing: false,
        };
        let replay = tokio::spawn(replayer.run(config.spill_retry_interval, asks, stop.clone()));
        // Replays stay at normal priority: they follow an outage, with rows waiting.
        let (store, background_below) = match config.writer_priority {
            WriterPriority::Background => (store.with_background_writer(), Some(config.batch_size)),
            WriterPriority::Normal => (store, None),
        };
        let sink = Sink {
            store,
            spill: Arc::clone(&spill),
            spilling: Arc::clone(&spilling),
            failures: Arc::clone(&failures),
            background_below,
        };
        let (batch_size, linger) = (config.batch_size, config.max_batch_delay);
        let left = Arc::clone(&spill);
        let task = tokio::spawn(async move {
            run(sink, rx, batch_size, linger).await;
            stop.cancel();
            match replay.await {
                Ok(()) => {}
                // The process is exiting mid-replay: rows still in the spill are
                // replayed by the next start, and rows replayed twice are skipped by id.
                Err(error) if error.is_cancelled() => tracing::info!(
                    rows = left.rows(),
                    "spill replay stopped by shutdown: the next start replays what is left"
                ),
                Err(error) => tracing::error!(%error, "spill replay task failed"),
            }
        });
        let writer = Self {
            tx,
            pending: Arc::default(),
            spill,
            spilling,
            failures,
            replay_now,
        };
        Ok((writer, task))
    }

    pub fn begin(&self) -> PendingRow {
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        PendingRow {
            writer: self.clone(),
            done: false,
        }
    }

    /// Rows queued and not yet committed (for readiness and metrics).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Rows in spill files, not yet replayed into the database (for readiness and
    /// metrics): above zero, the database has missed rows it will get later.
    pub fn spilled_rows(&self) -> u64 {
        self.spill.rows()
    }

    /// Whether the last insert failed and batches are going to the spill file.
    pub fn is_spilling(&self) -> bool {
        self.spilling.load(Ordering::Acquire)
    }

    /// Offers the spill to the database now rather than at the next retry interval, and
    /// returns the rows still in it. For shutdown: a batch spilled in the last second of
    /// a busy run (a pool wait that timed out) is stored before the process exits
    /// instead of waiting on disk for the next start. The replay task does the work, so
    /// two replays never read the same segment at once.
    pub async fn replay_spill(&self) -> u64 {
        if self.spill.rows() > 0 || self.is_spilling() {
            let (ack, done) = oneshot::channel();
            if self.replay_now.send(ack).await.is_ok() {
                let _ = done.await;
            }
        }
        self.spill.rows()
    }

    /// Where rows wait while the database does not take them (for logs).
    pub fn spill_dir(&self) -> &std::path::Path {
        self.spill.dir()
    }

    /// Failed writes since start, for the `tollgate_ledger_write_failures_total` counter.
    pub fn write_failures(&self) -> &WriteFailures {
        &self.failures
    }

    /// Returns once every row begun before the call is committed or spilled (fsync'd).
    pub async fn flush(&self) {
        self.pending.wait_idle().await;
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(sink: Sink, mut rx: mpsc::Receiver<Command>, batch_size: usize, linger: Duration) {
    let mut commands = Vec::with_capacity(batch_size);
    let mut rows = Vec::with_capacity(batch_size);
    while rx.recv_many(&mut commands, batch_size).await > 0 {
        gather(&mut rx, &mut commands, batch_size, linger).await;
        let mut acks = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Row(row) => rows.push(*row),
                Command::Flush(ack) => acks.push(ack),
            }
        }
        sink.persist(&rows).await;
        rows.clear();
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// Waits up to `linger` for the batch to fill: one transaction of many rows costs the
/// database about what one of a single row does, so under load this turns thousands of
/// commits a second into a few dozen. A flush waiting in the batch cuts the wait short.
async fn gather(
    rx: &mut mpsc::Receiver<Command>,
    commands: &mut Vec<Command>,
    batch_size: usize,
    linger: Duration,
) {
    let deadline = tokio::time::Instant::now() + linger;
    while commands.len() < batch_size && !commands.iter().any(|c| matches!(c, Command::Flush(_))) {
        let room = batch_size - commands.len();
        match tokio::time::timeout_at(deadline, rx.recv_many(commands, room)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Where batches go: the database, else the spill.
struct Sink {
    store: Store,
    spill: Arc<Spill>,
    spilling: Arc<AtomicBool>,
    failures: Arc<WriteFailures>,
    /// The batch size below which a batch goes through the store's background
    /// connection; `None`: every batch at normal priority.
    background_below: Option<usize>,
}

// === impl Sink ===

impl Sink {
    /// Returns once the batch is committed or spilled: a row is never dropped.
    async fn persist(&self, rows: &[LedgerRow]) {
        if rows.is_empty() {
            return;
        }
        // While spilling, the replay task probes the database once per interval; trying
        // here as well would cost every batch of an outage half a second or more.
        if !self.is_spilling() {
            match self.insert_with_retries(rows).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(
                        %error,
                        rows = rows.len(),
                        spill_dir = %self.spill.dir().display(),
                        "ledger database unavailable: spilling rows to disk until it answers"
                    );
                    self.spilling.store(true, Ordering::Release);
                }
            }
        }
        match self.spill.append(rows).await {
            Ok(()) => {}
            Err(error) => {
                self.failures.spill();
                tracing::error!(%error, "cannot spill ledger rows either");
                self.retry_forever(rows).await;
            }
        }
    }

    fn is_spilling(&self) -> bool {
        self.spilling.load(Ordering::Acquire)
    }

    /// Three tries in about half a second.
    async fn insert_with_retries(&self, rows: &[LedgerRow]) -> Result<(), AttemptError> {
        let mut pauses = INSERT_BACKOFF.iter();
        let mut background = self
            .background_below
            .is_some_and(|batch_size| background::keeps_up(rows.len(), batch_size));
        loop {
            match insert_once(&self.store, rows, background).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    // A try cut off by its timeout may have been a starved background
                    // thread rather than the database: the next goes at normal priority.
                    background = false;
                    self.failures.database();
                    match pauses.next() {
                        Some(pause) => {
                            tracing::debug!(%error, retry_in = ?pause, "ledger write failed");
                            tokio::time::sleep(*pause).await;
                        }
                        None => return Err(error),
                    }
                }
            }
        }
    }

    /// Neither the database nor the disk takes the batch (disk full, no permission):
    /// hold it and offer it to both, with backoff, until one does. The queue fills
    /// meanwhile and recording tasks wait; clients still do not.
    async fn retry_forever(&self, rows: &[LedgerRow]) {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 1u32;
        loop {
            tokio::time::sleep(delay).await;
            attempt += 1;
            match insert_once(&self.store, rows, false).await {
                Ok(()) => {
                    tracing::info!(rows = rows.len(), attempt, "ledger write recovered");
                    self.spilling.store(false, Ordering::Release);
                    return;
                }
                Err(error) => {
                    self.failures.database();
                    tracing::error!(%error, attempt, "ledger write failed");
                }
            }
            match self.spill.append(rows).await {
                Ok(()) => {
                    tracing::info!(rows = rows.len(), attempt, "ledger spill recovered");
                    return;
                }
                Err(error) => {
                    self.failures.spill();
                    tracing::error!(%error, attempt, retry_in = ?delay, "ledger spill failed");
                }
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

/// One try, through the store's background connection if `background`.
async fn insert_once(
    store: &Store,
    rows: &[LedgerRow],
    background: bool,
) -> Result<(), AttemptError> {
    let insert = async {
        if background {
            store.insert_in_background(rows).await
        } else {
            store.insert(rows).await
        }
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, insert).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(AttemptError::TimedOut(ATTEMPT_TIMEOUT)),
    }
}

/// The replay task's state: offers the spill back to the database every `interval`
/// while it holds rows or the writer is spilling, and whenever `replay_spill` asks.
struct Replayer {
    sink: Sink,
    batch_size: usize,
    /// The segments an earlier process left could not even be counted: try them anyway.
    unsure: bool,
    /// The last replay failed: log the next failure at debug, the gauge tracks it.
    failing: bool,
}

impl Replayer {
    /// Starts with segments an earlier process left.
    async fn run(
        mut self,
        interval: Duration,
        mut asks: mpsc::Receiver<oneshot::Sender<()>>,
        stop: CancellationToken,
    ) {
        let spill = &self.sink.spill;
        match spill.adopt().await {
            Ok(0) => {}
            Ok(rows) => tracing::warn!(
                rows,
                spill_dir = %spill.dir().display(),
                "spill holds ledger rows from an earlier run: replaying once the database answers"
            ),
            Err(error) => {
                tracing::error!(%error, "cannot count the rows left in the spill");
                self.unsure = true;
            }
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => None,
                Some(ack) = asks.recv() => Some(ack),
            };
            self.offer().await;
            if let Some(ack) = asked {
                let _ = ack.send(());
            }
        }
    }

    /// A ping first, so an outage costs one cheap query, then a replay of every segment.
    async fn offer(&mut self) {
        let Sink {
            store,
            spill,
            spilling,
            failures,
            background_below: _,
        } = &self.sink;
        if !self.unsure && spill.rows() == 0 && !spilling.load(Ordering::Acquire) {
            return;
        }
        let answers = tokio::time::timeout(ATTEMPT_TIMEOUT, store.ping()).await;
        if !matches!(answers, Ok(true)) {
            return;
        }
        // The database answers: let the writer try it again rather than wait for the
        // backlog. If it still refuses writes, the writer spills again after its tries.
        spilling.store(false, Ordering::Release);
        match spill.replay(store, self.batch_size, ATTEMPT_TIMEOUT).await {
            Ok(rows) => {
                if rows > 0 {
                    tracing::info!(rows, "replayed spilled ledger rows into the database");
                }
                self.unsure = false;
                self.failing = false;
            }
            Err(error) => {
                failures.database();
                // Once per outage: the gauge, not the log, tracks a long one.
                if self.failing {
                    tracing::debug!(%error, "spill replay stopped again");
                } else {
                    self.failing = true;
                    tracing::warn!(%error, "spill replay stopped; retrying every interval");
                }
            }
        }
    }
}
