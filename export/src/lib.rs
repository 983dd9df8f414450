//! Parley's event stream for analysts.
//!
//! - [`export`](crate::export::export): the event log (Postgres or SQLite) in
//!   position order, filtered, into JSON Lines or Parquet, resumable.
//! - [`tail`]: the Kafka topic from the beginning, an offset or a time, without
//!   joining (or disturbing) the projectors' consumer group.
//! - [`replay`]: a range of the log into a fresh database's read models.
//!
//! Every event is shaped the same way on the way out ([`shape::Shaper`]): secret
//! fields are redacted (`UserRegistered.password_hash` becomes `null`), and
//! payloads are upcast to today's version of their type unless the stored shape
//! is asked for. Events of a type this release does not know are passed on as
//! stored, with a warning, and counted.

pub mod event;
pub mod export;
pub mod filter;
pub mod jsonl;
mod parquet_sink;
pub mod replay;
pub mod resume;
pub mod shape;
pub mod sink;
pub mod source;
pub mod tail;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use event::ExportEvent;
pub use export::{ExportOptions, Summary};
pub use filter::Filter;
pub use parquet_sink::{schema as parquet_schema, BATCH_ROWS, ROW_GROUP_ROWS};
pub use sink::{Format, Sink};
pub use source::LogSource;

/// Where an export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `-` is stdout, anything else a file path.
    pub fn parse(raw: &str) -> Self {
        if raw == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(raw))
        }
    }
}

/// Picks the format: the one asked for, else the file's extension, else JSON Lines
/// for stdout.
pub fn choose_format(target: &Target, asked: Option<Format>) -> anyhow::Result<Format> {
    if let Some(format) = asked {
        return Ok(format);
    }
    match target {
        Target::Stdout => Ok(Format::Jsonl),
        Target::File(path) => Format::from_path(path).ok_or_else(|| {
            anyhow::anyhow!(
                "--out {}: cannot tell the format from the extension; \
                 use .jsonl or .parquet, or pass --format jsonl|parquet",
                path.display()
            )
        }),
    }
}

/// A whole `parley events export`: from a database URL to a file or stdout.
#[derive(Debug, Clone)]
pub struct ExportJob {
    pub database_url: String,
    pub target: Target,
    pub format: Option<Format>,
    /// Continue a JSON Lines file after its last complete line.
    pub resume: bool,
    pub filter: Filter,
    pub options: ExportOptions,
}

/// Runs an export job; `stop` ends it early but cleanly (Ctrl-C).
pub async fn run_export(
    job: ExportJob,
    progress: indicatif::ProgressBar,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    job.filter.validate()?;
    let format = choose_format(&job.target, job.format)?;
    let mut filter = job.filter.clone();
    let out: sink::Output = match (&job.target, job.resume) {
        (Target::Stdout, true) => anyhow::bail!("--resume needs --out FILE, not stdout"),
        (Target::Stdout, false) => Box::new(std::io::stdout()),
        (Target::File(path), true) => {
            if format == Format::Parquet {
                anyhow::bail!(
                    "--resume works for JSON Lines only: a Parquet file cannot be appended \
                     to. Export the rest into a new part file with --from-position set to \
                     one past the \"covered up to\" of the first export's summary"
                );
            }
            let point = resume::prepare_jsonl(path)?;
            if point.truncated > 0 {
                tracing::warn!(bytes = point.truncated, "--resume: cut a partial last line");
            }
            if let Some(last) = point.last_position {
                filter.from_position = Some(filter.from_position.unwrap_or(1).max(last + 1));
                tracing::info!(position = last, "resuming after the last exported event");
            }
            filter.validate()?;
            Box::new(open_append(path)?)
        }
        (Target::File(path), false) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("--out {}: {e}", path.display()))?,
        ),
    };
    let source = LogSource::open(&job.database_url).await?;
    let sink = Sink::new(format, out)?;
    export::export(&source, &filter, &job.options, sink, progress, stop).await
}

fn open_append(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", path.display()))
}

/// A progress bar on stderr, hidden when `quiet` or when stderr is not a terminal.
pub fn progress_bar(quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} positions, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
