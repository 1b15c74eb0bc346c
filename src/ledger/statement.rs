//! The text of the ledger's INSERT statements: built once per dialect and size, so a
//! batch binds its rows' values and formats no SQL.

use std::fmt::Write as _;
use std::sync::OnceLock;

use super::LedgerRow;

/// The columns every insert names, in the order `push_row!` binds them.
const INSERT_COLUMNS: &str = "(id, request_id, upstream_request_id, ts_ms, caller, upstream, \
    endpoint, model_requested, model_answered, streamed, prompt_tokens, cached_tokens, \
    completion_tokens, reasoning_tokens, usage_source, status, outcome, latency_ms, ttfb_ms, \
    cost_pico, priced_model, price_variant, input_rate, cached_input_rate, output_rate, \
    key_id, team_id, kind, service_tier_requested, service_tier, model_alias, attempt, \
    downgraded_from, shadow_of, shadow_text_match, shadow_value_match, provider, \
    cache_write_tokens, cache_write_rate, tokenizer)";

/// Values bound per row: one per column above.
pub(super) const COLUMNS: usize = 40;

// Bound parameters per statement are capped (SQLite 32766, Postgres 65535); 40 a row.
const ROWS_PER_STATEMENT: usize = 256;

/// Statement sizes: 1, 2, 4, …, ROWS_PER_STATEMENT rows.
const SIZES: usize = ROWS_PER_STATEMENT.ilog2() as usize + 1;

/// How one backend writes an insert that skips an id it already holds.
pub(super) struct Dialect {
    head: &'static str,
    tail: &'static str,
    /// Postgres numbers its placeholders (`$1`); SQLite takes `?` in order.
    numbered: bool,
    built: [OnceLock<String>; SIZES],
}

pub(super) static SQLITE: Dialect = Dialect::new("INSERT OR IGNORE INTO requests", "", false);
pub(super) static POSTGRES: Dialect =
    Dialect::new("INSERT INTO requests", " ON CONFLICT (id) DO NOTHING", true);

impl Dialect {
    const fn new(head: &'static str, tail: &'static str, numbered: bool) -> Self {
        Self {
            head,
            tail,
            numbered,
            built: [const { OnceLock::new() }; SIZES],
        }
    }

    /// The statement for `rows` rows, a size `power_of_two_chunks` gives.
    pub(super) fn insert(&'static self, rows: usize) -> &'static str {
        debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_STATEMENT);
        let slot = (rows.ilog2() as usize).min(SIZES - 1);
        self.built[slot].get_or_init(|| self.build(1 << slot))
    }

    fn build(&self, rows: usize) -> String {
        let mut sql = format!("{} {} VALUES ", self.head, INSERT_COLUMNS);
        let mut next = 1usize;
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..COLUMNS {
                if column > 0 {
                    sql.push_str(", ");
                }
                if self.numbered {
                    let _ = write!(sql, "${next}");
                } else {
                    sql.push('?');
                }
                next += 1;
            }
            sql.push(')');
        }
        sql.push_str(self.tail);
        sql
    }
}

/// Splits rows into statements of 256, 128, …, 1 rows. sqlx caches one prepared
/// statement per distinct SQL text, so a batch of any size reuses at most nine shapes
/// instead of preparing (and caching) a new one per batch size.
pub(super) fn power_of_two_chunks(rows: &[LedgerRow]) -> impl Iterator<Item = &[LedgerRow]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = if rest.len() >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_has_one_placeholder_per_value_in_its_dialect() {
        let two = POSTGRES.insert(2);
        assert!(two.starts_with("INSERT INTO requests (id, "), "{two}");
        assert!(two.contains(" VALUES ($1, $2, "), "{two}");
        assert!(two.contains("$40), ($41, "), "{two}");
        assert!(two.ends_with("$80) ON CONFLICT (id) DO NOTHING"), "{two}");
        let one = SQLITE.insert(1);
        assert!(one.starts_with("INSERT OR IGNORE INTO requests ("), "{one}");
        assert_eq!(one.matches('?').count(), COLUMNS);
        assert!(one.ends_with("?)"), "{one}");
        let most = SQLITE.insert(ROWS_PER_STATEMENT);
        assert_eq!(most.matches('?').count(), COLUMNS * ROWS_PER_STATEMENT);
        // Built once: the same text each time.
        assert!(std::ptr::eq(SQLITE.insert(4), SQLITE.insert(4)));
        assert_eq!(
            INSERT_COLUMNS.matches(',').count() + 1,
            COLUMNS,
            "a column added to the list needs its value in push_row!"
        );
    }
}
