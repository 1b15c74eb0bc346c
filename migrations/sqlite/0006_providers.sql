-- Providers: which kind of upstream served each row (openai, azure, anthropic, gemini,
-- openai_compatible), the prompt tokens written to a provider's cache (billed at their
-- own rate), the rate they were charged at, and the tokenizer that counted an
-- estimated row; and the provider as a rollup dimension, the way 0005 added
-- service_tier (that file explains the rebuild: tables with the key widened, triggers
-- dropped and created again with the column in their four places).

-- NULL on rows recorded before this migration: they were all OpenAI-shaped upstreams,
-- and the rollups key them as 'openai'.
ALTER TABLE requests ADD COLUMN provider TEXT;
-- Prompt tokens written to the provider's prompt cache (Anthropic's
-- cache_creation_input_tokens). A subset of prompt_tokens, apart from cached_tokens.
ALTER TABLE requests ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
-- The cache-write rate charged, micro-USD per 1M tokens (NULL when unpriced).
ALTER TABLE requests ADD COLUMN cache_write_rate INTEGER;
-- On estimated rows: the tokenizer that counted them, e.g. 'o200k_base', or
-- 'o200k_base (approximation)' for a provider whose own tokenizer is not tiktoken's.
ALTER TABLE requests ADD COLUMN tokenizer TEXT;

DROP TRIGGER IF EXISTS requests_rollup_insert;
DROP TRIGGER IF EXISTS requests_rollup_update;
DROP TRIGGER IF EXISTS requests_rollup_daily_insert;
DROP TRIGGER IF EXISTS requests_rollup_daily_update;

-- Every existing request row was served by an upstream spoken to as OpenAI (provider
-- NULL, which the triggers key as 'openai'): the old rollup rows carry over exactly.
CREATE TABLE spend_hourly_next (
    hour_ms             INTEGER NOT NULL,
    team_id             TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    kind                TEXT NOT NULL,
    service_tier        TEXT NOT NULL,
    provider            TEXT NOT NULL,
    requests            INTEGER NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_pico           INTEGER NOT NULL,
    unpriced            INTEGER NOT NULL,
    unpriced_tokens     INTEGER NOT NULL,
    PRIMARY KEY (hour_ms, team_id, key_id, model, kind, service_tier, provider)
);
INSERT INTO spend_hourly_next (hour_ms, team_id, key_id, model, kind, service_tier, provider,
    requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    cost_pico, unpriced, unpriced_tokens)
SELECT hour_ms, team_id, key_id, model, kind, service_tier, 'openai',
    requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    cost_pico, unpriced, unpriced_tokens
FROM spend_hourly;
DROP TABLE spend_hourly;
ALTER TABLE spend_hourly_next RENAME TO spend_hourly;
CREATE INDEX IF NOT EXISTS spend_hourly_key ON spend_hourly (key_id, hour_ms);
CREATE INDEX IF NOT EXISTS spend_hourly_team ON spend_hourly (team_id, hour_ms);

CREATE TABLE spend_daily_next (
    day_ms              INTEGER NOT NULL,
    team_id             TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    kind                TEXT NOT NULL,
    service_tier        TEXT NOT NULL,
    provider            TEXT NOT NULL,
    requests            INTEGER NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_pico           INTEGER NOT NULL,
    unpriced            INTEGER NOT NULL,
    unpriced_tokens     INTEGER NOT NULL,
    PRIMARY KEY (day_ms, team_id, key_id, model, kind, service_tier, provider)
);
INSERT INTO spend_daily_next (day_ms, team_id, key_id, model, kind, service_tier, provider,
    requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    cost_pico, unpriced, unpriced_tokens)
SELECT day_ms, team_id, key_id, model, kind, service_tier, 'openai',
    requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    cost_pico, unpriced, unpriced_tokens
FROM spend_daily;
DROP TABLE spend_daily;
ALTER TABLE spend_daily_next RENAME TO spend_daily;
CREATE INDEX IF NOT EXISTS spend_daily_key ON spend_daily (key_id, day_ms);
CREATE INDEX IF NOT EXISTS spend_daily_team ON spend_daily (team_id, day_ms);

