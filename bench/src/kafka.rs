//! Scaled-mode benchmarks: `parley-bench relay` and `parley-bench projectors`.
//! Both need a Kafka broker (`scripts/kafka-test-broker.sh` starts one) and
//! seed a fresh Postgres log with a realistic chat history.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parley_event_log::{Cursor, SharedLog};
use parley_kafka::{KafkaSettings, TopicAdmin};
use parley_relay::{Relay, RelayStatus};
use tokio::process::Command;
use tokio::sync::watch;

use super::commands::TempDb;
use super::seed::seed;
use crate::args::{BenchProjectorsArgs, BenchRelayArgs};

/// A log seeded with `events` events (64 users, 100 rooms).
async fn seeded_log(admin_url: &str, events: u64) -> anyhow::Result<(TempDb, SharedLog, Cursor)> {
    let db = TempDb::create(admin_url).await?;
    let log = parley_event_log::open(&db.url, 8).await?;
    eprintln!("seeding {events} events ...");
    let started = Instant::now();
    let seeded = seed(&log, events, 64, 100).await?;
    let head = log
        .read_newest(1)
        .await?
        .last()
        .map(|e| e.cursor())
        .context("the seeded log is empty")?;
    eprintln!(
        "seeded {} events in {:.1} s",
        seeded.events,
        started.elapsed().as_secs_f64()
    );
    Ok((db, log, head))
}

fn settings(brokers: &str, topic: &str, partitions: i32) -> KafkaSettings {
    let mut settings = KafkaSettings::new(brokers).with_topic(topic);
    settings.partitions = partitions;
    settings
}

/// Publishes the whole log to `settings.topic` with one in-process relay; returns
/// how long the backlog took from the moment the relay led, and the count.
async fn relay_all(
    log_url: &str,
    settings: KafkaSettings,
    head: Cursor,
) -> anyhow::Result<(Duration, u64)> {
    let relay = Relay::connect(log_url, settings).await?;
    let mut status = relay.status();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));
    status.wait_for(|s| s.leader).await?;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    let watching = status.clone();
    loop {
        tokio::select! {
            done = status.wait_for(|s: &RelayStatus| s.cursor >= head) => { done.map(|_| ())?; break; }
            _ = ticker.tick() => {
                let s = watching.borrow().clone();
                eprintln!("  relay: {:>9} published after {:.1} s (kafka_ok={})",
                    s.published_total, started.elapsed().as_secs_f64(), s.kafka_ok);
            }
        }
    }
    let elapsed = started.elapsed();
    let published = status.borrow().published_total;
    stop.send_replace(true);
    task.await?;
    Ok((elapsed, published))
}

/// Frees the broker's memory (a test broker keeps topics in RAM).
pub async fn delete_topic(settings: &KafkaSettings) {
    if let Err(e) = async { TopicAdmin::new(settings)?.delete().await }.await {
        eprintln!("could not delete topic {}: {e}", settings.topic);
    }
}

pub async fn relay(args: BenchRelayArgs) -> anyhow::Result<()> {
    let (db, log, head) = seeded_log(&args.server.admin_url, args.events).await?;
    let topic = format!("parley.bench.{}", uuid::Uuid::now_v7().simple());
    let settings = settings(&args.kafka.kafka_brokers, &topic, args.kafka.partitions);
    eprintln!("relaying the backlog to {topic} ...");
    let (elapsed, published) = relay_all(&db.url, settings.clone(), head).await?;
    println!("parley-bench relay");
    println!("  broker            {}", args.kafka.kafka_brokers);
    println!("  partitions        {}", args.kafka.partitions);
    println!("  backlog           {published} events");
    println!("  time              {:.2} s", elapsed.as_secs_f64());
    println!(
        "  throughput        {:.0} events/s",
        published as f64 / elapsed.as_secs_f64()
    );
    delete_topic(&settings).await;
    drop(log);
    db.drop_now().await
}

/// Applied offsets of `projection` summed over partitions, and the distinct
/// members that reported owning partitions of `topic` recently.
async fn progress(
    pool: &sqlx::PgPool,
    projection: &str,
    topic: &str,
) -> anyhow::Result<(i64, usize)> {
    let applied: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(next_offset), 0) AS BIGINT) FROM projection_offsets
         WHERE projection = $1 AND topic = $2",
    )
    .bind(projection)
    .bind(topic)
    .fetch_one(pool)
    .await
    .unwrap_or(0);
    Ok((applied, members_holding_partitions(pool, topic).await))
}

/// The distinct members that reported owning partitions of `topic` in the
/// last 15 s (each member records them every few seconds).
pub async fn members_holding_partitions(pool: &sqlx::PgPool, topic: &str) -> usize {
    let members: Vec<String> = sqlx::query_scalar(
        "SELECT member_id FROM projector_members
         WHERE topic = $1 AND partitions <> '' AND partitions <> '[]'
           AND updated_at > $2",
    )
    .bind(topic)
    .bind((chrono::Utc::now() - chrono::Duration::seconds(15)).timestamp_micros())
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    members.into_iter().collect::<HashSet<_>>().len()
}

