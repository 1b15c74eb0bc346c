-- One row per metered request, success or failure.
CREATE TABLE IF NOT EXISTS requests (
    -- tollgate's own id for the row, unique even when clients reuse x-request-id;
    -- a replayed row with the same id is ignored, never counted twice.
    id                  TEXT PRIMARY KEY NOT NULL,
    -- x-request-id as the client saw it (its own, or minted by tollgate).
    request_id          TEXT NOT NULL,
    -- The upstream's own request id, for support tickets with the provider.
    upstream_request_id TEXT,
    -- Unix epoch milliseconds (UTC) when the request arrived.
    ts_ms               INTEGER NOT NULL,
    -- Who called: until keys exist, `fp:` + a short SHA-256 prefix of the bearer.
    caller              TEXT NOT NULL,
    upstream            TEXT NOT NULL,
    endpoint            TEXT NOT NULL,
    model_requested     TEXT,
    model_answered      TEXT,
    streamed            INTEGER NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    -- 'upstream' (reported by the provider) or 'estimated' (counted by tollgate).
    usage_source        TEXT NOT NULL,
    -- HTTP status the client received (0 if it left before any).
    status              INTEGER NOT NULL,
    -- How the exchange ended: ok, upstream_error, upstream_unreachable, upstream_timeout,
    -- upstream_cut, client_disconnected.
    outcome             TEXT NOT NULL,
    latency_ms          INTEGER NOT NULL,
    -- Time to the upstream's first body byte; NULL when none arrived.
    ttfb_ms             INTEGER,
    -- What the request cost, in pico-USD (1e-12 USD): tokens x rates, exact. NULL means
    -- unpriced (no catalog entry for the model), never $0; `tollgate prices reprice`
    -- fills it in once the model is priced.
    cost_pico           INTEGER,
    -- The catalog entry and variant used (standard, batch, fine_tuned, fine_tuned_batch).
    priced_model        TEXT,
    price_variant       TEXT,
    -- The unit prices charged, in micro-USD per 1M tokens, so a later price change
    -- never rewrites history.
    input_rate          INTEGER,
    cached_input_rate   INTEGER,
    output_rate         INTEGER
);

CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_ms);
CREATE INDEX IF NOT EXISTS requests_caller_ts ON requests (caller, ts_ms);
-- Finds the unpriced rows of a model for a reprice.
CREATE INDEX IF NOT EXISTS requests_unpriced ON requests (model_requested, ts_ms) WHERE cost_pico IS NULL;
