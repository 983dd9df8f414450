//! The benchmarks' command line: `parley-bench <benchmark> [options]`.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "parley-bench",
    version,
    about = "Parley's benchmarks: each starts what it measures and prints figures",
    long_about = "Parley's benchmarks: each makes its own databases (and topics), \
        starts the `parley` services it measures as child processes, drives them \
        and prints figures. docs/benchmarks.md gives the current figures, the \
        method and what limits each. Build both binaries in release mode first: \
        `cargo build --release -p parley -p parley-bench`."
)]
pub struct Cli {
    /// The `parley` server binary the benchmarks start (default: the `parley`
    /// beside this binary, as `cargo build` places them).
    #[arg(long, global = true, env = "PARLEY_BIN", value_name = "PATH")]
    pub parley: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: BenchCommand,
}

/// Where a projector reads events (as `parley projector --feed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Feed {
    Log,
    Kafka,
}

/// The export's file format (as `parley events export --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Parquet,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive the HTTP command API on Postgres with concurrent senders; print
    /// throughput, latency percentiles and the server's peak RSS.
    Commands(BenchCommandsArgs),
    /// Seed a fresh Postgres log and time `projections rebuild` of one read model.
    Rebuild(BenchRebuildArgs),
    /// Seed a fresh log, project it, and drive history pages through the HTTP read
    /// API; print throughput, latency percentiles and the server's peak RSS.
    Queries(BenchQueriesArgs),
    /// Send at a steady rate and time each message's arrival on an SSE stream
    /// and in a history page, from the moment its send was answered.
    Freshness(BenchFreshnessArgs),
    /// Seed a fresh log and time one relay publishing the backlog to a fresh
    /// topic (needs a Kafka broker).
    Relay(BenchRelayArgs),
    /// Seed a fresh log, form a projector group of N processes on a fresh topic,
    /// publish the backlog and time the group applying it (needs a Kafka broker).
    Projectors(BenchProjectorsArgs),
    /// Seed a fresh Postgres log and time `events export` of it (events/s).
    Export(BenchExportArgs),
    /// Run the whole scaled mode for a long time at a steady rate, with SSE
    /// clients coming and going; report RSS over time, p99 per minute, errors,
    /// and whether the read models equal the log; PASS or FAIL per criterion.
    #[command(long_about = SOAK_ABOUT)]
    Soak(BenchSoakArgs),
    /// Read while people write: history pages (or room lists) at full speed
    /// while senders send at a fixed rate; figures for both, the page cache's
    /// hit rate and each process's CPU share. The headline read figure.
    Mixed(BenchMixedArgs),
    /// WebSockets on one read API: answer-to-frame latency, frames/s, sockets
    /// opened per second, memory per socket, and a reconnect storm with resume.
    Fanout(BenchFanoutArgs),
}

const SOAK_ABOUT: &str = "Runs the whole scaled mode (command API, relay, a group of \
projectors, read API: separate processes on fresh databases and a fresh topic) for \
--minutes at a steady --rate of sends, while SSE clients connect, stay 5 to 30 s \
and reconnect. Every window (a minute by default) prints sends, errors, latency \
p50/p99/max, SSE connects and frames and every process's RSS. At the end it stops \
sending, replays the log into a fresh read database with a log-fed projector and \
compares every read-model table with the live ones.

Pass criteria, each printed as PASS, FAIL or SKIP (not judged: too short a run); \
the exit status is non-zero if any FAILs:
  RSS flat       no process's RSS, sampled every --sample-every seconds, grows more \
than 10% after the warm-up: the largest sample after it against the sample at its end.
  p99 stable     no full window after the warm-up has a send p99 above twice the \
median of those windows' p99s (nor less than 10 ms above it: below that is noise); \
needs two such windows.
  zero errors    every send answered 201 Created, and no SSE connection failed or \
ended before its client left.
  models = log   the read models equal a replay of the log (every table, row for \
row), history holds as many messages as the log has MessageSent events, as many \
as sends were answered 201, and no event was parked as a dead letter.

Typical: `parley-bench soak --minutes 30 --rate <half the measured capacity>` \
with the broker of scripts/kafka-test-broker.sh.";

/// Where a benchmark makes its databases.
#[derive(Debug, Args)]
pub struct BenchServerArgs {
    /// Postgres server for the benchmark's own databases (created fresh, dropped
    /// after).
    #[arg(
        long,
        env = "PARLEY_BENCH_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub admin_url: String,
}

