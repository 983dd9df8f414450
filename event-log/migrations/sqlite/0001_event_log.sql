-- The event log on SQLite. One writer at a time, so positions commit in order and
-- tailing by position is safe; tx_id is kept at 0 so cursors look the same as Postgres's.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id           INTEGER NOT NULL DEFAULT 0,
    event_id        TEXT    NOT NULL UNIQUE,
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    sequence        INTEGER NOT NULL CHECK (sequence > 0),
    event_type      TEXT    NOT NULL,
    event_version   INTEGER NOT NULL CHECK (event_version > 0),
    recorded_at     TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    idempotency_key TEXT,
    CONSTRAINT events_stream_sequence UNIQUE (aggregate_id, sequence)
);

CREATE TABLE command_results (
    scope        TEXT    PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    appended     TEXT    NOT NULL,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE snapshots (
    aggregate_id   TEXT    PRIMARY KEY,
    aggregate_type TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    taken_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
