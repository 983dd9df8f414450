-- Projectors fed by Kafka (the scaled mode). Written in the same transaction as
-- the read-model changes (invariant 4); Kafka's own committed offsets are not used.

-- The next offset to apply, per projection and topic partition.
CREATE TABLE projection_offsets (
    projection  TEXT   NOT NULL,
    topic       TEXT   NOT NULL,
    partition   BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);

-- The last sequence applied per projection and aggregate: the relay publishes at
-- least once, and a duplicate (at a new offset) must change nothing. Also what a
-- read-your-writes wait checks in this mode.
CREATE TABLE projection_applied (
    projection   TEXT   NOT NULL,
    aggregate_id TEXT   NOT NULL,
    sequence     BIGINT NOT NULL,
    PRIMARY KEY (projection, aggregate_id)
);
