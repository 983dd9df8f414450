//! Command-line options. Every option can also come from a `PARLEY_*` environment
//! variable (shown in `--help`); a flag wins over the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::{LogFormat, OtlpProtocol, Traces};

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

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to listen on.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder for the SQLite database and the generated JWT secret.
    #[arg(long, env = "PARLEY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Seconds after SIGTERM during which the service still takes requests while
    /// `/health/ready` answers 503, so load balancers stop sending first
    /// (Kubernetes: a few seconds; part of the shutdown timeout).
    #[arg(long, env = "PARLEY_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Address to listen on.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Event log database: postgres://user:password@host:5432/db (or sqlite://file.db).
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: String,
    /// Database connections in the pool.
    #[arg(long, env = "PARLEY_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Apply migrations at start-up (otherwise run `parley migrate` first).
    #[arg(long, env = "PARLEY_MIGRATE", default_value_t = false)]
    pub migrate: bool,
    /// Seconds after SIGTERM during which the service still takes requests while
    /// `/health/ready` answers 503, so load balancers stop sending first
    /// (Kubernetes: a few seconds; part of the shutdown timeout).
    #[arg(long, env = "PARLEY_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    /// Secret that signs access and refresh tokens (HS256), at least 32 bytes.
    /// Required outside `dev`, where one is generated into the data folder.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Key id written into tokens signed with `--jwt-secret`.
    #[arg(long, env = "PARLEY_JWT_KEY_ID", default_value = "k1")]
    pub jwt_key_id: String,
    /// A previous secret that still verifies tokens during a key rotation.
    #[arg(long, env = "PARLEY_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,
    /// Key id of `--jwt-previous-secret`.
    #[arg(long, env = "PARLEY_JWT_PREVIOUS_KEY_ID", default_value = "k0")]
    pub jwt_previous_key_id: String,
    /// Start even with one of the example secrets shipped in deploy/, which
    /// anyone can read (and so forge tokens with). For throwaway clusters only.
    #[arg(long, env = "PARLEY_ALLOW_PLACEHOLDER_SECRET")]
    pub allow_placeholder_secret: bool,
}

/// How a service shuts down (see `docs/operations.md`, "Shutdown").
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// Seconds from SIGTERM to exit: requests in flight, stream goodbyes and the
    /// batch in hand finish within it; whatever is still running then is cut.
    #[arg(
        long,
        env = "PARLEY_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub shutdown_timeout_secs: u64,
    /// Seconds a client has to send a request's headers once it starts one (or
    /// to start the next on a kept-alive connection); the connection is closed
    /// after, so slow senders cannot hold connections open (slowloris).
    #[arg(
        long,
        env = "PARLEY_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub header_read_timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Requests per second per user before 429 (0 turns limiting off).
    #[arg(long, env = "PARLEY_RATE_LIMIT_PER_SEC", default_value_t = 50.0)]
    pub rate_limit_per_sec: f64,
    /// Burst size of the per-user rate limit.
    #[arg(long, env = "PARLEY_RATE_LIMIT_BURST", default_value_t = 100.0)]
    pub rate_limit_burst: f64,
    /// Failed logins per second into one username from one client address
    /// before 429, against password guessing (0 turns login throttling off).
    /// One address gets five times this over all usernames.
    #[arg(long, env = "PARLEY_LOGIN_RATE_PER_SEC", default_value_t = 1.0)]
    pub login_rate_per_sec: f64,
    /// Failed logins into one username from one address before throttling
    /// starts (0 turns login throttling off).
    #[arg(long, env = "PARLEY_LOGIN_BURST", default_value_t = 10.0)]
    pub login_burst: f64,
    /// Hours a command's stored answer is kept for `Idempotency-Key` retries;
    /// older ones are pruned and a retry then runs as a new command (0 keeps
    /// them forever).
    #[arg(
        long,
        env = "PARLEY_COMMAND_RESULT_RETENTION_HOURS",
        default_value_t = 24
    )]
    pub command_result_retention_hours: u64,
    /// Seconds a request may take until its answer starts, reading its body
    /// included (408 after; a live stream's body does not count).
    #[arg(long, env = "PARLEY_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Proxies (addresses or blocks, comma-separated: `10.0.0.0/8,fd00::/8`)
    /// whose `X-Forwarded-For` names the client; from anyone else the header is
    /// ignored and the peer address counts.
    #[arg(long, env = "PARLEY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<parley_http_kit::Cidr>,
    /// Registrations one client address may make per hour (0 turns it off).
    #[arg(long, env = "PARLEY_REGISTRATIONS_PER_HOUR", default_value_t = 20.0)]
    pub registrations_per_hour: f64,
    /// Requests handled at once; more are answered 503 with `Retry-After`.
    #[arg(long, env = "PARLEY_MAX_REQUESTS_IN_FLIGHT", default_value_t = 1024)]
    pub max_requests_in_flight: usize,
}

