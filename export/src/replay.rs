//! `parley events replay --into URL`: a range of the log into a fresh database's
//! read models (a sandbox for an analyst, or a new projection's first run), with
//! the projector runtime and models the services use; then it stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_event_log::{Cursor, EventEnvelope, SharedLog};
use parley_projections::{models, Feed, Projector, ReadStore};

use crate::source::LogSource;

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Events of the range (each read model saw all of them).
    pub events: u64,
    /// Events a read model could not apply (parked in its dead-letter table).
    pub parked: u64,
    /// The read models filled.
    pub projections: Vec<String>,
    /// The range replayed, inclusive.
    pub from_position: i64,
    pub to_position: i64,
    pub elapsed: Duration,
}

/// The log limited to a position range: a projector fed by it applies exactly the
/// events of the range, and `catch_up` ends at its end.
struct RangeFeed {
    log: SharedLog,
    from: i64,
    to: i64,
    read: AtomicU64,
    progress: indicatif::ProgressBar,
}

#[async_trait]
impl Feed for RangeFeed {
    async fn read_after(
        &self,
        mut cursor: Cursor,
        limit: i64,
    ) -> anyhow::Result<Vec<EventEnvelope>> {
        loop {
            let batch = self.log.read_after(cursor, limit).await?;
            let Some(last) = batch.last().map(EventEnvelope::cursor) else {
                return Ok(batch);
            };
            let kept: Vec<EventEnvelope> = batch
                .into_iter()
                .filter(|e| (self.from..=self.to).contains(&e.position))
                .collect();
            if !kept.is_empty() {
                self.read.fetch_add(kept.len() as u64, Ordering::Relaxed);
                self.progress.inc(kept.len() as u64);
                return Ok(kept);
            }
            cursor = last;
        }
    }

    async fn wait(&self, _timeout: Duration) {}
}

/// Opens the log without migrating it (a replay only reads).
async fn open_log(url: &str) -> anyhow::Result<SharedLog> {
    if url.starts_with("sqlite:") {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(path).exists() {
            anyhow::bail!("--database-url {url}: no such file");
        }
        Ok(Arc::new(
            parley_event_log::sqlite::SqliteLog::open(url).await?,
        ))
    } else {
        Ok(Arc::new(
            parley_event_log::pg::PgLog::connect(url, 4).await?,
        ))
    }
}

/// Replays positions `from..=to` of the log at `log_url` (the whole log by
/// default, up to its settled head) into the read models of the database at
/// `into_url`, which must not hold read models yet.
pub async fn replay(
    log_url: &str,
    into_url: &str,
    from: Option<i64>,
    to: Option<i64>,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<ReplayReport> {
    let started = Instant::now();
    let head = LogSource::open(log_url).await?.settled_head().await?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            anyhow::bail!("--from-position {from} is above --to-position {to}");
        }
    }
    let from = from.unwrap_or(1);
    let to = to.map_or(head, |to| to.min(head));
    let log = open_log(log_url).await?;
    let store = ReadStore::open(into_url, 4)
        .await
        .map_err(|e| anyhow::anyhow!("--into {}: {e}", parley_event_log::redact_url(into_url)))?;
    let all = models::all();
    let names: Vec<&str> = all.iter().map(|p| p.name()).collect();
    for (name, cursor) in names.iter().zip(store.checkpoints(&names).await?) {
        if cursor != Cursor::START {
            anyhow::bail!(
                "--into {}: read model {name} is already at position {}; replay needs a \
                 fresh database",
                parley_event_log::redact_url(into_url),
                cursor.position
            );
        }
    }
    progress.set_length((to - from + 1).max(0) as u64 * all.len() as u64);
    let mut feeds = Vec::new();
    let mut runs = Vec::new();
    for projection in all {
        let feed = Arc::new(RangeFeed {
            log: log.clone(),
            from,
            to,
            read: AtomicU64::new(0),
            progress: progress.clone(),
        });
        feeds.push(feed.clone());
        let projector = Projector::new(projection, store.clone(), feed);
        runs.push(async move {
            projector.prepare().await?;
            projector.catch_up().await
        });
    }
    futures::future::try_join_all(runs).await?;
    progress.finish_and_clear();
    let events = feeds
        .iter()
        .map(|f| f.read.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let parked = parley_projections::dead_letters(&store, i64::MAX)
        .await?
        .len() as u64;
    Ok(ReplayReport {
        events,
        parked,
        projections: names.iter().map(|n| n.to_string()).collect(),
        from_position: from,
        to_position: to,
        elapsed: started.elapsed(),
    })
}
