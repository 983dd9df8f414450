//! Deadlines the command side keeps beside the event log: "if nothing has
//! happened to this aggregate by then, send it a command" (a call nobody
//! answered becomes a missed call). A deadline is set before the event that
//! needs it is appended, so a crash between the two leaves at worst a deadline
//! whose command finds nothing to do, never an event without its deadline.
//!
//! Nothing here is derived from events, and nothing here is published.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::LogError;

mod pg;
mod sqlite;

/// Deadlines by kind (`"call_ring"`) and aggregate id.
#[async_trait]
pub trait Deadlines: Send + Sync {
    /// Sets (or moves) the deadline of `id`.
    async fn set_deadline(&self, kind: &str, id: Uuid, due: DateTime<Utc>) -> Result<(), LogError>;

    /// Up to `limit` ids of `kind` whose deadline is at or before `now`,
    /// earliest first.
    async fn due_deadlines(
        &self,
        kind: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>, LogError>;

    /// Forgets the deadline of `id` (done, or no longer needed).
    async fn clear_deadline(&self, kind: &str, id: Uuid) -> Result<(), LogError>;
}
