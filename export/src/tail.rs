//! `parley events tail`: the Kafka topic into a file, without joining any group.
//!
//! The tail assigns itself every partition (`assign`, never `subscribe`) under a
//! group id of its own (`parley-tail-<random>`, which librdkafka insists on even
//! for `assign`) and commits nothing, so the projectors' consumer group never
//! sees it: no rebalance, no stolen partition, no moved offsets. It starts at the
//! beginning, at an offset, or at the first message at or after a time, and stops
//! once every partition is at the end offset it had at the start and the topic
//! has then been quiet for a second (reading on for at most ten): Tansu reports
//! the last batch's base offset + 1 as the end, up to a whole batch short of the
//! real one. With `follow`, it keeps going until stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parley_event_log::EventEnvelope;
use parley_kafka::KafkaSettings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::export::Summary;
use crate::filter::Filter;
use crate::shape::Shaper;
use crate::sink::Sink;

/// How long the topic must be silent, once every partition reached its end
/// offset, for the tail to stop.
const QUIET: Duration = Duration::from_secs(1);
/// The longest a tail reads on after every partition reached its end offset.
const GRACE: Duration = Duration::from_secs(10);
/// A following tail flushes what it wrote at least this often, and whenever the
/// topic goes quiet, so a reader of its output sees events as they come (JSON
/// Lines; a Parquet file is only readable once the tail stops).
const FOLLOW_FLUSH: Duration = Duration::from_secs(1);

/// Where each partition starts.
#[derive(Debug, Clone, PartialEq)]
pub enum StartAt {
    /// The oldest message still in the topic.
    Beginning,
    /// An offset: the same for every partition (`None`), or for one partition.
    /// Partitions not named start at the beginning.
    Offsets(Vec<(Option<i32>, i64)>),
    /// The first message with a timestamp at or after this time.
    Since(DateTime<Utc>),
}

/// Parses `--offset`: `N` (every partition) or `P:N` (partition P).
pub fn parse_offset(raw: &str) -> Result<(Option<i32>, i64), String> {
    let bad = || format!("expected an offset N or PARTITION:N (integers, 0 or more), got {raw:?}");
    let (partition, offset) = match raw.trim().split_once(':') {
        Some((p, o)) => (Some(p.parse::<i32>().map_err(|_| bad())?), o),
        None => (None, raw.trim()),
    };
    let offset = offset.parse::<i64>().map_err(|_| bad())?;
    if offset < 0 || partition.is_some_and(|p| p < 0) {
        return Err(bad());
    }
    Ok((partition, offset))
}

/// How a tail runs.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub start: StartAt,
    /// Keep reading past the end offsets seen at start, until stopped.
    pub follow: bool,
    /// Keep each payload at its stored version.
    pub stored_shape: bool,
    /// Stop after this many events written.
    pub limit: Option<u64>,
}

