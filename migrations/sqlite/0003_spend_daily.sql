-- Per UTC day, key, team, model and kind: spend_hourly summed by day. A report over
-- months otherwise reads every hourly row: 90 days of 20 keys x 6 models is 259,200 of
-- them, ~150 ms of CPU to sum in SQLite before any grouping; by day it is 10,800.
-- Reports read whole days here and the hours at either end of a range from
-- spend_hourly. Kept by the triggers below, in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS spend_daily (
    -- Unix ms of the UTC day's start.
    day_ms              INTEGER NOT NULL,
    team_id             TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    kind                TEXT NOT NULL,
    requests            INTEGER NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_pico           INTEGER NOT NULL,
    unpriced            INTEGER NOT NULL,
    unpriced_tokens     INTEGER NOT NULL,
    PRIMARY KEY (day_ms, team_id, key_id, model, kind)
);
CREATE INDEX IF NOT EXISTS spend_daily_key ON spend_daily (key_id, day_ms);
CREATE INDEX IF NOT EXISTS spend_daily_team ON spend_daily (team_id, day_ms);

-- The hourly rollups already equal the rows; summing them by day is exact.
INSERT INTO spend_daily
SELECT hour_ms - hour_ms % 86400000, team_id, key_id, model, kind,
       sum(requests), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
       sum(reasoning_tokens), sum(cost_pico), sum(unpriced), sum(unpriced_tokens)
FROM spend_hourly
GROUP BY 1, 2, 3, 4, 5;

-- The same figures as requests_rollup_insert puts in spend_hourly, at day grain.
CREATE TRIGGER IF NOT EXISTS requests_rollup_daily_insert AFTER INSERT ON requests
BEGIN
    INSERT INTO spend_daily VALUES (
        NEW.ts_ms - NEW.ts_ms % 86400000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (day_ms, team_id, key_id, model, kind) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;

-- A reprice moves the row's old figures out and its new ones in, as for spend_hourly.
CREATE TRIGGER IF NOT EXISTS requests_rollup_daily_update AFTER UPDATE ON requests
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
      AND kind = OLD.kind;
    INSERT INTO spend_daily VALUES (
        NEW.ts_ms - NEW.ts_ms % 86400000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (day_ms, team_id, key_id, model, kind) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;
