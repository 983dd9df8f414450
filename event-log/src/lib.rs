//! Parley's event log: an append-only, totally ordered record of every event.
//!
//! One trait ([`EventLog`]) with two implementations: [`pg::PgLog`] for the scaled
//! mode and [`sqlite::SqliteLog`] for the embedded default. Both keep the same
//! guarantees, checked by one contract test suite:
//! - optimistic concurrency per aggregate (a unique `(aggregate_id, sequence)`),
//! - atomic appends across several streams (a command may touch two aggregates),
//! - idempotent commands (a stored result per idempotency scope),
//! - a tail that never skips an event (see [`Cursor`]).

mod accounts;
mod deadlines;
mod envelope;
mod error;
pub mod notify;
pub mod pg;
pub mod sqlite;
/// Test support (a fresh database per test, and dropping old ones): only in
/// test builds, never in a production binary.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod token;

pub use accounts::{Accounts, Rotation, SessionRecord};
pub use deadlines::Deadlines;
pub use envelope::{
    AppendRequest, AppendedEvent, CommandResult, Cursor, EventEnvelope, IdempotencyRecord,
    Metadata, NewEvent, Snapshot, StreamWrite,
};
pub use error::{database_unreachable, LogError};
pub use token::{ConsistencyToken, StreamHead, TokenError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// The storage behind Parley's write side, and the feed for its tailers. The
/// same database keeps the command side's account state ([`Accounts`]) and
/// its deadlines ([`Deadlines`]).
#[async_trait]
pub trait EventLog: Accounts + Deadlines + Send + Sync + 'static {
    /// Appends every stream of `request` in one transaction, or nothing.
    ///
    /// Fails with [`LogError::Conflict`] when a stream is not at its expected version,
    /// and with [`LogError::DuplicateCommand`] when the idempotency scope is taken.
    async fn append(&self, request: AppendRequest) -> Result<Vec<AppendedEvent>, LogError>;

    /// Events of one aggregate with a sequence above `after_sequence`, in order.
    async fn load_stream(
        &self,
        aggregate_id: Uuid,
        after_sequence: i64,
    ) -> Result<Vec<EventEnvelope>, LogError>;

    /// Up to `limit` committed events after `cursor`, in tail order. A reader that
    /// moves its cursor to the last event returned never misses a later commit.
    async fn read_after(&self, cursor: Cursor, limit: i64) -> Result<Vec<EventEnvelope>, LogError>;

    /// Where the event at `sequence` of a stream sits in tail order, if the log
    /// holds it (checks that a consistency token names a real write).
    async fn cursor_of(
        &self,
        aggregate_id: Uuid,
        sequence: i64,
    ) -> Result<Option<Cursor>, LogError>;

    /// The newest `limit` committed events, in tail order (oldest of them first):
    /// where a reader that starts at the head looks back from.
    async fn read_newest(&self, limit: i64) -> Result<Vec<EventEnvelope>, LogError>;

    /// The highest position handed out so far (0 for an empty log): the head a
    /// reader's lag is measured against.
    async fn last_position(&self) -> Result<i64, LogError>;

    /// The stored result of a command sent with an idempotency key.
    async fn command_result(&self, scope: &str) -> Result<Option<CommandResult>, LogError>;

    /// Deletes stored command results older than `before`; returns how many.
    /// A retry with such an old key then runs as a new command.
    async fn prune_command_results(&self, before: DateTime<Utc>) -> Result<u64, LogError>;

    /// The latest snapshot of an aggregate, if one was taken.
    async fn load_snapshot(&self, aggregate_id: Uuid) -> Result<Option<Snapshot>, LogError>;

    /// Stores a snapshot unless a newer one is already there.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), LogError>;

    /// Ticks after appends become visible: in this process at once, and on
    /// Postgres also after other processes' appends (LISTEN/NOTIFY). Tailers wait
    /// on it instead of polling.
    fn appended(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Checks that the storage answers (readiness probes).
    async fn ping(&self) -> Result<(), LogError>;

    /// A short name for logs and metrics: `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// The connections of the log's pool (both pools together on SQLite), for metrics.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }
}

/// How many connections a pool holds and may hold: what a metrics scrape samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections lent out.
    pub in_use: u32,
    /// Connections open and waiting in the pool.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

impl PoolStats {
    /// The figures of any sqlx pool.
    pub fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> Self {
        let open = pool.size();
        let idle = (pool.num_idle() as u32).min(open);
        Self {
            in_use: open - idle,
            idle,
            max: pool.options().get_max_connections(),
        }
    }

    /// Two pools counted as one.
    pub fn plus(self, other: Self) -> Self {
        Self {
            in_use: self.in_use + other.in_use,
            idle: self.idle + other.idle,
            max: self.max + other.max,
        }
    }
}

/// A shared handle to whichever log is configured.
pub type SharedLog = Arc<dyn EventLog>;

/// Opens the log named by a URL (`postgres://...` or `sqlite://...`) and runs its migrations.
pub async fn open(url: &str, pool_size: u32) -> Result<SharedLog, LogError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let log = pg::PgLog::connect(url, pool_size).await?;
        log.migrate().await?;
        Ok(Arc::new(log))
    } else if url.starts_with("sqlite:") {
        let log = sqlite::SqliteLog::open(url).await?;
        log.migrate().await?;
        Ok(Arc::new(log))
    } else {
        Err(LogError::Config(format!(
            "unsupported database url {:?}: expected postgres://... or sqlite://...",
            redact_url(url)
        )))
    }
}

/// Opens the log named by a URL without migrating a PostgreSQL log (`parley
/// migrate` does, once, before the services start); a SQLite log is a local
/// file, so migrating it on open is always safe.
pub async fn connect(url: &str, pool_size: u32) -> Result<SharedLog, LogError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(pg::PgLog::connect(url, pool_size).await?))
    } else {
        open(url, pool_size).await
    }
}

/// A database URL with its password replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/parley"),
            "postgres://app:***@db:5432/parley"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(redact_url("sqlite://data/p.db"), "sqlite://data/p.db");
    }
}
