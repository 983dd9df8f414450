-- The event log: the source of truth. Every other table can be rebuilt from it.
CREATE TABLE events (
    -- Handed out before commit, so it is NOT safe to tail by on its own (invariant 2).
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction's id. Readers only take rows whose transaction id is
    -- below the oldest transaction still running, and order by (tx_id, position).
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        UUID        NOT NULL UNIQUE,
    aggregate_type  TEXT        NOT NULL,
    aggregate_id    UUID        NOT NULL,
    sequence        BIGINT      NOT NULL CHECK (sequence > 0),
    event_type      TEXT        NOT NULL,
    event_version   INTEGER     NOT NULL CHECK (event_version > 0),
    recorded_at     TIMESTAMPTZ NOT NULL,
    metadata        JSONB       NOT NULL,
    payload         JSONB       NOT NULL,
    idempotency_key TEXT,
    -- Optimistic concurrency: two writers at one version cannot both commit (invariant 1).
    CONSTRAINT events_stream_sequence UNIQUE (aggregate_id, sequence)
);

CREATE INDEX events_tail ON events (tx_id, position);

-- Results of commands sent with a client-chosen idempotency key (invariant 5),
-- written in the same transaction as the command's events.
CREATE TABLE command_results (
    scope        TEXT        PRIMARY KEY,
    fingerprint  TEXT        NOT NULL,
    status       SMALLINT    NOT NULL,
    body         JSONB       NOT NULL,
    appended     JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Aggregate snapshots: a cache, safe to delete at any time.
CREATE TABLE snapshots (
    aggregate_id   UUID        PRIMARY KEY,
    aggregate_type TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    state          JSONB       NOT NULL,
    taken_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
