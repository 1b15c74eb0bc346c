-- Files, batches and fine-tuning jobs created through tollgate: who owns each one (only
-- the owner may see, download or cancel it), and, for batches and jobs, where billing
-- stands. The poller reads and advances these rows, so tracking survives restarts.
CREATE TABLE IF NOT EXISTS upstream_objects (
    -- The upstream's id (file-…, batch_…, ftjob-…); `pending:<uuid>` while a batch
    -- create is being admitted and forwarded.
    id               TEXT PRIMARY KEY NOT NULL,
    -- file, batch or fine_tuning.job.
    object           TEXT NOT NULL,
    -- Who may use it: the team's id in keys mode, the caller's fingerprint in
    -- passthrough mode.
    owner            TEXT NOT NULL,
    -- Who pays for it: the creating key (or fingerprint), its team, and its display.
    key_id           TEXT NOT NULL,
    team_id          TEXT,
    caller           TEXT NOT NULL,
    created_ms       BIGINT NOT NULL,
    -- The upstream's last-seen status (validating, in_progress, completed, …).
    status           TEXT,
    -- Billing: none (files), tracking (waiting for a terminal status), billing (reading
    -- the output), billed, lost (the upstream no longer knows it).
    billing          TEXT NOT NULL,
    endpoint         TEXT,
    model            TEXT,
    input_file_id    TEXT,
    output_file_id   TEXT,
    -- Prompt tokens of the input file counted at create (the enqueued-token limit).
    enqueued_tokens  BIGINT NOT NULL DEFAULT 0,
    -- The budget reservation held from create until billing ends.
    reservation_id   TEXT,
    -- Output lines read and bytes consumed: a restart resumes here. Billing stays
    -- exact without it (ledger ids are per line); it only saves re-reading.
    cursor_lines     BIGINT NOT NULL DEFAULT 0,
    cursor_bytes     BIGINT NOT NULL DEFAULT 0,
    billed_lines     BIGINT NOT NULL DEFAULT 0,
    failed_lines     BIGINT NOT NULL DEFAULT 0,
    malformed_lines  BIGINT NOT NULL DEFAULT 0,
    -- Polls in a row that failed; the next poll waits longer after each.
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_poll_ms     BIGINT NOT NULL DEFAULT 0,
    updated_ms       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS upstream_objects_owner ON upstream_objects (owner, object);
CREATE INDEX IF NOT EXISTS upstream_objects_due ON upstream_objects (billing, next_poll_ms);
