-- Password hashes, kept by the command side and out of events (issue 21): they
-- never reach the Kafka topic, exports or streams. Users registered before this
-- carried their hash in UserRegistered v1; it is copied here once, and the
-- command API copies any it still meets at login.
CREATE TABLE credentials (
    user_id       UUID        PRIMARY KEY,
    password_hash TEXT        NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO credentials (user_id, password_hash)
SELECT aggregate_id, payload->>'password_hash'
FROM events
WHERE event_type = 'UserRegistered' AND event_version = 1
  AND payload->>'password_hash' IS NOT NULL
ON CONFLICT (user_id) DO NOTHING;
