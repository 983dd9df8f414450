//! Noticing that the read store's server restarted.
//!
//! Read-model transactions commit without waiting for their WAL flush
//! (`synchronous_commit = off`, see `store.rs`): a server crash can lose the
//! newest commits, each together with the checkpoint it moved. A projector
//! that survives the crash must then go on from what the store holds, not
//! from the position it has in memory, or the lost batches are never applied
//! again. So every new connection reads the server's start time; a change
//! counts as a restart, and a batch whose positions were loaded before it is
//! refused ([`restarted`]) so the projector reloads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The server runs one store has seen.
#[derive(Debug, Default)]
pub(crate) struct ServerRuns {
    started: Mutex<Option<String>>,
    restarts: AtomicU64,
}

impl ServerRuns {
    /// Records the start time a new connection read.
    pub(crate) fn saw(&self, started: String) {
        let mut known = self.started.lock().expect("server runs lock");
        if known.as_ref().is_some_and(|k| *k != started) {
            self.restarts.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(
                started = %started,
                "the read store's server restarted: projectors go on from the positions it holds"
            );
        }
        *known = Some(started);
    }

    /// Restarts seen so far.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }
}

/// The error refusing a batch whose positions were loaded before a restart
/// (transient: the caller reloads them and reads again).
pub fn restarted() -> sqlx::Error {
    sqlx::Error::Protocol(
        "the read store restarted since this projector loaded its positions: reloading them".into(),
    )
}