CREATE TRIGGER requests_rollup_insert AFTER INSERT ON requests
BEGIN
    INSERT INTO spend_hourly (hour_ms, team_id, key_id, model, kind, service_tier, provider,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 3600000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''), coalesce(NEW.provider, 'openai'),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (hour_ms, team_id, key_id, model, kind, service_tier, provider) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
    -- The row settles its budget reservation in the same transaction.
    DELETE FROM budget_reservations WHERE id = NEW.id;
END;

CREATE TRIGGER requests_rollup_update AFTER UPDATE ON requests
BEGIN
    UPDATE spend_hourly SET
        requests = requests - 1,
        prompt_tokens = prompt_tokens - OLD.prompt_tokens,
        cached_tokens = cached_tokens - OLD.cached_tokens,
        completion_tokens = completion_tokens - OLD.completion_tokens,
        reasoning_tokens = reasoning_tokens - OLD.reasoning_tokens,
        cost_pico = cost_pico - coalesce(OLD.cost_pico, 0),
        unpriced = unpriced - (OLD.cost_pico IS NULL),
        unpriced_tokens = unpriced_tokens
            - CASE WHEN OLD.cost_pico IS NULL THEN OLD.prompt_tokens + OLD.completion_tokens ELSE 0 END
    WHERE hour_ms = OLD.ts_ms - OLD.ts_ms % 3600000 AND team_id = coalesce(OLD.team_id, '')
      AND key_id = coalesce(OLD.key_id, OLD.caller)
      AND model = coalesce(OLD.priced_model, OLD.model_answered, OLD.model_requested, '')
      AND kind = OLD.kind
      AND service_tier = coalesce(OLD.service_tier, '')
      AND provider = coalesce(OLD.provider, 'openai');
    INSERT INTO spend_hourly (hour_ms, team_id, key_id, model, kind, service_tier, provider,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 3600000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''), coalesce(NEW.provider, 'openai'),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (hour_ms, team_id, key_id, model, kind, service_tier, provider) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;

CREATE TRIGGER requests_rollup_daily_insert AFTER INSERT ON requests
BEGIN
    INSERT INTO spend_daily (day_ms, team_id, key_id, model, kind, service_tier, provider,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 86400000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''), coalesce(NEW.provider, 'openai'),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (day_ms, team_id, key_id, model, kind, service_tier, provider) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;

CREATE TRIGGER requests_rollup_daily_update AFTER UPDATE ON requests
BEGIN
    UPDATE spend_daily SET
        requests = requests - 1,
        prompt_tokens = prompt_tokens - OLD.prompt_tokens,
        cached_tokens = cached_tokens - OLD.cached_tokens,
        completion_tokens = completion_tokens - OLD.completion_tokens,
        reasoning_tokens = reasoning_tokens - OLD.reasoning_tokens,
        cost_pico = cost_pico - coalesce(OLD.cost_pico, 0),
        unpriced = unpriced - (OLD.cost_pico IS NULL),
        unpriced_tokens = unpriced_tokens
            - CASE WHEN OLD.cost_pico IS NULL THEN OLD.prompt_tokens + OLD.completion_tokens ELSE 0 END
    WHERE day_ms = OLD.ts_ms - OLD.ts_ms % 86400000 AND team_id = coalesce(OLD.team_id, '')
      AND key_id = coalesce(OLD.key_id, OLD.caller)
      AND model = coalesce(OLD.priced_model, OLD.model_answered, OLD.model_requested, '')
      AND kind = OLD.kind
      AND service_tier = coalesce(OLD.service_tier, '')
      AND provider = coalesce(OLD.provider, 'openai');
    INSERT INTO spend_daily (day_ms, team_id, key_id, model, kind, service_tier, provider,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 86400000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''), coalesce(NEW.provider, 'openai'),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (day_ms, team_id, key_id, model, kind, service_tier, provider) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;