impl LimitArgs {
    /// The HTTP limits every service wraps its routes in.
    pub fn service_limits(&self) -> parley_http_kit::ServiceLimits {
        parley_http_kit::ServiceLimits {
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs.max(1)),
            max_in_flight: self.max_requests_in_flight.max(1),
        }
    }
}

#[derive(Debug, Args)]
pub struct ReadApiArgs {
    /// Address to listen on.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "0.0.0.0:8082")]
    pub listen: SocketAddr,
    /// Read-model database: postgres://... (or sqlite://file.db).
    #[arg(long, env = "PARLEY_READ_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub read_database_url: String,
    /// Event log database, optional: lets readiness report each projection's lag,
    /// and feeds `/v1/stream` (without it the stream answers 503).
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: Option<String>,
    /// How the projectors are fed (as given to `parley projector --feed`): decides
    /// how read-your-writes waits and the stream tell what the read models applied.
    #[arg(long, env = "PARLEY_FEED", value_enum, default_value_t = Feed::Log)]
    pub feed: Feed,
    /// MiB of newest history pages kept in memory (Postgres only; invalidated by
    /// every history or rooms commit). 0 turns the cache off.
    #[arg(long, env = "PARLEY_PAGE_CACHE_MB", default_value_t = 64)]
    pub page_cache_mb: usize,
    /// Live streams (`/v1/stream`) one user may hold open at once (429 past it).
    #[arg(long, env = "PARLEY_MAX_STREAMS_PER_USER", default_value_t = 8)]
    pub max_streams_per_user: u32,
    /// How many log positions behind the head a stream may resume from; an
    /// older `Last-Event-ID` is 410 (the client reloads pages and reconnects).
    #[arg(long, env = "PARLEY_STREAM_RESUME_WINDOW", default_value_t = 100_000)]
    pub stream_resume_window: i64,
    /// Database connections in the pool.
    #[arg(long, env = "PARLEY_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Seconds after SIGTERM during which the service still takes requests while
    /// `/health/ready` answers 503, so load balancers stop sending first
    /// (Kubernetes: a few seconds; part of the shutdown timeout).
    #[arg(long, env = "PARLEY_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct ProjectorArgs {
    /// Where events come from: `log` tails the event log directly; `kafka` joins
    /// the projector consumer group on the events topic (run more processes to
    /// scale, up to the topic's partitions).
    #[arg(long, env = "PARLEY_FEED", value_enum, default_value_t = Feed::Log)]
    pub feed: Feed,
    /// Event log database the projectors tail (`--feed log`): postgres://...
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: Option<String>,
    /// Read-model database the projectors write: postgres://...
    #[arg(long, env = "PARLEY_READ_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub read_database_url: String,
    /// Run only this projection (history, rooms, users, presence, friends); all by default.
    #[arg(long, env = "PARLEY_PROJECTION")]
    pub projection: Option<String>,
    /// Database connections in each pool.
    #[arg(long, env = "PARLEY_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: u32,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of the projector processes (`--feed kafka`).
    #[arg(long, env = "PARLEY_KAFKA_GROUP", default_value = "parley-projections")]
    pub group: String,
    /// How soon the group notices a dead member, in ms (librdkafka's
    /// `session.timeout.ms` and `max.poll.interval.ms`).
    #[arg(
        long,
        env = "PARLEY_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u64,
    /// How long a member lets a batch fill once its first event arrived, in ms
    /// (`--feed kafka`). 0 applies at once what the client has already fetched;
    /// more means fewer, larger read-model transactions at a low event rate.
    #[arg(long, env = "PARLEY_KAFKA_BATCH_WAIT_MS", default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// Where `/health`, `/health/ready` and `/metrics` answer.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "0.0.0.0:8084")]
    pub listen: SocketAddr,
}

/// Where a projector reads events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Feed {
    Log,
    Kafka,
}

/// The Kafka cluster and the events topic.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "PARLEY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// The topic events are published to.
    #[arg(long, env = "PARLEY_KAFKA_TOPIC", default_value = "parley.events")]
    pub kafka_topic: String,
    /// Extra librdkafka properties (TLS, SASL, tuning), as key=value; repeatable,
    /// or comma-separated (`k=v,k2=v2`, also in the environment). A comma starts
    /// a new property only where a name and `=` follow it, so values keep their
    /// own commas (`ssl.cipher.suites=A,B`).
    #[arg(long = "kafka-option", env = "PARLEY_KAFKA_OPTIONS", value_parser = kafka_options)]
    pub kafka_options: Vec<KafkaOptions>,
}

