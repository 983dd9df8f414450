//! One member of the projector consumer group (`parley projector --feed kafka`).
//!
//! The member consumes the events topic in group `parley-projections` and applies
//! every batch to each read model through the same runtime as the log feed
//! ([`parley_projections::apply_checkpointed`]), with a
//! [`PartitionCheckpoint`]: per projection, each partition's next offset and each
//! aggregate's last sequence are written in the read-model transaction
//! (invariant 4). Kafka's committed offsets are never read
//! (`enable.auto.commit=false`); on assignment each partition starts at the
//! lowest offset any projection still needs, read from the read-model database.
//! After each applied batch the member also commits its offsets to Kafka,
//! asynchronously and for information only, so the group's lag shows in Kafka's
//! own tools and in autoscalers that read it (KEDA's Kafka scaler).
//!
//! A rebalance is handled between batches: librdkafka runs the rebalance
//! callback inside `recv`, never while a batch is being applied. Events already
//! collected from a revoked partition are dropped, not applied, and partition
//! rows are locked per transaction, so a member that lost a partition late can
//! never apply its events a second time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_event_log::EventEnvelope;
use parley_projections::partitions::{stored_offsets, Offset, PartitionCheckpoint};
use parley_projections::{apply_checkpointed, park_undecodable, Projection, ReadStore};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tokio::sync::watch;

use crate::KafkaSettings;

/// How often a member refreshes its row in `projector_members` (and, while busy,
/// the other members' progress).
const REFRESH: Duration = Duration::from_secs(5);

/// Events applied between two `ANALYZE`s of the member's bookkeeping tables.
const ANALYZE_AFTER: usize = 20_000;

/// The consumer group every projector process joins unless configured otherwise.
pub const DEFAULT_GROUP: &str = "parley-projections";

/// How a member consumes.
#[derive(Debug, Clone)]
pub struct MemberOptions {
    pub group: String,
    /// Events applied per transaction at most.
    pub batch_size: usize,
    /// How long a batch may wait to fill once its first event arrived.
    pub batch_wait: Duration,
    /// librdkafka's `session.timeout.ms` and `max.poll.interval.ms`: how soon
    /// the group notices a dead member (and how long a rebalance can take).
    pub session_timeout: Duration,
}

impl Default for MemberOptions {
    fn default() -> Self {
        Self {
            group: DEFAULT_GROUP.into(),
            batch_size: 1000,
            batch_wait: Duration::from_millis(5),
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// What a member reports to health checks and `parley projections status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// The partitions this member owns now.
    pub assigned: Vec<i32>,
    /// Whether the last attempt to reach the broker or the store worked.
    pub healthy: bool,
    pub applied_total: u64,
    pub last_error: Option<String>,
}

/// Where each assigned partition should start: shared between the rebalance
/// callback (librdkafka's thread) and the apply loop.
#[derive(Default)]
struct Shared {
    /// The lowest next offset over all projections, per partition.
    start: HashMap<i32, i64>,
    assigned: HashSet<i32>,
    /// Partitions revoked since the loop last looked.
    revoked: HashSet<i32>,
}

struct MemberContext {
    topic: String,
    shared: Arc<Mutex<Shared>>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut shared = self.shared.lock().expect("member lock");
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                for &p in &partitions {
                    let at = shared.start.get(&p).copied().unwrap_or(0);
                    if let Err(e) =
                        tpl.set_partition_offset(&self.topic, p, rdkafka::Offset::Offset(at))
                    {
                        tracing::error!(partition = p, error = %e, "cannot set start offset");
                    }
                    shared.assigned.insert(p);
                    shared.revoked.remove(&p);
                }
                tracing::info!(?partitions, "partitions assigned");
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
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
                let all: Vec<i32> = shared.assigned.drain().collect();
                shared.revoked.extend(all);
                let _ = consumer.unassign();
            }
        }
    }
}

/// One member of the projector group.
pub struct Member {
    /// Names this process in `projector_members` (for `parley projections status`).
    id: String,
    settings: KafkaSettings,
    options: MemberOptions,
    store: ReadStore,
    projections: Vec<Arc<dyn Projection>>,
    status: watch::Sender<MemberStatus>,
}

