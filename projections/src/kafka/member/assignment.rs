//! Partition assignment: the rebalance callback (librdkafka's thread) decides
//! where each assigned partition starts, from the positions stored with the
//! read models and a probe of each partition's topic generation, and shares it
//! with the apply loop.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::partitions::Position;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Headers;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, TopicPartitionList};

use parley_kafka::{KafkaSettings, GENERATION_HEADER};

/// How long the assignment probe may take in all: it runs inside the rebalance
/// callback, which must return well within `max.poll.interval.ms`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where each assigned partition should start: shared between the rebalance
/// callback (librdkafka's thread) and the apply loop.
#[derive(Default)]
pub(super) struct Shared {
    /// The lowest position over all projections, per partition.
    pub(super) start: HashMap<i32, Position>,
    pub(super) assigned: HashSet<i32>,
    /// Partitions revoked since the loop last looked.
    pub(super) revoked: HashSet<i32>,
}

pub(super) struct MemberContext {
    pub(super) topic: String,
    /// For the probe of each assigned partition's first message.
    pub(super) settings: KafkaSettings,
    pub(super) shared: Arc<Mutex<Shared>>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                // Stored offsets of an older topic generation mean nothing in
                // this one: those partitions start from their beginning.
                let (current, ends) = first_generations(&self.settings, &partitions);
                let mut shared = self.shared.lock().expect("member lock");
                let mut starts = Vec::with_capacity(partitions.len());
                for &p in &partitions {
                    let start = shared.start.entry(p).or_insert(Position::START);
                    if ends.get(&p).is_some_and(|&end| start.next_offset > end) {
                        // Past the partition's end: offsets never go back in
                        // one topic, so this is a new one, maybe still empty.
                        tracing::warn!(
                            partition = p,
                            stored = ?start,
                            end = ends[&p],
                            "stored offset past the partition's end (the topic was recreated): reading it from its beginning"
                        );
                        start.next_offset = 0;
                    }
                    if let Some(&generation) = current.get(&p) {
                        if generation > start.generation {
                            if start.next_offset > 0 {
                                tracing::warn!(
                                    partition = p,
                                    generation,
                                    stored = ?start,
                                    "the topic was recreated: reading the partition again from its beginning"
                                );
                            }
                            *start = Position {
                                generation,
                                next_offset: 0,
                            };
                        }
                    }
                    let at = start.next_offset;
                    starts.push((p, *start));
                    if let Err(e) =
                        tpl.set_partition_offset(&self.topic, p, rdkafka::Offset::Offset(at))
                    {
                        tracing::error!(partition = p, error = %e, "cannot set start offset");
                    }
                    shared.assigned.insert(p);
                    shared.revoked.remove(&p);
                }
                tracing::info!(?partitions, starts = ?starts, "partitions assigned");
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut shared = self.shared.lock().expect("member lock");
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for p in &partitions {
                    shared.assigned.remove(p);
                    shared.revoked.insert(*p);
                }
                tracing::info!(?partitions, "partitions revoked");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error, dropping the assignment");
                let mut shared = self.shared.lock().expect("member lock");
                let all: Vec<i32> = shared.assigned.drain().collect();
                shared.revoked.extend(all);
                let _ = consumer.unassign();
            }
        }
    }
}

/// The topic generation of each of `partitions`' first message, read by a
/// consumer of its own outside the group, and each partition's end offset.
/// Partitions it cannot read within [`PROBE_TIMEOUT`] in all, and empty ones,
/// are left out (and logged).
///
/// Read at assignment, before the member resumes from its stored offsets: after
/// the topic was recreated those offsets fall anywhere in the new partitions,
/// and a broker that serves a fetch from the next batch boundary (Tansu) may
/// return nothing at all from there while the relay's republished batches sit
/// below, so the member could not learn the new generation from what it reads.
pub(super) fn first_generations(
    settings: &KafkaSettings,
    partitions: &[i32],
) -> (HashMap<i32, i64>, HashMap<i32, i64>) {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let probe = || -> anyhow::Result<(HashMap<i32, i64>, HashMap<i32, i64>)> {
        let consumer: BaseConsumer = settings
            .client_config()
            .set(
                "group.id",
                format!("parley-generation-probe-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut list = TopicPartitionList::new();
        let mut wanted = HashSet::new();
        let mut ends = HashMap::new();
        for &p in partitions {
            let (low, high) = match consumer.fetch_watermarks(&settings.topic, p, left()) {
                Ok(marks) => marks,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot read the partition's offsets");
                    continue;
                }
            };
            ends.insert(p, high);
            if high > low {
                list.add_partition_offset(&settings.topic, p, rdkafka::Offset::Offset(low))?;
                wanted.insert(p);
            }
        }
        consumer.assign(&list)?;
        let mut found = HashMap::new();
        while found.len() < wanted.len() && !left().is_zero() {
            if let Some(message) = consumer.poll(left().min(Duration::from_millis(100))) {
                let message = message?;
                found
                    .entry(message.partition())
                    .or_insert_with(|| generation(&message));
            }
        }
        if found.len() < wanted.len() {
            let unread: Vec<&i32> = wanted.iter().filter(|p| !found.contains_key(p)).collect();
            tracing::warn!(
                ?unread,
                "cannot read these partitions' first message in time; they resume from their stored offsets"
            );
        }
        Ok((found, ends))
    };
    let started = Instant::now();
    let outcome = probe().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the partitions' topic generation; resuming from the stored offsets");
        Default::default()
    });
    tracing::info!(
        generations = ?outcome.0,
        ends = ?outcome.1,
        took_ms = started.elapsed().as_millis() as u64,
        "assignment probe"
    );
    outcome
}

/// The topic generation in a message's headers (1 when absent or unreadable:
/// messages published before the relay sent it).
pub(super) fn generation(message: &impl Message) -> i64 {
    message
        .headers()
        .and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == GENERATION_HEADER)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
        })
        .unwrap_or(1)
}

pub(super) fn assigned(shared: &Arc<Mutex<Shared>>) -> Vec<i32> {
    let mut owned: Vec<i32> = shared
        .lock()
        .expect("member lock")
        .assigned
        .iter()
        .copied()
        .collect();
    owned.sort_unstable();
    owned
}
