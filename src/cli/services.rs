//! The options of the long-running services: `dev`, `command-api`,
//! `read-api`, `projector`, `relay`, and the container health check.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use parley_kafka::TopicKeys;

use super::parse::{database_url, kafka_options};

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
    #[command(flatten)]
    pub turn: TurnArgs,
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
    /// Seconds a call rings before nobody answering makes it a missed call
    /// (command API; 5 to 600).
    #[arg(long, env = "PARLEY_CALL_RING_SECS", default_value_t = 45,
          value_parser = clap::value_parser!(u64).range(5..=600))]
    pub call_ring_secs: u64,
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

impl LifecycleArgs {
    /// An API's shutdown: it keeps accepting for `delay_secs` after the signal,
    /// which must fit inside the timeout.
    pub fn for_api(
        &self,
        delay_secs: u64,
        limits: &LimitArgs,
    ) -> anyhow::Result<parley_http_kit::ShutdownSettings> {
        if delay_secs >= self.shutdown_timeout_secs {
            anyhow::bail!(
                "PARLEY_SHUTDOWN_DELAY_SECS ({delay_secs}) must be shorter than \
                 PARLEY_SHUTDOWN_TIMEOUT_SECS ({}): the delay is spent inside the timeout",
                self.shutdown_timeout_secs
            );
        }
        Ok(parley_http_kit::ShutdownSettings {
            delay: std::time::Duration::from_secs(delay_secs),
            limits: limits.service_limits(),
            ..self.for_worker()
        })
    }

    /// A worker's shutdown (projector, relay): its HTTP side only answers
    /// probes, so it stops accepting at once.
    pub fn for_worker(&self) -> parley_http_kit::ShutdownSettings {
        parley_http_kit::ShutdownSettings {
            timeout: std::time::Duration::from_secs(self.shutdown_timeout_secs),
            delay: std::time::Duration::ZERO,
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            limits: parley_http_kit::ServiceLimits::default(),
        }
    }
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

/// TURN servers for calls' media (`GET /v1/turn-credentials`).
#[derive(Debug, Args)]
pub struct TurnArgs {
    /// TURN (and STUN) server URLs handed to clients, comma-separated, e.g.
    /// `turn:turn.example.com:3478,turns:turn.example.com:5349`.
    #[arg(long = "turn-url", env = "PARLEY_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN servers (coturn: `static-auth-secret`
    /// with `use-auth-secret`), at least 16 bytes. Without it
    /// `/v1/turn-credentials` answers no servers.
    #[arg(long, env = "PARLEY_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Seconds a TURN credential lasts (60 to 604800).
    #[arg(long, env = "PARLEY_TURN_TTL_SECS", default_value_t = 86_400)]
    pub turn_ttl_secs: u64,
}

impl TurnArgs {
    /// The read API's TURN settings: none without a secret.
    pub fn settings(&self) -> anyhow::Result<Option<parley_read_api::turn::TurnSettings>> {
        let Some(secret) = &self.turn_secret else {
            return Ok(None);
        };
        let ttl = std::time::Duration::from_secs(self.turn_ttl_secs);
        parley_read_api::turn::TurnSettings::new(self.turn_urls.clone(), secret, ttl)
            .map(Some)
            .map_err(anyhow::Error::msg)
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
    #[arg(long, env = "PARLEY_FEED", value_enum, default_value_t = FeedFlag::Log)]
    pub feed: FeedFlag,
    /// MiB of newest history pages, memberships and room lists kept in memory
    /// (Postgres only; an entry lasts until a commit about its room or user).
    /// 0 turns the cache off.
    #[arg(long, env = "PARLEY_PAGE_CACHE_MB", default_value_t = 64)]
    pub page_cache_mb: usize,
    /// Live streams (`/v1/stream` and `/v1/ws`) one user may hold open at once
    /// (429 past it).
    #[arg(long, env = "PARLEY_MAX_STREAMS_PER_USER", default_value_t = 8)]
    pub max_streams_per_user: u32,
    /// WebSockets that may wait for their first (`auth`) frame at once; past
    /// it, a socket without an `Authorization` header is refused with 503.
    #[arg(long, env = "PARLEY_WS_MAX_UNAUTHENTICATED", default_value_t = 1024)]
    pub ws_max_unauthenticated: usize,
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
    #[command(flatten)]
    pub turn: TurnArgs,
    /// The command API's base URL as this replica reaches it
    /// (`http://command-api:8081`): WebSocket `delivered` frames are recorded
    /// there as the socket's user. Without it they are refused with 503.
    #[arg(long, env = "PARLEY_COMMAND_API_URL")]
    pub command_api_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProjectorArgs {
    /// Where events come from: `log` tails the event log directly; `kafka` joins
    /// the projector consumer group on the events topic (run more processes to
    /// scale, up to the topic's partitions).
    #[arg(long, env = "PARLEY_FEED", value_enum, default_value_t = FeedFlag::Log)]
    pub feed: FeedFlag,
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

/// `--feed`: where a projector reads events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedFlag {
    Log,
    Kafka,
}

impl From<FeedFlag> for parley_projections::FedBy {
    fn from(flag: FeedFlag) -> Self {
        match flag {
            FeedFlag::Log => Self::Log,
            FeedFlag::Kafka => Self::Partitions,
        }
    }
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
    /// Keys the relay signs each record with and projector members check it
    /// with, comma-separated, each at least 32 bytes: a member parks a record
    /// whose signature is missing or wrong (another producer's). The first key
    /// signs, any verifies: rotate by adding the new key first on the members,
    /// then on the relay, then dropping the old one. Unset: no signatures.
    #[arg(long, env = "PARLEY_TOPIC_SIGNING_KEYS", hide_env_values = true, value_parser = topic_keys)]
    pub topic_signing_keys: Option<TopicKeys>,
}

fn topic_keys(list: &str) -> Result<TopicKeys, String> {
    TopicKeys::parse(list)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        lifecycle: LifecycleArgs,
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn the_delay_must_fit_inside_the_timeout() {
        let args = Wrapper::parse_from(["parley", "--shutdown-timeout-secs", "5"]);
        let fits = args
            .lifecycle
            .for_api(4, &args.limits)
            .expect("4 s fits in 5 s");
        assert_eq!(fits.delay, std::time::Duration::from_secs(4));
        let err = args
            .lifecycle
            .for_api(5, &args.limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PARLEY_SHUTDOWN_DELAY_SECS"), "{err}");
        assert_eq!(args.lifecycle.for_worker().delay, std::time::Duration::ZERO);
    }
}