impl KafkaArgs {
    /// Every `--kafka-option` pair, in the order given (a later one wins).
    pub fn options(&self) -> impl Iterator<Item = &(String, String)> {
        self.kafka_options.iter().flat_map(|o| &o.0)
    }
}

/// The librdkafka properties of one `--kafka-option` (or `PARLEY_KAFKA_OPTIONS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions(pub Vec<(String, String)>);

fn kafka_options(raw: &str) -> Result<KafkaOptions, String> {
    split_properties(raw)
        .into_iter()
        .map(key_value)
        .collect::<Result<_, _>>()
        .map(KafkaOptions)
}

/// Splits `k=v,k2=v2` where a comma is followed by a property name (letters,
/// digits, `.`, `_`, `-`) and `=`; any other comma belongs to the value before it.
pub fn split_properties(raw: &str) -> Vec<&str> {
    let starts_property = |rest: &str| {
        rest.split_once('=').is_some_and(|(name, _)| {
            let name = name.trim();
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
    };
    let mut pieces = Vec::new();
    let mut start = 0;
    for (at, _) in raw.match_indices(',') {
        if starts_property(&raw[at + 1..]) {
            pieces.push(&raw[start..at]);
            start = at + 1;
        }
    }
    pieces.push(&raw[start..]);
    pieces
}

/// An http:// or https:// URL.
fn http_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.starts_with("http://") || raw.starts_with("https://") {
        Ok(raw.to_string())
    } else {
        Err("expected an http:// or https:// URL, e.g. http://otel-collector:4318".into())
    }
}

/// A database URL Parley can open: PostgreSQL or a SQLite file.
fn database_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if ["postgres://", "postgresql://", "sqlite:"]
        .iter()
        .any(|scheme| raw.starts_with(scheme))
    {
        return Ok(raw.to_string());
    }
    let scheme = raw.split_once("://").map_or("none", |(scheme, _)| scheme);
    Err(format!(
        "expected postgres://user:password@host:5432/db or sqlite://file.db (scheme: {scheme})"
    ))
}

fn key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Event log database the relay tails: postgres://...
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: String,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of the topic when the relay creates it (the most projector
    /// processes that can share the work).
    #[arg(long, env = "PARLEY_KAFKA_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor of the topic when the relay creates it.
    #[arg(long, env = "PARLEY_KAFKA_REPLICATION", default_value_t = 1)]
    pub replication_factor: i32,
    /// Where `/health`, `/health/ready` and `/metrics` answer.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to ask (default: `/health` on the port of `--listen`, on loopback).
    #[arg(long, env = "PARLEY_HEALTHCHECK_URL")]
    pub url: Option<String>,
    /// The service's listen address; its port is the one asked.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

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
    #[arg(long, env = "PARLEY_FEED", value_enum, default_value_t = Feed::Log)]
    pub feed: Feed,
    /// Read-model database.
    #[arg(long, env = "PARLEY_READ_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub read_database_url: String,
    /// Event log database (`--feed log`).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        kafka_options(raw).expect("valid options").0
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn kafka_options_split_where_a_property_name_follows_a_comma() {
        assert_eq!(
            pairs("security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512"),
            [
                pair("security.protocol", "SASL_SSL"),
                pair("sasl.mechanism", "SCRAM-SHA-512")
            ]
        );
        // Lists and passwords keep their commas.
        assert_eq!(
            pairs("ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384,linger.ms=5"),
            [
                pair(
                    "ssl.cipher.suites",
                    "ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384"
                ),
                pair("linger.ms", "5")
            ]
        );
        assert_eq!(
            pairs("sasl.password=a,b c, acks = all"),
            [pair("sasl.password", "a,b c"), pair("acks", "all")]
        );
        assert_eq!(
            pairs("fetch.wait.max.ms=5"),
            [pair("fetch.wait.max.ms", "5")]
        );
    }

    #[test]
    fn a_kafka_option_without_a_value_is_refused() {
        let err = kafka_options("linger.ms").unwrap_err();
        assert!(err.contains("expected key=value"), "{err}");
        assert!(kafka_options("=5").is_err());
    }

    #[test]
    fn every_kafka_option_flag_is_split_the_same_way() {
        #[derive(clap::Parser)]
        struct Probe {
            #[command(flatten)]
            kafka: KafkaArgs,
        }
        let flags = Probe::try_parse_from([
            "probe",
            "--kafka-option",
            "ssl.cipher.suites=A,B",
            "--kafka-option",
            "acks=all,linger.ms=1",
        ])
        .expect("flags parse");
        let got: Vec<_> = flags.kafka.options().cloned().collect();
        assert_eq!(
            got,
            [
                pair("ssl.cipher.suites", "A,B"),
                pair("acks", "all"),
                pair("linger.ms", "1")
            ]
        );
    }
}