/// With the backlog already on the topic and every member started: waits until
/// `published` events are applied; returns the time and the count applied from
/// the first sample (every 100 ms) that found something applied. The members
/// joined before this is called, so what they applied while later ones joined
/// is left out.
async fn drain(
    pool: &sqlx::PgPool,
    projection: &str,
    topic: &str,
    published: i64,
) -> anyhow::Result<(Duration, u64)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut start: Option<(Instant, i64)> = None;
    let mut applied = 0;
    let mut last_change = Instant::now();
    while applied < published {
        if Instant::now() > deadline {
            bail!("only {applied} of {published} applied after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (now_applied, _) = progress(pool, projection, topic).await?;
        if start.is_none() && now_applied > 0 {
            // What was applied by now (also while later members joined) is the
            // baseline: only events applied after this sample count.
            start = Some((Instant::now(), now_applied));
        }
        if now_applied != applied {
            applied = now_applied;
            last_change = Instant::now();
        }
    }
    let (from, baseline) = start.context("nothing was applied")?;
    Ok((last_change - from, (applied - baseline) as u64))
}

pub async fn projectors(args: BenchProjectorsArgs) -> anyhow::Result<()> {
    if args.members.is_empty() || args.members.contains(&0) {
        bail!("--members takes counts of at least 1, e.g. --members 1,2,3");
    }
    let (db, log, head) = seeded_log(&args.server.admin_url, args.events).await?;
    let mut results = Vec::new();
    for &members in &args.members {
        let topic = format!("parley.bench.{}", uuid::Uuid::now_v7().simple());
        let group = format!("parley-bench-{}", uuid::Uuid::now_v7().simple());
        let settings = settings(&args.kafka.kafka_brokers, &topic, args.kafka.partitions);
        TopicAdmin::new(&settings)?.ensure().await?;
        let read_db = TempDb::create(&args.server.admin_url).await?;
        // The read models' tables and the members' bookkeeping exist before anyone polls.
        parley_projections::ReadStore::open(&read_db.url, 1).await?;
        let pool = sqlx::PgPool::connect(&read_db.url).await?;
        let backlog = if args.backlog_first {
            eprintln!("{members} member(s): publishing the backlog to {topic} first ...");
            Some(relay_all(&db.url, settings.clone(), head).await?)
        } else {
            None
        };

        // The group forms on the empty topic first (Tansu rebalances take many
        // seconds), then the backlog is published and the members drain it.
        eprintln!("{members} member(s): forming group {group} ...");
        let mut children = Vec::new();
        for _ in 0..members {
            children.push(
                Command::new(crate::parley_binary())
                    .args(["projector", "--feed", "kafka", "--projection"])
                    .arg(&args.projection)
                    .args(["--session-timeout-ms", "6000"])
                    .env("PARLEY_READ_DATABASE_URL", &read_db.url)
                    .env("PARLEY_KAFKA_BROKERS", &args.kafka.kafka_brokers)
                    .env("PARLEY_KAFKA_TOPIC", &topic)
                    .env("PARLEY_KAFKA_GROUP", &group)
                    .env("PARLEY_LISTEN", "127.0.0.1:0")
                    .env("PARLEY_LOG", "warn")
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting a projector")?,
            );
            // One at a time: members joining at the same moment can leave one
            // of them without partitions on Tansu.
            let deadline = Instant::now() + Duration::from_secs(120);
            while progress(&pool, &args.projection, &topic).await?.1 < children.len() {
                if Instant::now() > deadline {
                    bail!(
                        "the group did not reach {} members in 120 s",
                        children.len()
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }

        if let Some((relay_time, published)) = backlog {
            let (elapsed, drained) =
                drain(&pool, &args.projection, &topic, published as i64).await?;
            results.push((members, drained, elapsed, relay_time));
            drop(children);
            pool.close().await;
            delete_topic(&settings).await;
            read_db.drop_now().await?;
            continue;
        }
        let relaying = {
            let (url, settings) = (db.url.clone(), settings.clone());
            tokio::spawn(async move { relay_all(&url, settings, head).await })
        };
        let mut first: Option<Instant> = None;
        let mut last_change = Instant::now();
        let mut applied = 0;
        let mut relayed: Option<(Duration, u64)> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if relaying.is_finished() && relayed.is_none() {
                relayed = Some(relaying.await??);
                break;
            }
            let (now_applied, _) = progress(&pool, &args.projection, &topic).await?;
            if now_applied > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if now_applied != applied {
                applied = now_applied;
                last_change = Instant::now();
            }
        }
        let (relay_time, published) = relayed.expect("relay finished");
        let published = published as i64;
        let deadline = Instant::now() + Duration::from_secs(600);
        while applied < published {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (now_applied, _) = progress(&pool, &args.projection, &topic).await?;
            if first.is_none() && now_applied > 0 {
                first = Some(Instant::now());
            }
            if now_applied != applied {
                applied = now_applied;
                last_change = Instant::now();
            }
            if Instant::now() > deadline {
                bail!("only {applied} of {published} applied after 10 minutes");
            }
        }
        let elapsed = last_change - first.unwrap_or(last_change);
        results.push((members, published as u64, elapsed, relay_time));
        drop(children);
        pool.close().await;
        delete_topic(&settings).await;
        read_db.drop_now().await?;
    }
    println!("parley-bench projectors");
    println!("  broker            {}", args.kafka.kafka_brokers);
    println!("  partitions        {}", args.kafka.partitions);
    println!("  projection        {}", args.projection);
    if args.backlog_first {
        println!("  mode              backlog published first; counted once every member held partitions");
    }
    for (members, applied, elapsed, relay_time) in results {
        let relay = if args.backlog_first {
            "before the members started"
        } else {
            "while the members applied"
        };
        println!(
            "  {members} member(s)       {applied} events applied in {:.2} s: {:.0} events/s (relay published the backlog in {:.2} s, {relay})",
            elapsed.as_secs_f64(),
            applied as f64 / elapsed.as_secs_f64().max(1e-9),
            relay_time.as_secs_f64()
        );
    }
    drop(log);
    db.drop_now().await
}
