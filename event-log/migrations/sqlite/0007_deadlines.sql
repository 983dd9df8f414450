-- Deadlines the command side acts on (issue 25: a call nobody answers within
-- the ring timeout becomes a missed call).
CREATE TABLE deadlines (
    kind         TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    due_at       TEXT NOT NULL,
    PRIMARY KEY (kind, aggregate_id)
);
CREATE INDEX deadlines_due ON deadlines (kind, due_at);
