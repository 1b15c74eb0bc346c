-- Routing: aliases, fallbacks, budget downgrades and shadow comparisons. Columns as in
-- migrations/sqlite/0007_routing.sql, which documents each one. Columns only: the
-- rollup triggers are untouched; shadow rows are kept out of budgets and spend reports
-- by their `kind` ('shadow').
ALTER TABLE requests ADD COLUMN IF NOT EXISTS model_alias TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS attempt BIGINT NOT NULL DEFAULT 1;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS downgraded_from TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS shadow_of TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS shadow_text_match BOOLEAN;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS shadow_value_match BOOLEAN;

CREATE INDEX IF NOT EXISTS requests_shadow_ts ON requests (ts_ms) WHERE kind = 'shadow';
