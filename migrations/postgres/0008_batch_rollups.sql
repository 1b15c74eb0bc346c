-- Nothing changes on Postgres: its rollup triggers already run once per statement over
-- the inserted rows (a transition table), which is what SQLite's writer now does by hand
-- (migrations/sqlite/0008_batch_rollups.sql). Kept so both backends' lists stay equal.
SELECT 1;
