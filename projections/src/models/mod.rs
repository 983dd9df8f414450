//! The read models, each a [`Projection`](crate::Projection) with its own checkpoint.

use std::sync::Arc;

use crate::projection::Projection;

pub mod friends;
pub mod history;
pub mod presence;
pub mod rooms;
pub mod users;

/// Every read model over its live tables, in the order they are usually started.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(history::History::new()),
        Arc::new(users::Users::new()),
        Arc::new(rooms::Rooms::new()),
        Arc::new(presence::PresenceModel::new()),
        Arc::new(friends::Friends::new()),
    ]
}

/// Reads a UUID stored as TEXT.
pub(crate) fn parse_uuid(s: &str) -> Result<uuid::Uuid, sqlx::Error> {
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// `$first, $first+1, ...`: placeholders for an `IN (...)` list of `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Values bound per `IN (...)` query at most (SQLite's historical limit is 999).
pub(crate) const IN_CHUNK: usize = 500;
