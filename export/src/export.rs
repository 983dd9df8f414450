//! `parley events export`: the log, in position order, into a file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use indicatif::ProgressBar;

use crate::event::ExportEvent;
use crate::filter::Filter;
use crate::shape::Shaper;
use crate::sink::Sink;
use crate::source::LogSource;

/// Events handed from the reader to the writer at a time.
pub const PAGE: usize = 10_000;
/// Positions read from the log per query, streamed: the database sends rows while
/// they are decoded and written, and one query's snapshot stays short.
pub const QUERY_ROWS: i64 = 100_000;

/// How an export runs (the filters are separate: see [`Filter`]).
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Keep each payload at its stored version instead of today's.
    pub stored_shape: bool,
    /// Stop after this many events (a sample, or a deliberately partial export).
    pub limit: Option<u64>,
}

/// What an export or a tail did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Events of a type or version this release does not know, written as stored.
    pub unknown: u64,
    /// Events with a redacted field.
    pub redacted: u64,
    /// Events upcast to today's version.
    pub upcast: u64,
    /// The position of the last event written, if any.
    pub last_position: Option<i64>,
    /// The last position the export covered (events above it were not looked at):
    /// resume from the next one.
    pub covered_to: i64,
    /// Stopped early (interrupted or `limit`), not at the end of the range.
    pub partial: bool,
    /// Records of the topic skipped because the relay did not sign them
    /// (`events tail` with signing keys set; another producer wrote them).
    pub unsigned: u64,
}

impl Summary {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  events written   {}", self.events)?;
        writeln!(f, "  bytes            {}", self.bytes)?;
        writeln!(f, "  seconds          {:.2}", self.elapsed.as_secs_f64())?;
        writeln!(f, "  events/s         {:.0}", self.events_per_sec())?;
        writeln!(f, "  upcast           {}", self.upcast)?;
        writeln!(f, "  redacted         {}", self.redacted)?;
        writeln!(f, "  unknown types    {}", self.unknown)?;
        match self.last_position {
            Some(p) => writeln!(f, "  last position    {p}")?,
            None => writeln!(f, "  last position    -")?,
        }
        if self.unsigned > 0 {
            writeln!(f, "  unsigned, skipped {}", self.unsigned)?;
        }
        write!(f, "  covered up to    {}", self.covered_to)
    }
}

/// Exports every event of `source` that `filter` keeps, in position order, into
/// `sink`, up to the log's settled head at the start (or `filter.to_position`).
///
/// Reading (async, from the database) and shaping + encoding (CPU, on a blocking
/// thread) run side by side, with at most two pages in between: memory does not
/// grow with the log. `stop` ends the export cleanly after the page in hand (the
/// output is still complete and valid); `progress` counts positions.
pub async fn export(
    source: &LogSource,
    filter: &Filter,
    options: &ExportOptions,
    sink: Sink,
    progress: ProgressBar,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    filter.validate()?;
    let started = Instant::now();
    let head = source.settled_head().await?;
    let up_to = filter.to_position.map_or(head, |to| to.min(head));
    let after = filter.from_position.map_or(0, |from| from - 1);
    progress.set_length(up_to.saturating_sub(after).max(0) as u64);

    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<ExportEvent>, i64)>(2);
    let writer_options = options.clone();
    let writer_progress = progress.clone();
    let writer = tokio::task::spawn_blocking(move || {
        write_pages(&mut rx, sink, &writer_options, &writer_progress, after)
    });

    let query = source.query(filter);
    let mut cursor = after;
    let mut read = 0u64;
    let mut stopped = false;
    'queries: while cursor < up_to {
        let rows = match options.limit {
            Some(limit) => QUERY_ROWS.min(limit.saturating_sub(read) as i64),
            None => QUERY_ROWS,
        };
        if stop.load(Ordering::Relaxed) || rows == 0 {
            stopped = true;
            break;
        }
        // A bounded range, not only a LIMIT: a planner without statistics (a log
        // just written, not yet analyzed) sorts the whole range it is given.
        let end = up_to.min(cursor.saturating_add(QUERY_ROWS));
        let mut events = query.stream(cursor, end, rows);
        let mut page = Vec::with_capacity(PAGE);
        let mut got = 0i64;
        while let Some(event) = events.try_next().await? {
            got += 1;
            page.push(event);
            if page.len() == PAGE {
                let full = std::mem::replace(&mut page, Vec::with_capacity(PAGE));
                read += full.len() as u64;
                cursor = full.last().map_or(cursor, |e| e.envelope.position);
                if tx.send((full, cursor)).await.is_err() {
                    break 'queries; // the writer failed; its error is reported below
                }
                if stop.load(Ordering::Relaxed) {
                    stopped = true;
                    break 'queries;
                }
            }
        }
        drop(events);
        read += page.len() as u64;
        // A short answer covers its whole range.
        cursor = if got < rows {
            end
        } else {
            page.last().map_or(cursor, |e| e.envelope.position)
        };
        if tx.send((page, cursor)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let (mut summary, written_to) = writer.await??;
    summary.elapsed = started.elapsed();
    summary.partial = stopped || written_to < up_to;
    summary.covered_to = written_to;
    progress.finish_and_clear();
    Ok(summary)
}

/// The writer's side: shapes and writes pages until the channel closes or the
/// limit is reached; returns the summary and the last position it covered.
fn write_pages(
    rx: &mut tokio::sync::mpsc::Receiver<(Vec<ExportEvent>, i64)>,
    mut sink: Sink,
    options: &ExportOptions,
    progress: &ProgressBar,
    after: i64,
) -> anyhow::Result<(Summary, i64)> {
    let mut shaper = Shaper::new(options.stored_shape);
    let mut summary = Summary::default();
    let mut covered = after;
    'pages: while let Some((page, page_covered)) = rx.blocking_recv() {
        for mut event in page {
            if options.limit.is_some_and(|l| summary.events >= l) {
                break 'pages;
            }
            shaper.shape_text(&mut event)?;
            sink.write_event(&event)?;
            summary.events += 1;
            summary.last_position = Some(event.envelope.position);
            covered = event.envelope.position;
        }
        covered = page_covered;
        sink.flush()?;
        progress.set_position(covered.saturating_sub(after).max(0) as u64);
    }
    summary.bytes = sink.finish()?;
    summary.unknown = shaper.unknown;
    summary.redacted = shaper.redacted;
    summary.upcast = shaper.upcast;
    Ok((summary, covered))
}
