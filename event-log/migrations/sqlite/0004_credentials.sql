-- Password hashes, kept by the command side and out of events (issue 21): they
-- never reach the Kafka topic, exports or streams. Users registered before this
-- carried their hash in UserRegistered v1; it is copied here once, and the
-- command API copies any it still meets at login.
CREATE TABLE credentials (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

INSERT OR IGNORE INTO credentials (user_id, password_hash)
SELECT aggregate_id, json_extract(payload, '$.password_hash')
FROM events
WHERE event_type = 'UserRegistered' AND event_version = 1
  AND json_extract(payload, '$.password_hash') IS NOT NULL;
