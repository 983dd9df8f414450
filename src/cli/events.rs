//! The options of the analysts' commands: `events export`, `tail`, `replay`.

use clap::{Args, Subcommand};

use super::parse::database_url;
use super::KafkaArgs;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Export the event log in position order to JSON Lines or Parquet.
    ///
    /// Payloads come in today's shape (old versions upcast) unless --stored-shape;
    /// secrets (UserRegistered.password_hash) are always replaced by null.
    /// Progress and the summary go to stderr, so `--out -` can feed a pipe.
    Export(EventsExportArgs),
    /// Read the Kafka topic (from the beginning, an offset or a time) to JSON Lines
    /// or Parquet, without joining the projectors' consumer group.
    Tail(EventsTailArgs),
    /// Replay a range of the log into a fresh database's read models, then stop.
    Replay(EventsReplayArgs),
}

/// Which events to keep (every filter that is set must match).
#[derive(Debug, Args)]
pub struct EventFilterArgs {
    /// Keep events of this type (repeatable: any of them), e.g. MessageSent.
    #[arg(long = "type", value_name = "EVENT_TYPE", value_parser = parley_export::filter::parse_event_type)]
    pub types: Vec<String>,
    /// Keep events of this aggregate type (user, username, room, message,
    /// read_marker, friendship, presence).
    #[arg(long)]
    pub aggregate_type: Option<String>,
    /// Keep events of this aggregate (a UUID).
    #[arg(long, value_parser = parley_export::filter::parse_uuid)]
    pub aggregate_id: Option<uuid::Uuid>,
    /// Keep events recorded at or after this time (RFC 3339, e.g. 2026-11-21T16:00:00Z).
    #[arg(long, value_parser = parley_export::filter::parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Keep events recorded before this time (RFC 3339).
    #[arg(long, value_parser = parley_export::filter::parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Keep events at this log position or later.
    #[arg(long, value_parser = parley_export::filter::parse_position)]
    pub from_position: Option<i64>,
    /// Keep events at this log position or earlier.
    #[arg(long, value_parser = parley_export::filter::parse_position)]
    pub to_position: Option<i64>,
}

impl EventFilterArgs {
    pub fn filter(&self) -> parley_export::Filter {
        parley_export::Filter {
            types: self.types.clone(),
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id,
            since: self.since,
            until: self.until,
            from_position: self.from_position,
            to_position: self.to_position,
        }
    }
}

/// An export file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Parquet,
}

/// Where and how events are written.
#[derive(Debug, Args)]
pub struct EventOutputArgs {
    /// Output file, or `-` for stdout.
    #[arg(long, default_value = "-")]
    pub out: String,
    /// Output format; by default from the file's extension (.jsonl, .parquet),
    /// JSON Lines on stdout.
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// Payloads as stored (old versions stay old) instead of today's shape.
    #[arg(long)]
    pub stored_shape: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

impl EventOutputArgs {
    pub fn format(&self) -> Option<parley_export::Format> {
        self.format.map(|f| match f {
            ExportFormat::Jsonl => parley_export::Format::Jsonl,
            ExportFormat::Parquet => parley_export::Format::Parquet,
        })
    }
}

#[derive(Debug, Args)]
pub struct EventsExportArgs {
    /// Event log database: postgres://... or sqlite://...
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: String,
    #[command(flatten)]
    pub filter: EventFilterArgs,
    #[command(flatten)]
    pub output: EventOutputArgs,
    /// Continue a JSON Lines --out file after its last complete line (a partial
    /// last line is cut). Parquet: export the rest into a new file with
    /// --from-position one past the summary's "covered up to".
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct EventsTailArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Start at the oldest message of every partition (the default).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset: N for every partition, or PARTITION:N (repeatable).
    /// Without it, --since also picks the start (the first message at or after it).
    #[arg(long, value_parser = parley_export::tail::parse_offset)]
    pub offset: Vec<(Option<i32>, i64)>,
    /// Keep reading new messages after the end offsets seen at start, until
    /// Ctrl-C; JSON Lines output is flushed at least every second.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub filter: EventFilterArgs,
    #[command(flatten)]
    pub output: EventOutputArgs,
}

#[derive(Debug, Args)]
pub struct EventsReplayArgs {
    /// Event log database: postgres://... or sqlite://...
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: String,
    /// A fresh read-model database to fill: postgres://... or sqlite://file.db
    #[arg(long)]
    pub into: String,
    /// First log position to replay.
    #[arg(long, value_parser = parley_export::filter::parse_position)]
    pub from_position: Option<i64>,
    /// Last log position to replay (default: the log's head at start).
    #[arg(long, value_parser = parley_export::filter::parse_position)]
    pub to_position: Option<i64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}
