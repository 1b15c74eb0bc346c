-- Service tiers: the requested and served tier of each row, and the served tier as a
-- rollup dimension. Columns as in migrations/sqlite/0005_service_tiers.sql, which
-- documents each one.

ALTER TABLE requests ADD COLUMN IF NOT EXISTS service_tier_requested TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS service_tier TEXT;

-- How the rollups are kept on Postgres (0002 and 0003 set it up):
--
-- * spend_hourly and spend_daily, keyed by their time and the dimensions team_id,
--   key_id, model, kind and, from here, service_tier.
-- * Four plpgsql functions, run by statement triggers on requests with transition
--   tables: tollgate_rollup_add / tollgate_rollup_daily_add sum a statement's new rows
--   per key and upsert them (the hourly one also settles budget reservations);
--   tollgate_rollup_move / tollgate_rollup_daily_move subtract an UPDATE's old rows.
--   Triggers fire in name order: on UPDATE _a (hourly move), _b (hourly add),
--   _c (daily move), _d (daily add).
-- * Each dimension appears in a function as: its expression over the transition table
--   (coalesce(service_tier, '') here) in the SELECT, a position in GROUP BY and ORDER BY
--   (the fixed lock order that keeps concurrent writers from deadlocking), a column in
--   the ON CONFLICT target, and, in *_move, a named column of the subquery matched in
--   the WHERE.
--
-- Adding a dimension (provider, say): add the column to both tables with the default
-- its existing request rows would give it, move the primary key onto it, and replace
-- the four functions with the column in those places. The triggers name the functions,
-- so they stay as they are. Postgres changes the key in place: every existing rollup
-- row keeps its figures and gets service_tier '' (every existing request row has
-- service_tier NULL, which the functions key as '').

ALTER TABLE spend_hourly ADD COLUMN IF NOT EXISTS service_tier TEXT NOT NULL DEFAULT '';
ALTER TABLE spend_hourly DROP CONSTRAINT IF EXISTS spend_hourly_pkey;
ALTER TABLE spend_hourly ADD PRIMARY KEY (hour_ms, team_id, key_id, model, kind, service_tier);
ALTER TABLE spend_daily ADD COLUMN IF NOT EXISTS service_tier TEXT NOT NULL DEFAULT '';
ALTER TABLE spend_daily DROP CONSTRAINT IF EXISTS spend_daily_pkey;
ALTER TABLE spend_daily ADD PRIMARY KEY (day_ms, team_id, key_id, model, kind, service_tier);

CREATE OR REPLACE FUNCTION tollgate_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spend_hourly (hour_ms, team_id, key_id, model, kind, service_tier,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    SELECT ts_ms - ts_ms % 3600000, coalesce(team_id, ''), coalesce(key_id, caller),
           coalesce(priced_model, model_answered, model_requested, ''), kind,
           coalesce(service_tier, ''),
           count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
           sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
           coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
    FROM new_rows
    GROUP BY 1, 2, 3, 4, 5, 6
    -- A fixed order takes the rollup rows' locks in the same order in every writer, so
    -- two replicas flushing at once cannot deadlock.
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (hour_ms, team_id, key_id, model, kind, service_tier) DO UPDATE SET
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
               coalesce(service_tier, '') AS service_tier,
               count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
               sum(cached_tokens) AS cached_tokens, sum(completion_tokens) AS completion_tokens,
               sum(reasoning_tokens) AS reasoning_tokens,
               coalesce(sum(cost_pico), 0) AS cost_pico, count(*) - count(cost_pico) AS unpriced,
               coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
                   AS unpriced_tokens
        FROM old_rows GROUP BY 1, 2, 3, 4, 5, 6
    ) o
    WHERE s.hour_ms = o.hour_ms AND s.team_id = o.team_id AND s.key_id = o.key_id
      AND s.model = o.model AND s.kind = o.kind AND s.service_tier = o.service_tier;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION tollgate_rollup_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spend_daily (day_ms, team_id, key_id, model, kind, service_tier,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    SELECT ts_ms - ts_ms % 86400000, coalesce(team_id, ''), coalesce(key_id, caller),
           coalesce(priced_model, model_answered, model_requested, ''), kind,
           coalesce(service_tier, ''),
           count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
           sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
           coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
    FROM new_rows
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (day_ms, team_id, key_id, model, kind, service_tier) DO UPDATE SET
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
               coalesce(service_tier, '') AS service_tier,
               count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
               sum(cached_tokens) AS cached_tokens, sum(completion_tokens) AS completion_tokens,
               sum(reasoning_tokens) AS reasoning_tokens,
               coalesce(sum(cost_pico), 0) AS cost_pico, count(*) - count(cost_pico) AS unpriced,
               coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
                   AS unpriced_tokens
        FROM old_rows GROUP BY 1, 2, 3, 4, 5, 6
    ) o
    WHERE s.day_ms = o.day_ms AND s.team_id = o.team_id AND s.key_id = o.key_id
      AND s.model = o.model AND s.kind = o.kind AND s.service_tier = o.service_tier;
    RETURN NULL;
END;
$$;