/// The broker a Kafka benchmark publishes to, and its topics' partitions.
#[derive(Debug, Args)]
pub struct BenchKafkaArgs {
    /// Partitions of the benchmark's topics.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Kafka bootstrap servers.
    #[arg(long, env = "PARLEY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
}

#[derive(Debug, Args)]
pub struct BenchRelayArgs {
    /// Events to seed the log with.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[command(flatten)]
    pub kafka: BenchKafkaArgs,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

#[derive(Debug, Args)]
pub struct BenchProjectorsArgs {
    /// Events to seed the log with.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Group sizes to measure, one run each (a fresh topic and read database per run).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub members: Vec<usize>,
    /// The projection the members run.
    #[arg(long, default_value = "history")]
    pub projection: String,
    /// Publish the whole backlog before the members start, so they drain a full
    /// topic without the relay sharing the machine's CPU. The rate then counts
    /// only what was applied after every member joined (the first reading, every
    /// 100 ms, that finds something applied sets the baseline).
    #[arg(long)]
    pub backlog_first: bool,
    #[command(flatten)]
    pub kafka: BenchKafkaArgs,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

#[derive(Debug, Args)]
pub struct BenchExportArgs {
    /// Events to seed the log with (nearly all of them messages).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Export format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Parquet)]
    pub format: ExportFormat,
    /// Export the log as just written, without the VACUUM a log in service has
    /// had: the export's scan then also sets every row's hint bits and writes
    /// every page back.
    #[arg(long)]
    pub no_vacuum: bool,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

#[derive(Debug, Args)]
pub struct BenchFreshnessArgs {
    /// Sends per second, paced.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Seconds of sending at the same rate before the timed part. Those sends
    /// count as failed if they fail, but are not timed: the services start
    /// cold (connection pools, caches, the Kafka clients' first fetches).
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Also write each timed send's SSE latency to this CSV file
    /// (`answered_ms,sse_ms`: when its send was answered, from the first timed
    /// send, and how long its event took), to see the latency over the run.
    #[arg(long, value_name = "FILE")]
    pub latencies_csv: Option<std::path::PathBuf>,
    /// Probe the history query for one send in this many (each probe polls
    /// every 2 ms until its message shows, so probes add load of their own).
    #[arg(long, default_value_t = 100)]
    pub history_every: u64,
    /// `log`: one projector tails the log. `kafka`: a relay publishes to a fresh
    /// topic and one projector consumes it (needs a Kafka broker).
    #[arg(long, value_enum, default_value_t = Feed::Log)]
    pub feed: Feed,
    /// Kafka bootstrap servers (`--feed kafka`).
    #[arg(long, env = "PARLEY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// A librdkafka property for the relay and the projector (`--feed kafka`),
    /// as key=value; repeatable. On Tansu, `fetch.wait.max.ms=10`: it holds every
    /// fetch for that wait even when it has data (Apache Kafka answers at once).
    #[arg(long = "kafka-option", value_parser = key_value)]
    pub kafka_options: Vec<(String, String)>,
    /// Create the read-model database on this server instead (an admin URL
    /// like `--admin-url`): the log's server then sees none of the projector's
    /// transactions.
    #[arg(long, env = "PARLEY_BENCH_READ_ADMIN_URL", value_name = "URL")]
    pub read_admin_url: Option<String>,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

#[derive(Debug, Args)]
pub struct BenchSoakArgs {
    /// Minutes of sending.
    #[arg(long, default_value_t = 30, conflicts_with = "seconds")]
    pub minutes: u64,
    /// Seconds of sending instead of --minutes, for short runs.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Minutes of warm-up, at the start of the run, that the RSS and p99
    /// criteria leave out.
    #[arg(long, default_value_t = 5, conflicts_with = "warmup_seconds")]
    pub warmup_minutes: u64,
    /// Seconds of warm-up instead of --warmup-minutes.
    #[arg(long)]
    pub warmup_seconds: Option<u64>,
    /// Sends per second, paced (a send the driver could not start on time is
    /// started at once; how late it was shows as the lag).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Users: each sends into a room of its own and into the shared rooms
    /// every user joined.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// SSE clients, each streaming as one of the users (in turn).
    #[arg(long, default_value_t = 20)]
    pub sse_clients: usize,
    /// Projector processes, one consumer group (`--feed log`: always 1).
    #[arg(long, default_value_t = 2)]
    pub projectors: usize,
    /// `kafka`: relay, topic and a projector group. `log`: one projector tails
    /// the log, no relay.
    #[arg(long, value_enum, default_value_t = Feed::Kafka)]
    pub feed: Feed,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 10)]
    pub sample_every: u64,
    /// Seconds per report line and p99 window.
    #[arg(long, default_value_t = 60)]
    pub window_seconds: u64,
    /// Write every RSS sample to this CSV file (KiB per process).
    #[arg(long, value_name = "FILE")]
    pub report_csv: Option<std::path::PathBuf>,
    /// Database connections of each service's pool: Postgres's
    /// `max_connections` (100 by default) is shared by every service, the
    /// replay at the end and whatever else uses the server.
    #[arg(long, default_value_t = 4)]
    pub db_pool_size: u32,
    /// A librdkafka property for the services (`--feed kafka`), as key=value;
    /// repeatable (on Tansu: `fetch.wait.max.ms=10`).
    #[arg(long = "kafka-option", value_parser = key_value)]
    pub kafka_options: Vec<(String, String)>,
    #[command(flatten)]
    pub kafka: BenchKafkaArgs,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

impl BenchSoakArgs {
    /// How long to send.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds.unwrap_or(self.minutes * 60))
    }

