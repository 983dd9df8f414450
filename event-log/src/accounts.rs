//! Account state the command side keeps beside the event log, out of events:
//! password hashes (so no hash travels on the topic or into exports) and
//! sessions (so refresh tokens can rotate, be reused only once, and end).
//!
//! Nothing here is derived from events, and nothing here is published.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::LogError;

mod pg;
mod sqlite;

/// One login of one user (a device, a browser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// When its refresh token stops working (each rotation moves it on).
    pub expires_at: DateTime<Utc>,
    /// The `User-Agent` it logged in with (at most 256 characters), to tell
    /// sessions apart in a list.
    pub user_agent: Option<String>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was the session's current token: the session now holds the next one.
    Rotated(SessionRecord),
    /// It was a token the session had already rotated past: someone else holds
    /// a copy. The whole session is ended (reuse detection).
    Reused { session_id: Uuid, user_id: Uuid },
    /// No live session holds it (unknown, expired or ended).
    Unknown,
}

/// How long after a rotation the token it replaced is still taken for a
/// retry (a lost answer, two tabs refreshing at once) rather than for reuse:
/// within it, presenting the old token is refused without ending the session.
pub const REUSE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Password hashes and sessions. Tokens are never stored, only their SHA-256.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// The password hash (PHC string) of a user.
    async fn password_hash(&self, user_id: Uuid) -> Result<Option<String>, LogError>;

    /// Stores (or replaces) a user's password hash.
    async fn set_password_hash(&self, user_id: Uuid, hash: &str) -> Result<(), LogError>;

    /// Removes a user's stored hash (a registration that did not commit).
    async fn forget_password_hash(&self, user_id: Uuid) -> Result<(), LogError>;

    /// Records a new session whose refresh token hashes to `refresh_hash`.
    async fn start_session(
        &self,
        session: &SessionRecord,
        refresh_hash: &str,
    ) -> Result<(), LogError>;

    /// Trades the token hashing to `presented` for the one hashing to `next`,
    /// atomically, as of `now`; the session then lives until `expires_at`.
    async fn rotate_refresh(
        &self,
        session_id: Uuid,
        presented: &str,
        next: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Rotation, LogError>;

    /// Marks a token that has no session row (a refresh JWT of the release
    /// before sessions) as spent by `session_id`; false if it was spent already.
    async fn spend_token(
        &self,
        token_hash: &str,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, LogError>;

    /// A user's live sessions, newest first.
    async fn sessions_of(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, LogError>;

    /// Ends one of a user's sessions; false when the user has no such live one.
    async fn end_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, LogError>;

    /// Ends every live session of a user; returns how many.
    async fn end_sessions(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<u64, LogError>;

    /// Deletes sessions that ended or expired before `before`, with their
    /// rotated tokens; returns how many sessions.
    async fn prune_sessions(&self, before: DateTime<Utc>) -> Result<u64, LogError>;
}
