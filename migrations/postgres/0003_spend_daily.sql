-- Per UTC day: spend_hourly summed by day, so reports over months read ~24x fewer rows.
-- Documented in migrations/sqlite/0003_spend_daily.sql.

CREATE TABLE IF NOT EXISTS spend_daily (
    day_ms              BIGINT NOT NULL,
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
    PRIMARY KEY (day_ms, team_id, key_id, model, kind)
);
CREATE INDEX IF NOT EXISTS spend_daily_key ON spend_daily (key_id, day_ms);
CREATE INDEX IF NOT EXISTS spend_daily_team ON spend_daily (team_id, day_ms);

-- As tollgate_rollup_add, at day grain.
CREATE OR REPLACE FUNCTION tollgate_rollup_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spend_daily
    SELECT ts_ms - ts_ms % 86400000, coalesce(team_id, ''), coalesce(key_id, caller),
           coalesce(priced_model, model_answered, model_requested, ''), kind,
           count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
           sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
           coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
    FROM new_rows
    GROUP BY 1, 2, 3, 4, 5
    -- The same lock order in every writer, as in tollgate_rollup_add.
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (day_ms, team_id, key_id, model, kind) DO UPDATE SET
        requests = spend_daily.requests + excluded.requests,
        prompt_tokens = spend_daily.prompt_tokens + excluded.prompt_tokens,
        cached_tokens = spend_daily.cached_tokens + excluded.cached_tokens,
        completion_tokens = spend_daily.completion_tokens + excluded.completion_tokens,
        reasoning_tokens = spend_daily.reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = spend_daily.cost_pico + excluded.cost_pico,
        unpriced = spend_daily.unpriced + excluded.unpriced,
        unpriced_tokens = spend_daily.unpriced_tokens + excluded.unpriced_tokens;
    RETURN NULL;
END;
$$;

-- As tollgate_rollup_move, at day grain.
CREATE OR REPLACE FUNCTION tollgate_rollup_daily_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE spend_daily s SET
        requests = s.requests - o.requests,
        prompt_tokens = s.prompt_tokens - o.prompt_tokens,
        cached_tokens = s.cached_tokens - o.cached_tokens,
        completion_tokens = s.completion_tokens - o.completion_tokens,
        reasoning_tokens = s.reasoning_tokens - o.reasoning_tokens,
        cost_pico = s.cost_pico - o.cost_pico,
        unpriced = s.unpriced - o.unpriced,
        unpriced_tokens = s.unpriced_tokens - o.unpriced_tokens
    FROM (
        SELECT ts_ms - ts_ms % 86400000 AS day_ms, coalesce(team_id, '') AS team_id,
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
    WHERE s.day_ms = o.day_ms AND s.team_id = o.team_id AND s.key_id = o.key_id
      AND s.model = o.model AND s.kind = o.kind;
    RETURN NULL;
END;
$$;

-- Triggers before the backfill: creating one locks out inserts until this migration
-- commits, so no row can land between the backfill's read and the trigger.
DROP TRIGGER IF EXISTS requests_rollup_daily_insert ON requests;
CREATE TRIGGER requests_rollup_daily_insert AFTER INSERT ON requests
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_rollup_daily_add();
-- Postgres fires a table's triggers for one event in name order: _c moves the old
-- figures out, then _d puts the new ones in, after 0002's _a and _b.
DROP TRIGGER IF EXISTS requests_rollup_update_c ON requests;
CREATE TRIGGER requests_rollup_update_c AFTER UPDATE ON requests
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_rollup_daily_move();
DROP TRIGGER IF EXISTS requests_rollup_update_d ON requests;
CREATE TRIGGER requests_rollup_update_d AFTER UPDATE ON requests
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_rollup_daily_add();

-- The hourly rollups already equal the rows; summing them by day is exact.
INSERT INTO spend_daily
SELECT hour_ms - hour_ms % 86400000, team_id, key_id, model, kind,
       sum(requests), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
       sum(reasoning_tokens), sum(cost_pico), sum(unpriced), sum(unpriced_tokens)
FROM spend_hourly
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT DO NOTHING;
