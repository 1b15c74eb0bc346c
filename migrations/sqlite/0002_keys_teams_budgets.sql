-- Keys, teams, budgets and the hourly rollups that keep reports and budget checks fast.

CREATE TABLE IF NOT EXISTS teams (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    -- Usage tier name (free, tier-1 … tier-5, or a custom tier from the config).
    tier            TEXT,
    -- Budget in micro-USD (1e-6 USD); NULL means none.
    budget_micros   INTEGER,
    -- daily, weekly, monthly or total (UTC calendar periods).
    budget_period   TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id              TEXT PRIMARY KEY NOT NULL,
    team_id         TEXT NOT NULL REFERENCES teams (id),
    name            TEXT NOT NULL,
    -- The first characters of the secret, safe to show: `tg-AbCd1234`.
    prefix          TEXT NOT NULL,
    -- Hex SHA-256 of the whole secret; the secret itself is never stored.
    secret_hash     TEXT NOT NULL UNIQUE,
    tier            TEXT,
    rpm             INTEGER,
    tpm             INTEGER,
    rpd             INTEGER,
    budget_micros   INTEGER,
    budget_period   TEXT,
    -- JSON array of model names or globs; NULL allows every model.
    allowed_models  TEXT,
    expires_ms      INTEGER,
    revoked_ms      INTEGER,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    UNIQUE (team_id, name)
);

-- Bumped in the same transaction as every change to keys or teams; replicas poll it
-- and reload their key cache when it moves.
CREATE TABLE IF NOT EXISTS auth_epoch (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   INTEGER NOT NULL
);
INSERT OR IGNORE INTO auth_epoch (id, epoch) VALUES (1, 0);

-- Who paid: the tollgate key's id (or the caller's fingerprint in passthrough mode)
-- and its team. NULL on rows recorded before keys existed.
ALTER TABLE requests ADD COLUMN key_id TEXT;
ALTER TABLE requests ADD COLUMN team_id TEXT;
-- realtime, batch or training.
ALTER TABLE requests ADD COLUMN kind TEXT NOT NULL DEFAULT 'realtime';

-- Per hour, key, team, model and kind: what reports and budget checks read instead of
-- scanning requests. Kept by the triggers below in the same transaction as the rows,
-- so it never disagrees with them; a replayed row (ignored insert) fires nothing.
CREATE TABLE IF NOT EXISTS spend_hourly (
    hour_ms             INTEGER NOT NULL,
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
    PRIMARY KEY (hour_ms, team_id, key_id, model, kind)
);
CREATE INDEX IF NOT EXISTS spend_hourly_key ON spend_hourly (key_id, hour_ms);
CREATE INDEX IF NOT EXISTS spend_hourly_team ON spend_hourly (team_id, hour_ms);

INSERT INTO spend_hourly
SELECT ts_ms - ts_ms % 3600000, coalesce(team_id, ''), coalesce(key_id, caller),
       coalesce(priced_model, model_answered, model_requested, ''), kind,
       count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),
       sum(reasoning_tokens), coalesce(sum(cost_pico), 0), count(*) - count(cost_pico),
       coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0)
FROM requests
GROUP BY 1, 2, 3, 4, 5;

CREATE TRIGGER IF NOT EXISTS requests_rollup_insert AFTER INSERT ON requests
BEGIN
    INSERT INTO spend_hourly VALUES (
        NEW.ts_ms - NEW.ts_ms % 3600000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (hour_ms, team_id, key_id, model, kind) DO UPDATE SET
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

-- A reprice (or any correction) moves the row's old figures out and its new ones in.
CREATE TRIGGER IF NOT EXISTS requests_rollup_update AFTER UPDATE ON requests
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
      AND kind = OLD.kind;
    INSERT INTO spend_hourly VALUES (
        NEW.ts_ms - NEW.ts_ms % 3600000, coalesce(NEW.team_id, ''),
        coalesce(NEW.key_id, NEW.caller),
        coalesce(NEW.priced_model, NEW.model_answered, NEW.model_requested, ''), NEW.kind,
        1, NEW.prompt_tokens, NEW.cached_tokens, NEW.completion_tokens,
        NEW.reasoning_tokens, coalesce(NEW.cost_pico, 0), NEW.cost_pico IS NULL,
        CASE WHEN NEW.cost_pico IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END)
    ON CONFLICT (hour_ms, team_id, key_id, model, kind) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_pico = cost_pico + excluded.cost_pico,
        unpriced = unpriced + excluded.unpriced,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;

-- Budget reservations: the estimated cost of each admitted request that has not yet
-- been recorded. Its id is the ledger row id it becomes; the insert trigger deletes it.
-- A reservation whose replica died lapses at expires_ms.
CREATE TABLE IF NOT EXISTS budget_reservations (
    id              TEXT PRIMARY KEY NOT NULL,
    key_id          TEXT NOT NULL,
    team_id         TEXT,
    amount_pico     INTEGER NOT NULL,
    ts_ms           INTEGER NOT NULL,
    expires_ms      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_reservations_key ON budget_reservations (key_id, ts_ms);
CREATE INDEX IF NOT EXISTS budget_reservations_team ON budget_reservations (team_id, ts_ms);

-- One row per budget threshold crossed per period: the replica whose insert lands is
-- the one that logs and calls the webhook, so it happens once across replicas.
CREATE TABLE IF NOT EXISTS budget_alerts (
    scope           TEXT NOT NULL,
    scope_id        TEXT NOT NULL,
    period_start_ms INTEGER NOT NULL,
    level           TEXT NOT NULL,
    ts_ms           INTEGER NOT NULL,
    PRIMARY KEY (scope, scope_id, period_start_ms, level)
);
