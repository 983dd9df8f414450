//! The options of the operators' one-off commands: `projections` and `migrate`.

use clap::{Args, Subcommand};

use super::parse::database_url;
use super::{FeedFlag, KafkaArgs};

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// List events the projectors could not apply (parked with the reason).
    DeadLetters(DeadLetterArgs),
    /// Rebuild one read model from the event log into fresh tables, then swap it in
    /// atomically; the live model keeps serving (and being fed) meanwhile.
    Rebuild(RebuildArgs),
    /// Where each projection is: with `--feed kafka`, per partition of the topic
    /// the offset applied, the end offset, the lag and the member that owns it;
    /// with `--feed log`, each checkpoint against the log's head.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How the projectors are fed.
    #[arg(long, env = "PARLEY_FEED", value_enum, default_value_t = FeedFlag::Log)]
    pub feed: FeedFlag,
    /// Read-model database.
    #[arg(long, env = "PARLEY_READ_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub read_database_url: String,
    /// Event log database: needed with `--feed log`; with `--feed kafka` it adds
    /// how far the relay has published (shown even while the broker is down).
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The read model: history, rooms, users, presence or friends.
    pub name: String,
    /// Event log database: postgres://... or sqlite://...
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: String,
    /// Read-model database: postgres://... or sqlite://...
    #[arg(long, env = "PARLEY_READ_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub read_database_url: String,
    /// No progress bar (for logs and scripts).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DeadLetterArgs {
    /// Read-model database.
    #[arg(long, env = "PARLEY_READ_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub read_database_url: String,
    /// At most this many, oldest first.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Database to migrate: postgres://... or sqlite://...
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: String,
    /// A PostgreSQL role (it must exist) to let read the event log and nothing
    /// else: the read API and log-fed projectors connect as it, so they cannot
    /// write events.
    #[arg(long, env = "PARLEY_READ_SIDE_ROLE")]
    pub read_side_role: Option<String>,
}
