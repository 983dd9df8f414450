-- The members of the projector consumer group and the partitions each owns now,
-- refreshed every few seconds, for `parley projections status`.
CREATE TABLE projector_members (
    member_id  TEXT   PRIMARY KEY,
    host       TEXT   NOT NULL,
    pid        BIGINT NOT NULL,
    grp        TEXT   NOT NULL,
    topic      TEXT   NOT NULL,
    partitions TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
