-- Routing: aliases, fallbacks, budget downgrades and shadow comparisons. Columns only
-- (ALTER TABLE ADD COLUMN): the rollup triggers are untouched, and shadow rows are kept
-- out of budgets and spend reports by their `kind` ('shadow'), already a rollup
-- dimension.

-- The alias the client sent (`[[routes]] alias`), when one chose the model;
-- model_requested is then the target's model.
ALTER TABLE requests ADD COLUMN model_alias TEXT;
-- The upstream call's number within its request, from 1. A request that fell back has
-- a row per call: the answer the client got keeps the request's row id, each earlier
-- attempt is `<row id>.<attempt>`.
ALTER TABLE requests ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
-- The model asked for, when a budget downgrade (`[[downgrades]]`) served another.
ALTER TABLE requests ADD COLUMN downgraded_from TEXT;
-- On shadow rows: the id of the row whose request was mirrored, and whether the
-- candidate's answer matched it exactly (first choice's text and tool calls) and by
-- parsed value (JSON and tool-call answers; NULL when the answer was neither).
ALTER TABLE requests ADD COLUMN shadow_of TEXT;
ALTER TABLE requests ADD COLUMN shadow_text_match INTEGER;
ALTER TABLE requests ADD COLUMN shadow_value_match INTEGER;

-- The shadow report reads only shadow rows, by time.
CREATE INDEX IF NOT EXISTS requests_shadow_ts ON requests (ts_ms) WHERE kind = 'shadow';
