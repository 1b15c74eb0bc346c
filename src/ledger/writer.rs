//! The background writer. Recording tasks hand rows to a bounded queue; one task drains
//! it in batches of one transaction each, retrying with backoff while the database
//! refuses. The request path never touches the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{LedgerRow, Store};
use crate::config::LedgerConfig;

enum Command {
    Row(Box<LedgerRow>),
    /// Acknowledged once every row queued before it is committed.
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

/// Handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::Sender<Command>,
    pending: Arc<Pending>,
}

/// A row that will be recorded. Taken when a request is admitted, before the client can
/// see a response, so `flush` cannot miss it. Dropping it unrecorded releases it.
pub struct PendingRow {
    writer: LedgerWriter,
    done: bool,
}

impl PendingRow {
    /// Queues the row. Waits only for queue space, and only in the recording task.
    pub async fn record(mut self, row: LedgerRow) {
        if self
            .writer
            .tx
            .send(Command::Row(Box::new(row)))
            .await
            .is_err()
        {
            tracing::error!("ledger writer has stopped; a row was not recorded");
        }
        self.done = true;
        self.writer.pending.finish();
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
    /// Starts the writer task. It ends when every handle is dropped and the queue is
    /// drained; await the returned handle to know the last row is committed.
    pub fn spawn(store: Store, config: &LedgerConfig) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let task = tokio::spawn(run(store, rx, config.batch_size, config.max_batch_delay));
        let writer = Self {
            tx,
            pending: Arc::default(),
        };
        (writer, task)
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

    /// Returns once every row begun before the call is committed.
    pub async fn flush(&self) {
        self.pending.wait_idle().await;
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Command>, batch_size: usize, linger: Duration) {
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
        write_with_retry(&store, &rows).await;
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

/// Retries until the batch is written: a row is never dropped for a transient failure.
async fn write_with_retry(store: &Store, rows: &[LedgerRow]) {
    if rows.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1u32;
    loop {
        match store.insert(rows).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(rows = rows.len(), attempt, "ledger write recovered");
                }
                return;
            }
            Err(error) => {
                tracing::error!(%error, attempt, retry_in = ?delay, "ledger write failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}
