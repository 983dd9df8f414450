//! Command-line options. Every option can also come from a `PARLEY_*` environment
//! variable (shown in `--help`); a flag wins over the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::{LogFormat, OtlpProtocol, Traces};

mod admin;
mod events;
mod parse;
mod services;

pub use admin::*;
pub use events::*;
pub use parse::split_properties;
pub use services::*;

use parse::http_url;

#[derive(Debug, Parser)]
#[command(
    name = "parley",
    version,
    about = "Parley: an event-sourced CQRS chat backend",
    long_about = "Parley: an event-sourced CQRS chat backend.\n\n\
        Start with `parley dev`: the whole backend in one process on one port, \
        with a SQLite file as its store. In production each service runs on its own \
        (`parley command-api`, ...) against PostgreSQL."
)]
pub struct Cli {
    /// Log format: `pretty` for people, `json` for log collectors (default: pretty
    /// for `dev`, json otherwise).
    #[arg(long, global = true, env = "PARLEY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// A TOML file of settings: each key is a setting's environment name
    /// without `PARLEY_`, in lower case (`database_url = "postgres://..."`).
    /// The environment overrides the file; flags override both.
    #[arg(long, global = true, env = "PARLEY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Send traces to this OpenTelemetry collector (OTLP over HTTP, base URL such
    /// as http://otel-collector:4318). Without it no spans are exported.
    /// `OTEL_SERVICE_NAME` and `OTEL_EXPORTER_OTLP_HEADERS` are honoured.
    #[arg(long, global = true, env = "PARLEY_OTLP_ENDPOINT", value_parser = http_url)]
    pub otlp_endpoint: Option<String>,

    /// The OTLP encoding.
    #[arg(
        long,
        global = true,
        env = "PARLEY_OTLP_PROTOCOL",
        value_enum,
        default_value_t = OtlpProtocol::HttpProtobuf
    )]
    pub otlp_protocol: OtlpProtocol,

    #[command(subcommand)]
    pub command: Task,
}

impl Cli {
    /// Where this process's traces go, if anywhere.
    pub fn traces(&self) -> Option<Traces> {
        let service = match self.command {
            Task::Dev(_) => "parley-dev",
            Task::CommandApi(_) => "parley-command-api",
            Task::ReadApi(_) => "parley-read-api",
            Task::Projector(_) => "parley-projector",
            Task::Relay(_) => "parley-relay",
            _ => "parley",
        };
        self.otlp_endpoint.clone().map(|endpoint| Traces {
            endpoint,
            protocol: self.otlp_protocol,
            service,
        })
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(match self.command {
            Task::Dev(_)
            | Task::Migrate(_)
            | Task::Projections(_)
            | Task::Events(_)
            | Task::Config(_) => LogFormat::Pretty,
            _ => LogFormat::Json,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Task {
    /// Run everything in one process on one port, on a SQLite file (no Postgres, no Kafka).
    Dev(DevArgs),
    /// Run the command API (HTTP commands in, events into the log).
    CommandApi(ServiceArgs),
    /// Run the read API (queries over the read models, with read-your-writes).
    ReadApi(ReadApiArgs),
    /// Run projectors: apply the event log (or the Kafka topic) to the read models, continuously.
    Projector(ProjectorArgs),
    /// Publish the event log to Kafka (one replica publishes; others stand by).
    Relay(RelayArgs),
    /// Inspect projections.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Apply the event log's database migrations, then exit.
    Migrate(MigrateArgs),
    /// Ask a running service's `/health`; exit 0 on a 2xx answer, 1 otherwise
    /// (for container health checks on images without curl).
    Healthcheck(HealthcheckArgs),
    /// Analysts: export the event log, tail the topic, replay into a sandbox.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Print a service's effective configuration (defaults, config file,
    /// environment, flags), secrets redacted, each value with its source.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The service whose settings to show.
    #[arg(value_enum)]
    pub service: ServiceName,
    /// The service's flags, as you would pass them to it.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// The long-running services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    Dev,
    CommandApi,
    ReadApi,
    Projector,
    Relay,
}

impl ServiceName {
    /// Its subcommand.
    pub fn name(self) -> &'static str {
        match self {
            ServiceName::Dev => "dev",
            ServiceName::CommandApi => "command-api",
            ServiceName::ReadApi => "read-api",
            ServiceName::Projector => "projector",
            ServiceName::Relay => "relay",
        }
    }
}
