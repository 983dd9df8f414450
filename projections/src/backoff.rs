//! The pause between a projector's retries (the store or the feed away).

use std::time::Duration;

use tokio::sync::watch;

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
