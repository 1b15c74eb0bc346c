-- Keys, teams, budgets and the hourly rollups that keep reports and budget checks fast.
-- Column meanings are documented in migrations/sqlite/0002_keys_teams_budgets.sql.

CREATE TABLE IF NOT EXISTS teams (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    tier            TEXT,
    budget_micros   BIGINT,
    budget_period   TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id              TEXT PRIMARY KEY NOT NULL,
    team_id         TEXT NOT NULL REFERENCES teams (id),
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    secret_hash     TEXT NOT NULL UNIQUE,
    tier            TEXT,
    rpm             BIGINT,
    tpm             BIGINT,
    rpd             BIGINT,
    budget_micros   BIGINT,
    budget_period   TEXT,
    allowed_models  TEXT,
    expires_ms      BIGINT,
    revoked_ms      BIGINT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE IF NOT EXISTS auth_epoch (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    epoch   BIGINT NOT NULL
);
INSERT INTO auth_epoch (id, epoch) VALUES (1, 0) ON CONFLICT DO NOTHING;

ALTER TABLE requests ADD COLUMN IF NOT EXISTS key_id TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS team_id TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'realtime';

CREATE TABLE IF NOT EXISTS spend_hourly (
    hour_ms             BIGINT NOT NULL,
    team_id             TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    kind                TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    prompt_tokens       BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    completion_tokens   BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_pico           BIGINT NOT NULL,
    unpriced            BIGINT NOT NULL,
    unpriced_tokens     BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, team_id, key_id, model, kind)
);
CREATE INDEX IF NOT EXISTS spend_hourly_key ON spend_hourly (key_id, hour_ms);
CREATE INDEX IF NOT EXISTS spend_hourly_team ON spend_hourly (team_id, hour_ms);

CREATE TABLE IF NOT EXISTS budget_reservations (
    id              TEXT PRIMARY KEY NOT NULL,
    key_id          TEXT NOT NULL,
    team_id         TEXT,
    amount_pico     BIGINT NOT NULL,
    ts_ms           BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_reservations_key ON budget_reservations (key_id, ts_ms);
CREATE INDEX IF NOT EXISTS budget_reservations_team ON budget_reservations (team_id, ts_ms);

CREATE TABLE IF NOT EXISTS budget_alerts (
    scope           TEXT NOT NULL,
    scope_id        TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    level           TEXT NOT NULL,
    ts_ms           BIGINT NOT NULL,
    PRIMARY KEY (scope, scope_id, period_start_ms, level)
);

-- Adds a set of request rows (a transition table) to the rollups, aggregated first:
-- one upsert per group per statement, not one per row.
CREATE OR REPLACE FUNCTION tollgate_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spend_hourly
    SELECT ts_ms - ts_ms % 3600000, coalesce(team_id, ''), coalesce(key_id, caller),
           coalesce(priced_model, model_answered, model_requested, ''), kind,
           count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
           sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
           coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
    FROM new_rows
    GROUP BY 1, 2, 3, 4, 5
    -- A fixed order takes the rollup rows' locks in the same order in every writer, so
    -- two replicas flushing at once cannot deadlock.
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (hour_ms, team_id, key_id, model, kind) DO UPDATE SET
        requests = spend_hourly.requests + excluded.requests,
        prompt_tokens = spend_hourly.prompt_tokens + excluded.prompt_tokens,
        cached_tokens = spend_hourly.cached_tokens + excluded.cached_tokens,
        completion_tokens = spend_hourly.completion_tokens + excluded.completion_tokens,
        reasoning_tokens = spend_hourly.reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = spend_hourly.cost_pico + excluded.cost_pico,
        unpriced = spend_hourly.unpriced + excluded.unpriced,
        unpriced_tokens = spend_hourly.unpriced_tokens + excluded.unpriced_tokens;
    -- The rows settle their budget reservations in the same transaction.
    DELETE FROM budget_reservations r USING new_rows n WHERE r.id = n.id;
    RETURN NULL;
END;
$$;

-- Moves updated rows' old figures out of the rollups; the add function puts the new
-- ones in.
CREATE OR REPLACE FUNCTION tollgate_rollup_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE spend_hourly s SET
        requests = s.requests - o.requests,
        prompt_tokens = s.prompt_tokens - o.prompt_tokens,
        cached_tokens = s.cached_tokens - o.cached_tokens,
        completion_tokens = s.completion_tokens - o.completion_tokens,
        reasoning_tokens = s.reasoning_tokens - o.reasoning_tokens,
        cost_pico = s.cost_pico - o.cost_pico,
        unpriced = s.unpriced - o.unpriced,
        unpriced_tokens = s.unpriced_tokens - o.unpriced_tokens
    FROM (
        SELECT ts_ms - ts_ms % 3600000 AS hour_ms, coalesce(team_id, '') AS team_id,
               coalesce(key_id, caller) AS key_id,
               coalesce(priced_model, model_answered, model_requested, '') AS model, kind,
               count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
               sum(cached_tokens) AS cached_tokens, sum(completion_tokens) AS completion_tokens,
               sum(reasoning_tokens) AS reasoning_tokens,
               coalesce(sum(cost_pico), 0) AS cost_pico, count(*) - count(cost_pico) AS unpriced,
               coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
                   AS unpriced_tokens
        FROM old_rows GROUP BY 1, 2, 3, 4, 5
    ) o
    WHERE s.hour_ms = o.hour_ms AND s.team_id = o.team_id AND s.key_id = o.key_id
      AND s.model = o.model AND s.kind = o.kind;
    RETURN NULL;
END;
$$;

INSERT INTO spend_hourly
SELECT ts_ms - ts_ms % 3600000, coalesce(team_id, ''), coalesce(key_id, caller),
       coalesce(priced_model, model_answered, model_requested, ''), kind,
       count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
       sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
       coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
FROM requests
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT DO NOTHING;

DROP TRIGGER IF EXISTS requests_rollup_insert ON requests;
CREATE TRIGGER requests_rollup_insert AFTER INSERT ON requests
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_rollup_add();

-- Statement triggers run in creation order: the old figures go out first.
DROP TRIGGER IF EXISTS requests_rollup_update_a ON requests;
CREATE TRIGGER requests_rollup_update_a AFTER UPDATE ON requests
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_rollup_move();
DROP TRIGGER IF EXISTS requests_rollup_update_b ON requests;
CREATE TRIGGER requests_rollup_update_b AFTER UPDATE ON requests
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_rollup_add();