    /// The warm-up the RSS and p99 criteria leave out.
    pub fn warmup(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.warmup_seconds.unwrap_or(self.warmup_minutes * 60))
    }
}

#[derive(Debug, Args)]
pub struct BenchRebuildArgs {
    /// The read model to rebuild.
    #[arg(long, default_value = "history")]
    pub projection: String,
    /// Events to seed the log with.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

#[derive(Debug, Args)]
pub struct BenchQueriesArgs {
    /// Events to seed the log with (nearly all of them messages).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Messages per page.
    #[arg(long, default_value_t = 50)]
    pub page: i64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Connections of the read API's database pool.
    #[arg(long, default_value_t = 16)]
    pub db_pool_size: u32,
    /// The read API's page cache in MiB (0: every page from the database).
    #[arg(long, default_value_t = 64)]
    pub page_cache_mb: usize,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

#[derive(Debug, Args)]
pub struct BenchCommandsArgs {
    /// Concurrent clients (each its own user and keep-alive connection).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    #[command(flatten)]
    pub server: BenchServerArgs,
    /// Command API to drive instead of starting one (its RSS is then not reported).
    #[arg(long)]
    pub target: Option<String>,
    /// Connections of the server's database pool.
    #[arg(long, default_value_t = 16)]
    pub db_pool_size: u32,
}

/// `key=value`, as `parley --kafka-option` takes it.
fn key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))
}

#[derive(Debug, Args)]
pub struct BenchFanoutArgs {
    /// Rooms; each socket's user is a member of one.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Members of each room, each with one socket open: --rooms x --members
    /// sockets in all (at most about 19,000: one process may hold 20,000
    /// open files here).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Sends per second over HTTP, to random rooms as random members (0: the
    /// sockets stay idle).
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Sockets then dropped and reopened all at once with resume while sends
    /// go on (0: no storm).
    #[arg(long, default_value_t = 0)]
    pub reconnect: usize,
    #[command(flatten)]
    pub server: BenchServerArgs,
}

/// What `parley-bench mixed` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MixedReads {
    /// The newest page of a random room's history, as a random member.
    History,
    /// `GET /v1/rooms` (the room list with unread counts), as a random user.
    Rooms,
}

#[derive(Debug, Args)]
pub struct BenchMixedArgs {
    /// What the readers ask for.
    #[arg(long, value_enum, default_value_t = MixedReads::History)]
    pub reads: MixedReads,
    /// Reader connections, each asking again as soon as answered.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Sends per second while the readers read, paced, over all rooms (0:
    /// reads alone).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Users; each is a member of --rooms-per-user rooms.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Rooms each user is a member of (and sees in the room list).
    #[arg(long, default_value_t = 10)]
    pub rooms_per_user: usize,
    /// Messages in each room before the run.
    #[arg(long, default_value_t = 200)]
    pub messages_per_room: usize,
    /// Messages per history page.
    #[arg(long, default_value_t = 50)]
    pub page: i64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Warm-up seconds (readers and senders at full rate), not measured.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// The read API's page cache in MiB (0: every page from the database).
    #[arg(long, default_value_t = 64)]
    pub page_cache_mb: usize,
    /// Connections of each service's database pool.
    #[arg(long, default_value_t = 16)]
    pub db_pool_size: u32,
    /// Seconds of pgbench running the same page query on the read database
    /// before the run, with as many clients as --connections: the anchor the
    /// read figures are compared with (0: skip; needs `pgbench` on the PATH).
    #[arg(long, default_value_t = 10)]
    pub pgbench_seconds: u64,
    #[command(flatten)]
    pub server: BenchServerArgs,
}
