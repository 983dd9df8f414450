//! The pause between a projector's retries (the store or the feed away), and
//! the read of the next batch every log-fed projector loop makes with it.

use std::time::Duration;

use parley_event_log::{Cursor, EventEnvelope};
use tokio::sync::watch;

use crate::Feed;

/// The next batch after `from`: `None` when the feed failed (logged, after
/// the backoff's pause) or had nothing yet (after waiting up to a second for
/// it, or for `shutdown`). `who` names the projector in the log line.
pub(crate) async fn next_batch(
    feed: &dyn Feed,
    from: Cursor,
    limit: i64,
    backoff: &mut Backoff,
    shutdown: &mut watch::Receiver<bool>,
    who: &str,
) -> Option<Vec<EventEnvelope>> {
    match feed.read_after(from, limit).await {
        Ok(batch) if !batch.is_empty() => Some(batch),
        Ok(_) => {
            tokio::select! {
                _ = feed.wait(Duration::from_secs(1)) => {},
                _ = shutdown.changed() => {},
            }
            None
        }
        Err(e) => {
            tracing::warn!(projection = who, error = %e, "feed unavailable, retrying");
            backoff.wait(shutdown).await;
            None
        }
    }
}

/// Waits between retries: from 100 ms, doubling up to 10 s, back to the
/// start after a success.
pub(crate) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    pub(crate) fn new() -> Self {
        Self(Self::FIRST)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Waits the current pause (or until `shutdown` changes), then doubles it.
    pub(crate) async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) {
        sleep_or_shutdown(self.0, shutdown).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
    }
}

async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {},
        _ = shutdown.changed() => {},
    }
}