/// The consumer config of a tail: a throwaway group id, never joined, no commits.
pub fn consumer_config(settings: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = settings.client_config();
    config
        .set("client.id", "parley-tail")
        // librdkafka refuses assign() without a group.id ("Unknown group"), but
        // only subscribe() joins a group: with a fresh id that nothing else uses
        // and no commits, the tail is invisible to every real group.
        .set(
            "group.id",
            format!("parley-tail-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false");
    for (key, value) in &settings.client_overrides {
        config.set(key, value);
    }
    config
}

/// Tails the topic of `settings` into `sink`.
pub async fn tail(
    settings: &KafkaSettings,
    filter: &Filter,
    options: &TailOptions,
    mut sink: Sink,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    filter.validate()?;
    let started = Instant::now();
    let consumer: StreamConsumer = consumer_config(settings).create()?;
    let topic = settings.topic.clone();
    let timeout = Duration::from_secs(10);

    // Partitions, end offsets and start offsets: blocking calls, off the runtime.
    let (consumer, ends, starts) = tokio::task::spawn_blocking({
        let start = options.start.clone();
        move || -> anyhow::Result<_> {
            let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                .unwrap_or_default();
            if partitions.is_empty() {
                anyhow::bail!("topic {topic} not found (or it has no partitions)");
            }
            let mut ends = HashMap::new();
            let mut lows = HashMap::new();
            for &p in &partitions {
                let (low, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
                ends.insert(p, high);
                lows.insert(p, low);
            }
            let starts = start_offsets(&consumer, &topic, &partitions, &lows, &ends, &start)?;
            let mut tpl = TopicPartitionList::new();
            for (&p, &offset) in &starts {
                tpl.add_partition_offset(&topic, p, Offset::Offset(offset))?;
            }
            consumer.assign(&tpl)?;
            Ok((consumer, ends, starts))
        }
    })
    .await??;

    // Partitions not at their end offset (seen at start) yet.
    let mut pending: std::collections::HashSet<i32> = starts
        .iter()
        .filter(|(p, start)| ends.get(p).is_some_and(|end| *start < end))
        .map(|(p, _)| *p)
        .collect();
    tracing::info!(
        topic = %settings.topic,
        partitions = ends.len(),
        to_read = pending.len(),
        "tailing"
    );
    // Once every partition is at its end offset, messages still arriving are taken
    // too, until the topic is quiet for QUIET (at most GRACE): Tansu's end offsets
    // under-count by up to a whole batch.
    let mut grace: Option<Instant> = None;

    let mut shaper = Shaper::new(options.stored_shape);
    let mut summary = Summary::default();
    let mut skipped = 0u64;
    let mut flushed = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || options.limit.is_some_and(|l| summary.events >= l) {
            summary.partial = true;
            break;
        }
        if pending.is_empty() && !options.follow && grace.is_none() {
            grace = Some(Instant::now() + GRACE);
        }
        let wait = match grace {
            Some(deadline) if deadline <= Instant::now() => break,
            Some(deadline) => (deadline - Instant::now()).min(QUIET),
            None => Duration::from_millis(500),
        };
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) if grace.is_some() => break, // quiet: caught up
            Err(_) => {
                if options.follow {
                    sink.flush()?;
                    flushed = Instant::now();
                }
                continue;
            }
            Ok(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
                continue;
            }
            Ok(result) => result?,
        };
        let partition = message.partition();
        let offset = message.offset();
        if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            pending.remove(&partition);
        }
        let Some(bytes) = message.payload() else {
            skipped += 1;
            continue;
        };
        // With signing keys, only what the relay signed is the log's.
        if let Some(keys) = &settings.signing {
            if let Err(why) = keys.verify_record(&message) {
                summary.unsigned += 1;
                tracing::warn!(partition, offset, %why, "record not signed by Parley's relay, skipped");
                continue;
            }
        }
        let mut event: EventEnvelope = match serde_json::from_slice(bytes) {
            Ok(event) => event,
            Err(e) => {
                skipped += 1;
                tracing::warn!(partition, offset, error = %e, "message is no event envelope, skipped");
                continue;
            }
        };
        if !filter.matches(&event) {
            continue;
        }
        shaper.shape(&mut event);
        sink.write(&event)?;
        summary.events += 1;
        summary.last_position = Some(event.position);
        if options.follow && flushed.elapsed() >= FOLLOW_FLUSH {
            sink.flush()?;
            flushed = Instant::now();
        }
    }
    summary.bytes = sink.finish()?;
    summary.unknown = shaper.unknown;
    summary.redacted = shaper.redacted;
    summary.upcast = shaper.upcast;
    summary.elapsed = started.elapsed();
    if skipped > 0 {
        tracing::warn!(skipped, "messages that were no event envelope were skipped");
    }
    Ok(summary)
}

fn start_offsets(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    lows: &HashMap<i32, i64>,
    ends: &HashMap<i32, i64>,
    start: &StartAt,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut starts: HashMap<i32, i64> = partitions.iter().map(|p| (*p, lows[p])).collect();
    match start {
        StartAt::Beginning => {}
        StartAt::Offsets(offsets) => {
            for &(partition, offset) in offsets {
                match partition {
                    Some(p) if !starts.contains_key(&p) => {
                        anyhow::bail!("--offset {p}:{offset}: topic {topic} has no partition {p}")
                    }
                    Some(p) => {
                        starts.insert(p, offset.max(lows[&p]));
                    }
                    None => {
                        for p in partitions {
                            starts.insert(*p, offset.max(lows[p]));
                        }
                    }
                }
            }
        }
        StartAt::Since(time) => {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(time.timestamp_millis()))?;
            }
            let found = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
            for element in found.elements() {
                let p = element.partition();
                let offset = match element.offset() {
                    Offset::Offset(o) => o,
                    // No message at or after the time: nothing to read there.
                    _ => ends[&p],
                };
                starts.insert(p, offset);
            }
        }
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_with_or_without_a_partition() {
        assert_eq!(parse_offset("42"), Ok((None, 42)));
        assert_eq!(parse_offset("3:7"), Ok((Some(3), 7)));
        assert!(parse_offset("-1").is_err());
        assert!(parse_offset("x:1").unwrap_err().contains("PARTITION:N"));
    }

    #[test]
    fn the_tail_never_joins_a_group() {
        let config = consumer_config(&KafkaSettings::new("k:9092"));
        let group = config.get("group.id").unwrap();
        assert!(group.starts_with("parley-tail-") && group.len() > 20);
        assert_ne!(
            consumer_config(&KafkaSettings::default()).get("group.id"),
            Some(group)
        );
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
    }
}
