-- Sessions (issue 21): refresh tokens are stored as SHA-256 hashes, rotate on
-- every use, and a token the session already rotated past ends the session.
CREATE TABLE sessions (
    session_id   UUID        PRIMARY KEY,
    user_id      UUID        NOT NULL,
    refresh_hash TEXT        NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ,
    user_agent   TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Hashes a session rotated past: presenting one again is reuse.
CREATE TABLE refresh_tokens_rotated (
    refresh_hash TEXT        PRIMARY KEY,
    session_id   UUID        NOT NULL,
    rotated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX refresh_tokens_rotated_session ON refresh_tokens_rotated (session_id);
