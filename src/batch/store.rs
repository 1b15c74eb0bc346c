//! The `upstream_objects` table: ownership of files, batches and jobs, and where the
//! billing of each batch and job stands. Statements are written once, with `?`.

use std::collections::HashSet;

use sqlx::AssertSqlSafe;

use crate::auth::store::on_pool;
use crate::ledger::{Bind, Store};

/// What an upstream object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    File,
    Batch,
    FineTuningJob,
}

impl Object {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Batch => "batch",
            Self::FineTuningJob => "fine_tuning.job",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "batch" => Self::Batch,
            "fine_tuning.job" => Self::FineTuningJob,
            _ => Self::File,
        }
    }
}

/// Where billing stands.
pub mod billing {
    /// A file: owned, nothing to bill.
    pub const NONE: &str = "none";
    /// A batch create being admitted and forwarded.
    pub const ADMITTING: &str = "admitting";
    /// Waiting for a terminal status.
    pub const TRACKING: &str = "tracking";
    /// Terminal upstream; its output is being billed.
    pub const BILLING: &str = "billing";
    pub const BILLED: &str = "billed";
    /// The upstream answered 404 for it, poll after poll.
    pub const LOST: &str = "lost";
}

/// A new object, recorded when it is created through tollgate.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub id: String,
    pub object: Object,
    pub owner: String,
    pub key_id: String,
    pub team_id: Option<String>,
    pub caller: String,
    pub created_ms: i64,
    pub billing: &'static str,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub input_file_id: Option<String>,
    pub enqueued_tokens: u64,
    pub reservation_id: Option<String>,
}

/// A tracked batch or job, as the poller reads it.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub id: String,
    pub object: Object,
    pub owner: String,
    pub key_id: String,
    pub team_id: Option<String>,
    pub caller: String,
    pub billing: String,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub output_file_id: Option<String>,
    pub reservation_id: Option<String>,
    pub cursor_lines: u64,
    pub cursor_bytes: u64,
    pub billed_lines: u64,
    pub failed_lines: u64,
    pub malformed_lines: u64,
    pub attempts: u32,
}

const INSERT: &str = "INSERT INTO upstream_objects (id, object, owner, key_id, team_id, caller, \
    created_ms, billing, endpoint, model, input_file_id, enqueued_tokens, reservation_id, \
    updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING";

const TRACKED_COLUMNS: &str = "id, object, owner, key_id, team_id, caller, billing, endpoint, \
    model, output_file_id, reservation_id, cursor_lines, cursor_bytes, billed_lines, \
    failed_lines, malformed_lines, attempts";

/// The statement that advances a batch's cursor, run in the transaction of its rows.
pub const ADVANCE: &str = "UPDATE upstream_objects SET cursor_lines = ?, cursor_bytes = ?, \
    billed_lines = ?, failed_lines = ?, malformed_lines = ?, updated_ms = ? WHERE id = ?";

/// The statement that closes a batch or job's billing, run in the transaction of its
/// last rows.
pub const CLOSE: &str = "UPDATE upstream_objects SET billing = ?, updated_ms = ? WHERE id = ?";

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub async fn insert(store: &Store, new: &NewObject, now_ms: i64) -> Result<(), sqlx::Error> {
    let sql = store.sql(INSERT);
    on_pool!(store, pool => {
        sqlx::query(AssertSqlSafe(sql))
            .bind(&new.id)
            .bind(new.object.as_str())
            .bind(&new.owner)
            .bind(&new.key_id)
            .bind(&new.team_id)
            .bind(&new.caller)
            .bind(new.created_ms)
            .bind(new.billing)
            .bind(&new.endpoint)
            .bind(&new.model)
            .bind(&new.input_file_id)
            .bind(int(new.enqueued_tokens))
            .bind(&new.reservation_id)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(drop)
    })
}

