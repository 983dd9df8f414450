//! Relay throughput from a backlog: fills a fresh log with N events, starts one
//! relay on a fresh topic, and prints how fast it drains the backlog.
//!
//! ```text
//! scripts/kafka-test-broker.sh
//! cargo run --release -p parley-relay --example relay_throughput -- 1000000
//! ```
//!
//! Environment: `PARLEY_KAFKA_ADDR` (default `127.0.0.1:9092`),
//! `PARLEY_TEST_DATABASE_URL` (the Postgres server a database is made on),
//! `PARLEY_RELAY_BATCH` (events per batch, default the relay's).

use std::time::Instant;

use parley_event_log::pg::PgLog;
use parley_event_log::testing;
use parley_kafka::KafkaSettings;
use parley_relay::{Relay, RelayOptions};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use tokio::sync::watch;

/// Events inserted per transaction while filling the log.
const FILL_CHUNK: i64 = 100_000;
/// Rooms the events are spread over.
const AGGREGATES: i64 = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: i64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |n| n.parse())?;
    let brokers = std::env::var("PARLEY_KAFKA_ADDR").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let mut options = RelayOptions::default();
    if let Ok(batch) = std::env::var("PARLEY_RELAY_BATCH") {
        options.batch_size = batch.parse()?;
    }

    let url = testing::fresh_database().await?;
    let log = PgLog::connect(&url, 4).await?;
    log.migrate().await?;
    let started = Instant::now();
    fill(&log, events).await?;
    println!("filled {events} events in {:.1?}", started.elapsed());
    let (tx_id, position): (String, i64) = sqlx::query_as(
        "SELECT tx_id::text, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1",
    )
    .fetch_one(log.pool())
    .await?;
    let last = parley_event_log::Cursor {
        tx_id: tx_id.parse()?,
        position,
    };

    let topic = format!("parley.bench.{}", uuid::Uuid::now_v7().simple());
    let settings = KafkaSettings::new(brokers).with_topic(&topic);
    let settings_for_cleanup = settings.clone();
    let pool = log.pool().clone();
    let relay = Relay::new(std::sync::Arc::new(log), pool, settings)?.with_options(options.clone());
    let mut status = relay.status();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));

    status.wait_for(|s| s.leader).await?;
    let started = Instant::now();
    let progress = status.clone();
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = status.wait_for(|s| s.cursor == last) => break,
            _ = ticker.tick() => {
                let s = progress.borrow().clone();
                println!("  {:>9} published, {:.1?}, kafka_ok={}", s.published_total, started.elapsed(), s.kafka_ok);
            }
        }
    }
    let elapsed = started.elapsed();
    let published = status.borrow().published_total;
    println!(
        "relayed {published} events (batch {}) to {topic} in {elapsed:.2?}: {:.0} events/s",
        options.batch_size,
        published as f64 / elapsed.as_secs_f64()
    );
    stop.send(true)?;
    task.await?;
    delete_topic(&settings_for_cleanup).await
}

/// Frees the broker's memory (the shared test broker keeps topics in RAM).
async fn delete_topic(settings: &KafkaSettings) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    for result in admin
        .delete_topics(&[&settings.topic], &AdminOptions::new())
        .await?
    {
        if let Err((topic, code)) = result {
            println!("could not delete {topic}: {code:?}");
        }
    }
    Ok(())
}

/// Inserts `events` rows straight into the log table, in transactions of
/// `FILL_CHUNK`: the relay only reads, so how they got there does not matter.
async fn fill(log: &PgLog, events: i64) -> anyhow::Result<()> {
    let mut from = 0;
    while from < events {
        let to = (from + FILL_CHUNK).min(events);
        sqlx::query(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, recorded_at, metadata, payload)
             SELECT gen_random_uuid(), 'room', md5('room' || (g % $3))::uuid, g / $3 + 1,
                    'MessageSent', 1, now(),
                    jsonb_build_object('actor_id', md5('user' || (g % 97))::uuid,
                                       'correlation_id', md5(g::text)),
                    jsonb_build_object('message_id', md5('m' || g)::uuid,
                                       'sender_id', md5('user' || (g % 97))::uuid,
                                       'body', 'hello, this is message number ' || g)
             FROM generate_series($1::bigint, $2::bigint - 1) AS g",
        )
        .bind(from)
        .bind(to)
        .bind(AGGREGATES)
        .execute(log.pool())
        .await?;
        from = to;
    }
    Ok(())
}
