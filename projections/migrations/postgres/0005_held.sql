-- Events a Kafka-fed projection met before their aggregate's previous one
-- (keys moved to other partitions, or part of a partition lost): held here, in
-- the transaction that moves the partition's offset past them, until the
-- previous event is applied; then applied in order and deleted.
CREATE TABLE projection_held (
    projection   TEXT   NOT NULL,
    aggregate_id TEXT   NOT NULL,
    sequence     BIGINT NOT NULL,
    envelope     TEXT   NOT NULL,
    held_at      BIGINT NOT NULL,
    PRIMARY KEY (projection, aggregate_id, sequence)
);
