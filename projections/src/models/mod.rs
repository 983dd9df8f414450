//! The read models, each a [`Projection`](crate::Projection) with its own checkpoint.

use std::sync::Arc;

use crate::projection::{Projection, MAX_PIECE};

pub mod calls;
pub mod friends;
pub mod history;
pub mod presence;
pub mod receipts;
pub mod rooms;
pub mod users;

/// What each read model is besides a [`Projection`]: a name, and tables a
/// rebuild can make again under another suffix.
pub trait Model: Projection + Sized + 'static {
    /// The model's name: its checkpoint's key, `--projection`'s value, and what
    /// the read API asks [`Progress`](crate::Progress) about.
    const NAME: &'static str;

    /// The model over tables named with `suffix` ("" for the live tables).
    fn with_suffix(suffix: &str) -> Self;

    /// The model over its live tables.
    fn live() -> Self {
        Self::with_suffix("")
    }
}

/// Every read model's name, in the order they are usually started.
pub const NAMES: [&str; 5] = [
    history::History::NAME,
    users::Users::NAME,
    rooms::Rooms::NAME,
    presence::PresenceModel::NAME,
    friends::Friends::NAME,
];

/// Every read model over its live tables, in the order of [`NAMES`].
pub fn all() -> Vec<Arc<dyn Projection>> {
    NAMES.iter().filter_map(|name| by_name(name, "")).collect()
}

/// The read model called `name`, over tables named with `suffix` ("" for the
/// live tables); `None` for an unknown name.
pub fn by_name(name: &str, suffix: &str) -> Option<Arc<dyn Projection>> {
    fn made<M: Model>(suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(M::with_suffix(suffix)))
    }
    match name {
        history::History::NAME => made::<history::History>(suffix),
        users::Users::NAME => made::<users::Users>(suffix),
        rooms::Rooms::NAME => made::<rooms::Rooms>(suffix),
        presence::PresenceModel::NAME => made::<presence::PresenceModel>(suffix),
        friends::Friends::NAME => made::<friends::Friends>(suffix),
        _ => None,
    }
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
