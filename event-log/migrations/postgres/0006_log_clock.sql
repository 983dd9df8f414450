-- The log's clock. `events.tx_id` is the writing transaction's id plus `shift`.
-- The shift is 0 until the log moves to a cluster whose transaction counter is
-- behind the one that wrote it (a restore from a logical dump, a switchover by
-- logical replication): `parley migrate` then raises it so that every new
-- transaction sorts after every restored one, and the tail (which reads below
-- the oldest running writer, shifted the same) sees the restored events at once.
CREATE TABLE log_clock (
    one   BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    shift NUMERIC NOT NULL DEFAULT 0 CHECK (shift >= 0)
);
INSERT INTO log_clock DEFAULT VALUES;
-- Every reader of the log needs it (the read side's role too): it is one number.
GRANT SELECT ON log_clock TO PUBLIC;

-- For inserts that name no tx_id (the group committer names it, computed once
-- per statement).
CREATE FUNCTION parley_tx_id() RETURNS xid8 LANGUAGE sql VOLATILE AS
$$ SELECT (pg_current_xact_id()::text::numeric + shift)::text::xid8 FROM log_clock $$;

ALTER TABLE events ALTER COLUMN tx_id SET DEFAULT parley_tx_id();
