//! The scaled mode as child processes (command API, relay, projectors, read
//! API, each its own `parley` process on fresh databases), and a client's view
//! of it: what `freshness` and `soak` share.

use std::time::{Duration, Instant};

use anyhow::bail;
use parley_kafka::{KafkaSettings, TopicAdmin};
use uuid::Uuid;

use super::commands::{Server, TempDb};
use crate::args::Feed;

/// What to start.
pub struct Topology<'a> {
    /// Where the databases are made (`--admin-url`).
    pub admin_url: &'a str,
    /// Another server for the read-model database, if any.
    pub read_admin_url: Option<&'a str>,
    pub feed: Feed,
    pub kafka_brokers: &'a str,
    pub kafka_options: &'a [(String, String)],
    /// Make the topic with this many partitions before the relay starts
    /// (`None`: the relay makes it as it would in a deployment).
    pub partitions: Option<i32>,
    /// Projector processes (`--feed kafka`: members of one group; the log feed
    /// runs one, since every log-fed projector applies every event).
    pub projectors: usize,
    /// `PARLEY_DB_POOL_SIZE` of every service (`None`: each service's default).
    pub db_pool_size: Option<u32>,
    /// `PARLEY_PAGE_CACHE_MB` of the read API (`None`: its default).
    pub page_cache_mb: Option<usize>,
}

impl<'a> Topology<'a> {
    /// One log-fed projector on the machine's own server, every service with
    /// its default pool and cache: what the read benchmarks start.
    pub fn log_fed(admin_url: &'a str) -> Self {
        Self {
            admin_url,
            read_admin_url: None,
            feed: Feed::Log,
            kafka_brokers: "",
            kafka_options: &[],
            partitions: None,
            projectors: 1,
            db_pool_size: None,
            page_cache_mb: None,
        }
    }
}

/// The running services and their databases; [`Scaled::stop`] tears all down.
pub struct Scaled {
    pub log_db: TempDb,
    pub read_db: TempDb,
    pub command_api: Server,
    pub relay: Option<Server>,
    pub projectors: Vec<Server>,
    pub read_api: Server,
    kafka: Option<KafkaSettings>,
}

impl Scaled {
    pub async fn start(t: Topology<'_>) -> anyhow::Result<Self> {
        let log_db = TempDb::create(t.admin_url).await?;
        let read_db = match TempDb::create(t.read_admin_url.unwrap_or(t.admin_url)).await {
            Ok(db) => db,
            Err(e) => {
                let _ = log_db.drop_now().await;
                return Err(e);
            }
        };
        let topic = format!("parley.bench.{}", Uuid::now_v7().simple());
        let kafka =
            (t.feed == Feed::Kafka).then(|| KafkaSettings::new(t.kafka_brokers).with_topic(&topic));
        match services(&t, &log_db, &read_db, kafka.as_ref()).await {
            Ok((command_api, relay, projectors, read_api)) => Ok(Self {
                log_db,
                read_db,
                command_api,
                relay,
                projectors,
                read_api,
                kafka,
            }),
            Err(e) => {
                // A failed start leaves nothing behind: its processes were
                // killed as their handles dropped.
                if let Some(settings) = &kafka {
                    super::kafka::delete_topic(settings).await;
                }
                let _ = log_db.drop_now().await;
                let _ = read_db.drop_now().await;
                Err(e)
            }
        }
    }

    /// Every process, named as the figures name it.
    pub fn processes(&self) -> Vec<(String, &Server)> {
        let mut all = vec![("command-api".to_string(), &self.command_api)];
        all.extend(self.relay.iter().map(|r| ("relay".to_string(), r)));
        for (i, p) in self.projectors.iter().enumerate() {
            all.push((format!("projector-{}", i + 1), p));
        }
        all.push(("read-api".to_string(), &self.read_api));
        all
    }

    /// Stops every process, deletes the topic and drops the databases.
    pub async fn stop(self) -> anyhow::Result<()> {
        for projector in self.projectors {
            projector.stop().await;
        }
        self.command_api.stop().await;
        self.read_api.stop().await;
        if let Some(relay) = self.relay {
            relay.stop().await;
        }
        if let Some(settings) = &self.kafka {
            super::kafka::delete_topic(settings).await;
        }
        self.log_db.drop_now().await?;
        self.read_db.drop_now().await
    }
}

