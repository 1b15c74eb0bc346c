-- One row per metered request, success or failure. Columns as in
-- migrations/sqlite/0001_requests.sql, which documents each one.
CREATE TABLE IF NOT EXISTS requests (
    id                  TEXT PRIMARY KEY NOT NULL,
    request_id          TEXT NOT NULL,
    upstream_request_id TEXT,
    ts_ms               BIGINT NOT NULL,
    caller              TEXT NOT NULL,
    upstream            TEXT NOT NULL,
    endpoint            TEXT NOT NULL,
    model_requested     TEXT,
    model_answered      TEXT,
    streamed            BOOLEAN NOT NULL,
    prompt_tokens       BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    completion_tokens   BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    usage_source        TEXT NOT NULL,
    status              BIGINT NOT NULL,
    outcome             TEXT NOT NULL,
    latency_ms          BIGINT NOT NULL,
    ttfb_ms             BIGINT,
    -- pico-USD; NULL means unpriced, never $0.
    cost_pico           BIGINT,
    priced_model        TEXT,
    price_variant       TEXT,
    input_rate          BIGINT,
    cached_input_rate   BIGINT,
    output_rate         BIGINT
);

CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_ms);
CREATE INDEX IF NOT EXISTS requests_caller_ts ON requests (caller, ts_ms);
CREATE INDEX IF NOT EXISTS requests_unpriced ON requests (model_requested, ts_ms) WHERE cost_pico IS NULL;
