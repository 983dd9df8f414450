-- Sessions (issue 21): refresh tokens are stored as SHA-256 hashes, rotate on
-- every use, and a token the session already rotated past ends the session.
CREATE TABLE sessions (
    session_id   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    refresh_hash TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    ended_at     TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Hashes a session rotated past: presenting one again is reuse.
CREATE TABLE refresh_tokens_rotated (
    refresh_hash TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    rotated_at   TEXT NOT NULL
);
CREATE INDEX refresh_tokens_rotated_session ON refresh_tokens_rotated (session_id);
