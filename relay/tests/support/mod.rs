//! Shared pieces of the relay tests: the broker gate, a fresh log, events, a consumer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::try_join_all;
use parley_event_log::pg::PgLog;
use parley_event_log::{
    testing, AppendRequest, AppendedEvent, EventEnvelope, EventLog, Metadata, NewEvent, StreamWrite,
};
use parley_kafka::KafkaSettings;
use parley_relay::{Relay, RelayOptions, RelayStatus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The shared test broker, or `None` (after saying why) when the test must skip.
/// With `PARLEY_KAFKA_TESTS=1` (CI) a missing broker fails the test instead.
pub fn kafka_brokers() -> Option<String> {
    let addr = std::env::var("PARLEY_KAFKA_ADDR").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let required = std::env::var("PARLEY_KAFKA_TESTS").is_ok_and(|v| v == "1");
    let up = addr.parse().is_ok_and(|sock| {
        std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_ok()
    });
    if up {
        return Some(addr);
    }
    assert!(
        !required,
        "PARLEY_KAFKA_TESTS=1 but no Kafka broker answers on {addr} \
         (start one with scripts/kafka-test-broker.sh)"
    );
    eprintln!(
        "skipping: no Kafka broker on {addr}; run scripts/kafka-test-broker.sh \
         (PARLEY_KAFKA_TESTS=1 turns this skip into a failure)"
    );
    None
}

/// Settings for a topic of this test alone.
pub fn settings(brokers: &str) -> KafkaSettings {
    KafkaSettings::new(brokers).with_topic(format!("parley.test.{}", Uuid::now_v7().simple()))
}

/// A migrated Postgres log in a database of its own, and its pool.
pub async fn fresh_log() -> (Arc<PgLog>, PgPool, String) {
    let url = testing::fresh_database().await.expect("test database");
    let (log, pool) = open_log(&url).await;
    (log, pool, url)
}

/// Another handle on the log at `url`, as a second process would open it.
pub async fn open_log(url: &str) -> (Arc<PgLog>, PgPool) {
    let log = PgLog::connect(url, 8).await.expect("connect");
    log.migrate().await.expect("migrate");
    let pool = log.pool().clone();
    (Arc::new(log), pool)
}

/// Appends `per_aggregate` events to each of `aggregates` new rooms, in commands
/// of up to 10 events, the rooms written concurrently. Every third command
/// carries a traceparent.
pub async fn append_events(
    log: &Arc<PgLog>,
    aggregates: usize,
    per_aggregate: usize,
) -> Vec<AppendedEvent> {
    let writers = (0..aggregates).map(|_| {
        let log = log.clone();
        async move {
            let aggregate_id = Uuid::now_v7();
            let mut appended = Vec::with_capacity(per_aggregate);
            while appended.len() < per_aggregate {
                let version = appended.len() as i64;
                let count = (per_aggregate - appended.len()).min(10);
                let events = (0..count)
                    .map(|i| NewEvent {
                        event_type: "MessageSent".into(),
                        event_version: 1,
                        payload: serde_json::json!({ "n": version + i as i64 + 1 }),
                    })
                    .collect();
                let traceparent = (version % 30 == 0)
                    .then(|| format!("00-{}-{:016x}-01", Uuid::new_v4().simple(), version + 1));
                let request = AppendRequest {
                    streams: vec![StreamWrite {
                        aggregate_type: "room".into(),
                        aggregate_id,
                        expected_version: version,
                        events,
                    }],
                    metadata: Metadata {
                        traceparent,
                        ..Metadata::default()
                    },
                    recorded_at: Utc::now(),
                    idempotency: None,
                };
                appended.extend(log.append(request).await?);
            }
            Ok::<_, parley_event_log::LogError>(appended)
        }
    });
    try_join_all(writers)
        .await
        .expect("append")
        .into_iter()
        .flatten()
        .collect()
}

/// The tail cursor of the last of `appended` (the log's end once they are visible).
pub fn last_cursor(appended: &[AppendedEvent]) -> parley_event_log::Cursor {
    appended
        .iter()
        .map(|a| a.cursor())
        .max()
        .expect("appended events")
}

/// Every event of the log, in tail order. Only complete once nothing is being
/// appended: the tail stops below any transaction still running (invariant 2).
pub async fn whole_log(log: &Arc<PgLog>) -> Vec<EventEnvelope> {
    log.read_after(parley_event_log::Cursor::START, i64::MAX)
        .await
        .expect("read log")
}

/// Relay logs in the test output, filtered by `RUST_LOG` (off by default).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A relay running in a task of its own.
pub struct Running {
    pub status: watch::Receiver<RelayStatus>,
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

/// Starts a relay for `log` on `settings`.
pub fn start_relay(
    log: &Arc<PgLog>,
    pool: &PgPool,
    settings: &KafkaSettings,
    options: RelayOptions,
) -> Running {
    init_tracing();
    let relay = Relay::new(log.clone(), pool.clone(), settings.clone())
        .expect("relay")
        .with_options(options);
    let status = relay.status();
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(relay.run(stop));
    Running {
        status,
        shutdown,
        task,
    }
}

/// Waits until the status satisfies `ready`, or panics after `timeout`.
pub async fn wait_for(
    status: &mut watch::Receiver<RelayStatus>,
    timeout: Duration,
    what: &str,
    ready: impl FnMut(&RelayStatus) -> bool,
) -> RelayStatus {
    let outcome = tokio::time::timeout(timeout, async {
        status.wait_for(ready).await.map(|s| s.clone())
    })
    .await;
    match outcome {
        Ok(Ok(reached)) => reached,
        Ok(Err(_)) => panic!("the relay stopped before {what}"),
        Err(_) => panic!("not {what} within {timeout:?}: {:?}", *status.borrow()),
    }
}

/// One message read back from the topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: serde_json::Value,
    pub envelope: EventEnvelope,
    pub headers: HashMap<String, String>,
}

/// How long the topic must stay silent before a read counts as complete.
const QUIET: Duration = Duration::from_millis(1500);

/// Reads the topic from the beginning of every partition until `done` says so,
/// then on until nothing more arrives for a moment: the result is all the topic
/// holds. Assigns partitions itself (no consumer group, so no slow rebalance).
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool + Send + 'static,
) -> Vec<Record> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set(
                "group.id",
                format!("parley-test-{}", Uuid::now_v7().simple()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        assert!(partitions > 0, "topic {topic} has no partitions");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(&topic, partition, Offset::Beginning)
                .expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");

        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        while !done(&records) {
            assert!(
                Instant::now() < deadline,
                "read {} records from {topic} in {timeout:?}, expected more",
                records.len()
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => records.push(record(&message)),
                Some(Err(e)) => eprintln!("consumer error (retrying): {e}"),
                None => {}
            }
        }
        // Whatever else the topic holds (duplicates) arrives within a quiet spell.
        // Counting by consuming, because Tansu's high watermarks are not message
        // counts (it reports the last batch's base offset + 1).
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < QUIET {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                records.push(record(&message));
                quiet_since = Instant::now();
            }
        }
        records
    })
    .await
    .expect("consumer task")
}

fn record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf-8 key");
    let payload = message.payload().expect("value");
    let value: serde_json::Value = serde_json::from_slice(payload).expect("json value");
    let envelope: EventEnvelope = serde_json::from_slice(payload).expect("an envelope");
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    (h.key.to_string(), value.unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key,
        value,
        envelope,
        headers,
    }
}

/// The distinct event ids among `records`.
pub fn distinct_ids(records: &[Record]) -> std::collections::HashSet<Uuid> {
    records.iter().map(|r| r.envelope.event_id).collect()
}
