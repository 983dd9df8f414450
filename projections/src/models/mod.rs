//! The read models, each a [`Projection`](crate::Projection) with its own checkpoint.

use std::sync::Arc;

use crate::projection::{Projection, MAX_PIECE};

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

/// The read model called `name`, over tables named with `suffix` ("" for the
/// live tables); `None` for an unknown name.
pub fn by_name(name: &str, suffix: &str) -> Option<Arc<dyn Projection>> {
    Some(match name {
        history::History::NAME => Arc::new(history::History::with_suffix(suffix)),
        users::Users::NAME => Arc::new(users::Users::with_suffix(suffix)),
        rooms::Rooms::NAME => Arc::new(rooms::Rooms::with_suffix(suffix)),
        presence::PresenceModel::NAME => Arc::new(presence::PresenceModel::with_suffix(suffix)),
        friends::Friends::NAME => Arc::new(friends::Friends::with_suffix(suffix)),
        _ => return None,
    })
}

/// The read model called `name` over fresh tables named with `suffix`, for a
/// rebuild that fills them once from the start of the log.
pub fn for_rebuild(name: &str, suffix: &str) -> Option<Arc<dyn Projection>> {
    match name {
        history::History::NAME => Some(Arc::new(history::History::rebuilding(suffix))),
        _ => by_name(name, suffix),
    }
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

/// Values bound per `IN (...)` query at most (SQLite's historical limit is 999),
/// padded to a power of two ([`padded`]).
pub(crate) const IN_CHUNK: usize = MAX_PIECE;
