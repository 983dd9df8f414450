//! Forgetting what is kept only for a while: stored command answers (for
//! `Idempotency-Key` retries) and sessions that are over.

use std::time::Duration;

use chrono::Utc;

use super::Engine;

/// Deletes stored command results older than `retention`, and sessions over
/// for that long, at a pace of a quarter of it (at most every ten minutes),
/// until the engine is dropped.
pub async fn prune_command_results(engine: std::sync::Weak<Engine>, retention: Duration) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::time::sleep(every).await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        // A retention too long to subtract keeps everything.
        let Some(before) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep))
        else {
            continue;
        };
        match engine.log.prune_command_results(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "old command results pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning command results failed"),
        }
        // Sessions over (ended or expired) for as long go too, with the hashes
        // of the refresh tokens they rotated past.
        match engine.log.prune_sessions(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "old sessions pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
        }
    }
}
