-- Service tiers: the tier a request asked for and the tier that served it, and the
-- served tier as a dimension of the spend rollups (spend by tier reads them).

-- `service_tier` as the request gave it (a string's text, or other JSON as JSON text,
-- cut to 64 bytes); NULL when it named none.
ALTER TABLE requests ADD COLUMN service_tier_requested TEXT;
-- The tier that served it, which its cost was priced at: the response's service_tier
-- (a stream's last chunk naming one); else the requested tier; else 'default'. NULL on
-- batch and training rows (they bill at batch and training rates) and on rows recorded
-- before this migration.
ALTER TABLE requests ADD COLUMN service_tier TEXT;

-- How the rollups are kept (the layout 0002 and 0003 set up, restated here because a
-- migration adding a dimension has to touch every place below):
--
-- * Two rollup tables, spend_hourly (hour_ms) and spend_daily (day_ms), with the same
--   dimensions after the time: team_id, key_id, model, kind and, from here,
--   service_tier. The dimensions are the primary key; the figures (requests, tokens,
--   cost_pico, unpriced, unpriced_tokens) follow.
-- * Four row triggers on requests, two per table: *_insert adds NEW's figures
--   (requests_rollup_insert also settles the row's budget reservation), *_update
--   subtracts OLD's figures from OLD's key and adds NEW's to NEW's key (a reprice).
-- * Each dimension appears in a trigger as: a column name in the INSERT list, its
--   expression over NEW (for service_tier: coalesce(NEW.service_tier, '')) in VALUES, a
--   column in the ON CONFLICT target, and, in *_update, an `AND column = <expression
--   over OLD>` in the UPDATE's WHERE.
--
-- Adding a dimension (provider, say): rebuild both tables with the column in the key,
-- carrying every row over with the value its existing request rows would give it;
-- drop these four triggers; create them again with the column in those four places.
-- SQLite cannot change a primary key in place, hence the rebuild. The triggers go
-- first, so no trigger ever names a table that is being replaced.

DROP TRIGGER IF EXISTS requests_rollup_insert;
DROP TRIGGER IF EXISTS requests_rollup_update;
DROP TRIGGER IF EXISTS requests_rollup_daily_insert;
DROP TRIGGER IF EXISTS requests_rollup_daily_update;

-- Every existing request row has service_tier NULL, which the triggers key as '': the
-- old rollup rows carry over exactly, each with service_tier ''.
CREATE TABLE spend_hourly_next (
    hour_ms             INTEGER NOT NULL,
    team_id             TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    kind                TEXT NOT NULL,
    service_tier        TEXT NOT NULL,
    requests            INTEGER NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_pico           INTEGER NOT NULL,
    unpriced            INTEGER NOT NULL,
    unpriced_tokens     INTEGER NOT NULL,
    PRIMARY KEY (hour_ms, team_id, key_id, model, kind, service_tier)
);
INSERT INTO spend_hourly_next (hour_ms, team_id, key_id, model, kind, service_tier,
    requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    cost_pico, unpriced, unpriced_tokens)
SELECT hour_ms, team_id, key_id, model, kind, '',
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
    requests            INTEGER NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_pico           INTEGER NOT NULL,
    unpriced            INTEGER NOT NULL,
    unpriced_tokens     INTEGER NOT NULL,
    PRIMARY KEY (day_ms, team_id, key_id, model, kind, service_tier)
);
INSERT INTO spend_daily_next (day_ms, team_id, key_id, model, kind, service_tier,
    requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    cost_pico, unpriced, unpriced_tokens)
SELECT day_ms, team_id, key_id, model, kind, '',
    requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    cost_pico, unpriced, unpriced_tokens
FROM spend_daily;
DROP TABLE spend_daily;
ALTER TABLE spend_daily_next RENAME TO spend_daily;
CREATE INDEX IF NOT EXISTS spend_daily_key ON spend_daily (key_id, day_ms);
CREATE INDEX IF NOT EXISTS spend_daily_team ON spend_daily (team_id, day_ms);

CREATE TRIGGER requests_rollup_insert AFTER INSERT ON requests
BEGIN
    INSERT INTO spend_hourly (hour_ms, team_id, key_id, model, kind, service_tier,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 3600000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (hour_ms, team_id, key_id, model, kind, service_tier) DO UPDATE SET
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
      AND service_tier = coalesce(OLD.service_tier, '');
    INSERT INTO spend_hourly (hour_ms, team_id, key_id, model, kind, service_tier,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 3600000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (hour_ms, team_id, key_id, model, kind, service_tier) DO UPDATE SET
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
    INSERT INTO spend_daily (day_ms, team_id, key_id, model, kind, service_tier,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 86400000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (day_ms, team_id, key_id, model, kind, service_tier) DO UPDATE SET
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
      AND service_tier = coalesce(OLD.service_tier, '');
    INSERT INTO spend_daily (day_ms, team_id, key_id, model, kind, service_tier,
        requests, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
        cost_pico, unpriced, unpriced_tokens)
    VALUES (
        NEW.ts_ms - NEW.ts_ms % 86400000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        coalesce(NEW.service_tier, ''),
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (day_ms, team_id, key_id, model, kind, service_tier) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;
