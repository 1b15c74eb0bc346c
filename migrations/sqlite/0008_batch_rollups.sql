-- The rollups of inserted rows are kept per batch by the writer (src/ledger/sqlite_rollup.rs),
-- in the insert's own transaction, instead of by these per-row triggers: SQLite has no
-- statement-level triggers, and upserting both rollups and deleting the reservation once
-- for every row was a third of SQLite's work per row under load. The writer's statements
-- group and sum exactly as these did. The update triggers (a reprice moving a row's
-- figures) stay: they run rarely and one row at a time.
DROP TRIGGER IF EXISTS requests_rollup_insert;
DROP TRIGGER IF EXISTS requests_rollup_daily_insert;
