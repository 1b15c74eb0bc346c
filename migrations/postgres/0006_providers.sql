-- Providers: the provider column, cache writes, their rate and the tokenizer of an
-- estimated row, and the provider as a rollup dimension. Columns as in
-- migrations/sqlite/0006_providers.sql, which documents each one; the rollup change
-- follows the recipe 0005 gives (the key moved in place, the four functions
-- replaced). Existing rollup rows get provider 'openai', as their request rows do.

ALTER TABLE requests ADD COLUMN IF NOT EXISTS provider TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache_write_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache_write_rate BIGINT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS tokenizer TEXT;

ALTER TABLE spend_hourly ADD COLUMN IF NOT EXISTS provider TEXT NOT NULL DEFAULT 'openai';
ALTER TABLE spend_hourly DROP CONSTRAINT IF EXISTS spend_hourly_pkey;
ALTER TABLE spend_hourly ADD PRIMARY KEY (hour_ms, team_id, key_id, model, kind, service_tier, provider);
ALTER TABLE spend_daily ADD COLUMN IF NOT EXISTS provider TEXT NOT NULL DEFAULT 'openai';
ALTER TABLE spend_daily DROP CONSTRAINT IF EXISTS spend_daily_pkey;
ALTER TABLE spend_daily ADD PRIMARY KEY (day_ms, team_id, key_id, model, kind, service_tier, provider);

CREATE OR REPLACE FUNCTION tollgate_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spend_hourly (hour_ms, team_id, key_id, model, kind, service_tier, provider,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    SELECT ts_ms - ts_ms % 3600000, coalesce(team_id, ''), coalesce(key_id, caller),
           coalesce(priced_model, model_answered, model_requested, ''), kind,
           coalesce(service_tier, ''), coalesce(provider, 'openai'),
           count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
           sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
           coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
    FROM new_rows
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    -- A fixed order takes the rollup rows' locks in the same order in every writer, so
    -- two replicas flushing at once cannot deadlock.
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (hour_ms, team_id, key_id, model, kind, service_tier, provider) DO UPDATE SET
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
               coalesce(provider, 'openai') AS provider,
               count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
               sum(cached_tokens) AS cached_tokens, sum(completion_tokens) AS completion_tokens,
               sum(reasoning_tokens) AS reasoning_tokens,
               coalesce(sum(cost_pico), 0) AS cost_pico, count(*) - count(cost_pico) AS unpriced,
               coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
                   AS unpriced_tokens
        FROM old_rows GROUP BY 1, 2, 3, 4, 5, 6, 7
    ) o
    WHERE s.hour_ms = o.hour_ms AND s.team_id = o.team_id AND s.key_id = o.key_id
      AND s.model = o.model AND s.kind = o.kind AND s.service_tier = o.service_tier
      AND s.provider = o.provider;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION tollgate_rollup_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spend_daily (day_ms, team_id, key_id, model, kind, service_tier, provider,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    SELECT ts_ms - ts_ms % 86400000, coalesce(team_id, ''), coalesce(key_id, caller),
           coalesce(priced_model, model_answered, model_requested, ''), kind,
           coalesce(service_tier, ''), coalesce(provider, 'openai'),
           count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
           sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
           coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
    FROM new_rows
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (day_ms, team_id, key_id, model, kind, service_tier, provider) DO UPDATE SET
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
               coalesce(provider, 'openai') AS provider,
               count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
               sum(cached_tokens) AS cached_tokens, sum(completion_tokens) AS completion_tokens,
               sum(reasoning_tokens) AS reasoning_tokens,
               coalesce(sum(cost_pico), 0) AS cost_pico, count(*) - count(cost_pico) AS unpriced,
               coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
                   AS unpriced_tokens
        FROM old_rows GROUP BY 1, 2, 3, 4, 5, 6, 7
    ) o
    WHERE s.day_ms = o.day_ms AND s.team_id = o.team_id AND s.key_id = o.key_id
      AND s.model = o.model AND s.kind = o.kind AND s.service_tier = o.service_tier
      AND s.provider = o.provider;
    RETURN NULL;
END;
$$;
