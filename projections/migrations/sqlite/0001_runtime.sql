-- The projector runtime's own tables. Column types are kept to what both backends
-- read through sqlx's Any driver: TEXT, BIGINT (booleans as 0/1, times as
-- microseconds since the Unix epoch).

-- Where each projection is in the log, written in the same transaction as its
-- read-model changes (invariant 4).
CREATE TABLE projection_checkpoints (
    projection TEXT   PRIMARY KEY,
    tx_id      BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Events a projection could not apply: parked with the reason, never retried in a loop.
CREATE TABLE projection_dead_letters (
    projection  TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    position    BIGINT NOT NULL,
    event_type  TEXT   NOT NULL,
    error       TEXT   NOT NULL,
    envelope    TEXT   NOT NULL,
    parked_at   BIGINT NOT NULL,
    PRIMARY KEY (projection, event_id)
);