/// Starts the command API, the relay (`--feed kafka`), the projectors and the
/// read API, in that order.
async fn services(
    t: &Topology<'_>,
    log_db: &TempDb,
    read_db: &TempDb,
    kafka: Option<&KafkaSettings>,
) -> anyhow::Result<(Server, Option<Server>, Vec<Server>, Server)> {
    let feed = match t.feed {
        Feed::Log => "log",
        Feed::Kafka => "kafka",
    };
    let topic = kafka.map_or(String::new(), |k| k.topic.clone());
    let mut env = vec![
        ("PARLEY_DATABASE_URL", log_db.url.clone()),
        ("PARLEY_READ_DATABASE_URL", read_db.url.clone()),
        ("PARLEY_FEED", feed.to_string()),
        ("PARLEY_KAFKA_BROKERS", t.kafka_brokers.to_string()),
        ("PARLEY_KAFKA_TOPIC", topic.clone()),
        (
            "PARLEY_KAFKA_GROUP",
            format!("parley-bench-{}", Uuid::now_v7().simple()),
        ),
    ];
    if !t.kafka_options.is_empty() {
        let options: Vec<String> = t
            .kafka_options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(("PARLEY_KAFKA_OPTIONS", options.join(",")));
    }
    if let Some(size) = t.db_pool_size {
        env.push(("PARLEY_DB_POOL_SIZE", size.to_string()));
    }
    if let Some(mb) = t.page_cache_mb {
        env.push(("PARLEY_PAGE_CACHE_MB", mb.to_string()));
    }
    if let (Some(settings), Some(partitions)) = (kafka, t.partitions) {
        let mut settings = settings.clone();
        settings.partitions = partitions;
        TopicAdmin::new(&settings)?.ensure().await?;
    }
    let command_api = Server::spawn(&["command-api", "--migrate"], &env).await?;
    let relay = match kafka {
        None => None,
        Some(_) => Some(Server::spawn(&["relay"], &env).await?),
    };
    // The projectors first: they create the read models' tables, and the
    // read API is not ready (nor is it waited for) until they exist.
    let count = if kafka.is_some() {
        t.projectors.max(1)
    } else {
        1
    };
    let mut projectors = Vec::with_capacity(count);
    for _ in 0..count {
        projectors.push(Server::spawn(&["projector"], &env).await?);
        if kafka.is_some() {
            // One at a time, each holding partitions before the next joins:
            // members joining at the same moment can leave one of them
            // without partitions on Tansu.
            members_hold_partitions(&read_db.url, &topic, projectors.len()).await?;
        }
    }
    let read_api = Server::spawn(&["read-api"], &env).await?;
    Ok((command_api, relay, projectors, read_api))
}

/// Waits until `members` members of `topic`'s group hold partitions, as they
/// record them in the read database (their readiness tells only once they
/// applied something).
async fn members_hold_partitions(
    read_url: &str,
    topic: &str,
    members: usize,
) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(read_url)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let holding = super::kafka::members_holding_partitions(&pool, topic).await;
        if holding >= members {
            pool.close().await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {holding} of {members} projectors hold partitions after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the read side knows `room`, so a stream opened now follows it.
pub async fn wait_for_room(
    http: &reqwest::Client,
    read_api: &str,
    token: &str,
    room: &str,
) -> anyhow::Result<()> {
    let url = format!("{read_api}/v1/rooms/{room}");
    let answer = poll(http, &url, token, 30, |s| s.is_success()).await?;
    if !answer.status().is_success() {
        bail!("the read side never saw room {room}");
    }
    Ok(())
}

/// Opens `/v1/stream` as `token`'s user, retrying while the read API answers
/// 503 (its stream hub starts with the first stream and takes streams once it
/// has caught up with the log).
pub async fn open_stream(
    http: &reqwest::Client,
    read_api: &str,
    token: &str,
) -> anyhow::Result<reqwest::Response> {
    let url = format!("{read_api}/v1/stream");
    let answer = poll(http, &url, token, 60, |s| s.as_u16() != 503).await?;
    Ok(answer.error_for_status()?)
}

/// GETs `url` as `token`'s user every 20 ms until `done` takes the answer's
/// status or `seconds` passed; the last answer.
async fn poll(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    seconds: u64,
    done: impl Fn(reqwest::StatusCode) -> bool,
) -> anyhow::Result<reqwest::Response> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let answer = http.get(url).bearer_auth(token).send().await?;
        if done(answer.status()) || Instant::now() > deadline {
            return Ok(answer);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `/v1/stream` answer, read frame by frame.
pub struct SseFrames {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseFrames {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The `data:` of the next frame that has one (keep-alive comments have
    /// none); `None` once the stream ended or failed.
    pub async fn next_data(&mut self) -> Option<String> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let frame = String::from_utf8_lossy(&frame);
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                    return Some(data.trim().to_string());
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.extend_from_slice(&chunk);
        }
    }
}