impl Member {
    pub fn new(
        settings: KafkaSettings,
        options: MemberOptions,
        store: ReadStore,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Self {
        let host = hostname();
        Self {
            id: format!(
                "{host}:{}:{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            settings,
            options,
            store,
            projections,
            status: watch::channel(MemberStatus::default()).0,
        }
    }

    pub fn status(&self) -> watch::Receiver<MemberStatus> {
        self.status.subscribe()
    }

    fn consumer(
        &self,
        shared: Arc<Mutex<Shared>>,
    ) -> anyhow::Result<StreamConsumer<MemberContext>> {
        let session = self.options.session_timeout.as_millis().to_string();
        let mut config = self.settings.client_config();
        config
            .set("group.id", &self.options.group)
            .set("client.id", "parley-projector")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", &session)
            .set("max.poll.interval.ms", &session)
            .set(
                "heartbeat.interval.ms",
                (self.options.session_timeout / 5).as_millis().to_string(),
            );
        for (k, v) in &self.settings.client_overrides {
            config.set(k, v);
        }
        let context = MemberContext {
            topic: self.settings.topic.clone(),
            shared,
        };
        let consumer: StreamConsumer<MemberContext> = config.create_with_context(context)?;
        consumer.subscribe(&[&self.settings.topic])?;
        Ok(consumer)
    }

    /// Refreshes the planner's statistics of `projection_applied` and
    /// `projection_offsets`. They grow from empty faster than autovacuum looks
    /// (once a minute): never analyzed, the per-batch lookup of 500 aggregates
    /// was planned as a scan of every row of the projection, filtered against
    /// the whole list (737 ms at 54k rows, 1.3 ms after `ANALYZE`).
    async fn analyze(&self) {
        for table in ["projection_applied", "projection_offsets"] {
            if let Err(e) = sqlx::raw_sql(&format!("ANALYZE {table}"))
                .execute(self.store.pool())
                .await
            {
                tracing::warn!(table, error = %e, "ANALYZE failed");
            }
        }
    }

    /// The lowest next offset over the projections, per partition: where an
    /// assigned partition must start so that no projection misses an event.
    async fn load_starts(&self) -> Result<HashMap<i32, i64>, sqlx::Error> {
        let mut lowest: Option<HashMap<i32, i64>> = None;
        for projection in &self.projections {
            let stored =
                stored_offsets(&self.store, projection.name(), &self.settings.topic).await?;
            lowest = Some(match lowest {
                None => stored,
                // A partition some projection has no row for starts at 0.
                Some(mut low) => {
                    low.retain(|p, _| stored.contains_key(p));
                    for (p, n) in low.iter_mut() {
                        *n = (*n).min(stored[p]);
                    }
                    low
                }
            });
        }
        Ok(lowest.unwrap_or_default())
    }

    /// Consumes until `shutdown` turns true, finishing the batch in hand first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        for projection in &self.projections {
            for statement in projection.schema() {
                sqlx::raw_sql(&statement).execute(self.store.pool()).await?;
            }
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        shared.lock().expect("member lock").start = self.load_starts().await?;
        let consumer = self.consumer(shared.clone())?;
        tracing::info!(group = %self.options.group, topic = %self.settings.topic, "projector member started");
        let mut backoff = Duration::from_millis(100);
        let mut last_refresh = Instant::now();
        let mut applied_since_analyze = 0usize;
        while !*shutdown.borrow() {
            // Only the wait for a first message is raced (dropping `recv` loses
            // nothing); a batch being filled is never abandoned half-read.
            let first = tokio::select! {
                first = consumer.recv() => first,
                _ = shutdown.changed() => break,
                // Idle: still record the partitions this member owns.
                _ = tokio::time::sleep(REFRESH) => {
                    if let Err(e) = self.register(&assigned(&shared)).await {
                        tracing::warn!(error = %e, "cannot record this member's partitions");
                    }
                    continue;
                }
            };
            let batch = match first {
                Ok(first) => self.collect(&consumer, first).await,
                Err(e) => Err(e.into()),
            };
            let (mut events, mut offsets) = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    self.report_error(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Abandon what was collected from partitions revoked meanwhile.
            {
                let mut s = shared.lock().expect("member lock");
                if !s.revoked.is_empty() {
                    let revoked = std::mem::take(&mut s.revoked);
                    let keep: Vec<bool> = offsets
                        .iter()
                        .map(|o| !revoked.contains(&o.partition))
                        .collect();
                    let mut k = keep.iter();
                    events.retain(|_| *k.next().expect("same length"));
                    offsets.retain(|o| !revoked.contains(&o.partition));
                }
            }
            if events.is_empty() {
                continue;
            }
            match self.apply(&events, &offsets).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    let mut s = shared.lock().expect("member lock");
                    for o in &offsets {
                        let n = s.start.entry(o.partition).or_insert(0);
                        *n = (*n).max(o.offset + 1);
                    }
                    drop(s);
                    applied_since_analyze += events.len();
                    self.commit_for_information(&consumer, &offsets);
                    self.status.send_modify(|st| {
                        st.healthy = true;
                        st.applied_total += events.len() as u64;
                        st.last_error = None;
                        st.assigned = assigned(&shared);
                    });
                }
                Err(e) => {
                    // Nothing of the batch counts as applied: start again from
                    // what the store holds, for every partition this member owns.
                    tracing::warn!(error = %e, "batch failed, rewinding to the stored offsets");
                    self.report_error(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Err(e) = self.rewind(&consumer, &shared).await {
                        tracing::warn!(error = %e, "rewind failed");
                    }
                }
            }
            if last_refresh.elapsed() > REFRESH {
                if let Err(e) = self.register(&assigned(&shared)).await {
                    tracing::warn!(error = %e, "cannot record this member's partitions");
                }
                if applied_since_analyze >= ANALYZE_AFTER {
                    self.analyze().await;
                    applied_since_analyze = 0;
                }
                // Other members' progress, for partitions this one may get next.
                if let Ok(starts) = self.load_starts().await {
                    let mut s = shared.lock().expect("member lock");
                    for (p, n) in starts {
                        let e = s.start.entry(p).or_insert(n);
                        *e = (*e).max(n);
                    }
                }
                last_refresh = Instant::now();
            }
        }
        tracing::info!("projector member stopping");
        consumer.unsubscribe();
        let _ = sqlx::query("DELETE FROM projector_members WHERE member_id = $1")
            .bind(&self.id)
            .execute(self.store.pool())
            .await;
        Ok(())
    }

    /// Records which partitions this member owns now.
    async fn register(&self, partitions: &[i32]) -> Result<(), sqlx::Error> {
        let list = partitions
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(
            "INSERT INTO projector_members (member_id, host, pid, grp, topic, partitions, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (member_id) DO UPDATE
             SET partitions = excluded.partitions, updated_at = excluded.updated_at",
        )
        .bind(&self.id)
        .bind(hostname())
        .bind(i64::from(std::process::id()))
        .bind(&self.options.group)
        .bind(&self.settings.topic)
        .bind(list)
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    fn report_error(&self, error: &str) {
        self.status.send_modify(|st| {
            st.healthy = false;
            st.last_error = Some(error.to_string());
        });
    }

    /// Fills a batch after its `first` message: up to `batch_size` events, waiting
    /// at most `batch_wait`. A message that is not an envelope is parked here.
    async fn collect(
        &self,
        consumer: &StreamConsumer<MemberContext>,
        first: rdkafka::message::BorrowedMessage<'_>,
    ) -> anyhow::Result<(Vec<EventEnvelope>, Vec<Offset>)> {
        let mut events = Vec::new();
        let mut offsets = Vec::new();
        let deadline = tokio::time::Instant::now() + self.options.batch_wait;
        let mut next = Some(first);
        loop {
            if let Some(message) = next.take() {
                let at = Offset {
                    partition: message.partition(),
                    offset: message.offset(),
                };
                let payload = message.payload().unwrap_or_default();
                match serde_json::from_slice::<EventEnvelope>(payload) {
                    Ok(event) => {
                        events.push(event);
                        offsets.push(at);
                    }
                    Err(e) => {
                        let raw = String::from_utf8_lossy(payload).into_owned();
                        for projection in &self.projections {
                            park_undecodable(
                                &self.store,
                                projection.name(),
                                &format!(
                                    "kafka:{}:{}:{}",
                                    self.settings.topic, at.partition, at.offset
                                ),
                                &format!("not an event envelope: {e}"),
                                &raw,
                            )
                            .await?;
                        }
                    }
                }
            }
            if events.len() >= self.options.batch_size {
                break;
            }
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(message) => next = Some(message?),
                Err(_) => break,
            }
        }
        Ok((events, offsets))
    }

    /// Applies a batch to every projection, each in its own transaction with its
    /// partition offsets and aggregate sequences.
    async fn apply(&self, events: &[EventEnvelope], offsets: &[Offset]) -> anyhow::Result<()> {
        for projection in &self.projections {
            let checkpoint = PartitionCheckpoint {
                projection: projection.name(),
                topic: &self.settings.topic,
                offsets,
            };
            let outcome =
                apply_checkpointed(&self.store, &**projection, events, &checkpoint).await?;
            tracing::debug!(
                projection = projection.name(),
                applied = outcome.applied,
                parked = outcome.parked,
                "batch applied"
            );
        }
        Ok(())
    }

    /// Tells Kafka how far this member got (asynchronously; a failure only
    /// leaves Kafka's view of the lag stale, the store holds the real offsets).
    fn commit_for_information(&self, consumer: &StreamConsumer<MemberContext>, offsets: &[Offset]) {
        let mut next: HashMap<i32, i64> = HashMap::new();
        for o in offsets {
            let n = next.entry(o.partition).or_insert(0);
            *n = (*n).max(o.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            if let Err(e) = list.add_partition_offset(
                &self.settings.topic,
                partition,
                rdkafka::Offset::Offset(offset),
            ) {
                tracing::debug!(error = %e, "offset not committed to Kafka");
                return;
            }
        }
        if let Err(e) = consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(error = %e, "offsets not committed to Kafka (informational only)");
        }
    }

    /// Seeks every owned partition back to the lowest stored offset.
    async fn rewind(
        &self,
        consumer: &StreamConsumer<MemberContext>,
        shared: &Arc<Mutex<Shared>>,
    ) -> anyhow::Result<()> {
        let starts = self.load_starts().await?;
        let owned = assigned(shared);
        let mut s = shared.lock().expect("member lock");
        for p in owned {
            let at = starts.get(&p).copied().unwrap_or(0);
            s.start.insert(p, at);
            consumer.seek(
                &self.settings.topic,
                p,
                rdkafka::Offset::Offset(at),
                Duration::from_secs(5),
            )?;
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn assigned(shared: &Arc<Mutex<Shared>>) -> Vec<i32> {
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