/// Who owns the object `id`, if tollgate recorded it.
pub async fn owner_of(store: &Store, id: &str) -> Result<Option<String>, sqlx::Error> {
    let sql = store.sql("SELECT owner FROM upstream_objects WHERE id = ?");
    on_pool!(store, pool => {
        sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

/// The ids of `owner`'s objects of one kind (to filter a list).
pub async fn owned_ids(
    store: &Store,
    owner: &str,
    object: Object,
) -> Result<HashSet<String>, sqlx::Error> {
    let sql = store.sql("SELECT id FROM upstream_objects WHERE owner = ? AND object = ?");
    let ids: Vec<String> = on_pool!(store, pool => {
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(owner)
            .bind(object.as_str())
            .fetch_all(pool)
            .await
    })?;
    Ok(ids.into_iter().collect())
}

/// Enqueued input tokens of every batch not yet finished, per model.
pub async fn enqueued_by_model(store: &Store) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let sql = store.sql(
        "SELECT model, CAST(sum(enqueued_tokens) AS BIGINT) FROM upstream_objects \
         WHERE object = 'batch' AND billing IN ('admitting', 'tracking') AND model IS NOT NULL \
         GROUP BY model",
    );
    let rows: Vec<(String, i64)> = on_pool!(store, pool => {
        sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await
    })?;
    Ok(rows.into_iter().map(|(m, t)| (m, count(t))).collect())
}

/// A batch the upstream accepted: its pending row takes the upstream's id.
pub async fn admitted(
    store: &Store,
    pending: &str,
    id: &str,
    next_poll_ms: i64,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let sql = store.sql(
        "UPDATE upstream_objects SET id = ?, billing = 'tracking', next_poll_ms = ?, \
         updated_ms = ? WHERE id = ?",
    );
    on_pool!(store, pool => {
        sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(next_poll_ms)
            .bind(now_ms)
            .bind(pending)
            .execute(pool)
            .await
            .map(drop)
    })
}

pub async fn delete(store: &Store, id: &str) -> Result<(), sqlx::Error> {
    let sql = store.sql("DELETE FROM upstream_objects WHERE id = ?");
    on_pool!(store, pool => {
        sqlx::query(AssertSqlSafe(sql)).bind(id).execute(pool).await.map(drop)
    })
}

/// Releases a batch's budget reservation (billing is over, or the create failed).
pub async fn release(store: &Store, reservation_id: &str) -> Result<(), sqlx::Error> {
    let sql = store.sql("DELETE FROM budget_reservations WHERE id = ?");
    on_pool!(store, pool => {
        sqlx::query(AssertSqlSafe(sql)).bind(reservation_id).execute(pool).await.map(drop)
    })
}

/// Creates that died between forwarding and recording leave a pending row; after
/// `older_than_ms` it no longer holds enqueued tokens.
pub async fn drop_stale_pending(store: &Store, before_ms: i64) -> Result<u64, sqlx::Error> {
    let sql =
        store.sql("DELETE FROM upstream_objects WHERE billing = 'admitting' AND created_ms < ?");
    on_pool!(store, pool => {
        sqlx::query(AssertSqlSafe(sql))
            .bind(before_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
}

/// Batches and jobs to poll: every unfinished one, or only those due by `due_ms`.
pub async fn active(store: &Store, due_ms: Option<i64>) -> Result<Vec<Tracked>, sqlx::Error> {
    let sql = store.sql(&format!(
        "SELECT {TRACKED_COLUMNS} FROM upstream_objects WHERE billing IN ('tracking', 'billing') \
         AND next_poll_ms <= ? ORDER BY next_poll_ms LIMIT 500"
    ));
    let due = due_ms.unwrap_or(i64::MAX);
    on_pool!(store, pool => {
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(due).fetch_all(pool).await?;
        rows.iter().map(tracked).collect()
    })
}

/// One object by id (tests and the passthrough-mode billing read it).
pub async fn get(store: &Store, id: &str) -> Result<Option<Tracked>, sqlx::Error> {
    let sql = store.sql(&format!(
        "SELECT {TRACKED_COLUMNS} FROM upstream_objects WHERE id = ?"
    ));
    on_pool!(store, pool => {
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
        row.as_ref().map(tracked).transpose()
    })
}

fn tracked<R>(row: &R) -> Result<Tracked, sqlx::Error>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text = |name: &str| row.try_get::<String, _>(name);
    let optional = |name: &str| row.try_get::<Option<String>, _>(name);
    let number = |name: &str| row.try_get::<i64, _>(name).map(count);
    Ok(Tracked {
        id: text("id")?,
        object: Object::parse(&text("object")?),
        owner: text("owner")?,
        key_id: text("key_id")?,
        team_id: optional("team_id")?,
        caller: text("caller")?,
        billing: text("billing")?,
        endpoint: optional("endpoint")?,
        model: optional("model")?,
        output_file_id: optional("output_file_id")?,
        reservation_id: optional("reservation_id")?,
        cursor_lines: number("cursor_lines")?,
        cursor_bytes: number("cursor_bytes")?,
        billed_lines: number("billed_lines")?,
        failed_lines: number("failed_lines")?,
        malformed_lines: number("malformed_lines")?,
        attempts: u32::try_from(number("attempts")?).unwrap_or(u32::MAX),
    })
}

/// What a poll saw: the upstream's status, where billing goes next, and when to poll.
pub struct PollUpdate<'a> {
    pub status: Option<&'a str>,
    pub billing: &'a str,
    pub output_file_id: Option<&'a str>,
    pub attempts: u32,
    pub next_poll_ms: i64,
}

pub async fn update(
    store: &Store,
    id: &str,
    update: &PollUpdate<'_>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let sql = store.sql(
        "UPDATE upstream_objects SET status = coalesce(?, status), billing = ?, \
         output_file_id = coalesce(?, output_file_id), attempts = ?, next_poll_ms = ?, \
         updated_ms = ? WHERE id = ?",
    );
    on_pool!(store, pool => {
        sqlx::query(AssertSqlSafe(sql))
            .bind(update.status)
            .bind(update.billing)
            .bind(update.output_file_id)
            .bind(i64::from(update.attempts))
            .bind(update.next_poll_ms)
            .bind(now_ms)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
    })
}

/// Binds for [`ADVANCE`].
pub fn advance_binds(cursor: &Cursor, now_ms: i64, id: &str) -> Vec<Bind> {
    vec![
        Bind::Int(int(cursor.lines)),
        Bind::Int(int(cursor.bytes)),
        Bind::Int(int(cursor.billed)),
        Bind::Int(int(cursor.failed)),
        Bind::Int(int(cursor.malformed)),
        Bind::Int(now_ms),
        Bind::Text(id.to_owned()),
    ]
}

/// How far a batch's output has been billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub lines: u64,
    pub bytes: u64,
    pub billed: u64,
    pub failed: u64,
    pub malformed: u64,
}

impl Cursor {
    pub fn of(tracked: &Tracked) -> Self {
        Self {
            lines: tracked.cursor_lines,
            bytes: tracked.cursor_bytes,
            billed: tracked.billed_lines,
            failed: tracked.failed_lines,
            malformed: tracked.malformed_lines,
        }
    }
}
