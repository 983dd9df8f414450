//! One member of the projector consumer group (`parley projector --feed kafka`).
//!
//! The member consumes the events topic in group `parley-projections` and applies
//! every batch to each read model through the same runtime as the log feed
//! ([`crate::apply_checkpointed`]), with a
//! [`PartitionCheckpoint`]: per projection, each partition's next offset and each
//! aggregate's last sequence are written in the read-model transaction
//! (invariant 4). Kafka's committed offsets are never read
//! (`enable.auto.commit=false`); on assignment each partition starts at the
//! lowest offset any projection still needs, read from the read-model database.
//! Offsets belong to a topic generation (the relay's `topic_generation`
//! header): a message of a newer generation than a partition's stored position
//! means the topic was lost and recreated, so the member reads that partition
//! again from its beginning and lets the per-aggregate sequences skip what was
//! applied before.
//! After each applied batch the member also commits its offsets to Kafka,
//! asynchronously and for information only, so the group's lag shows in Kafka's
//! own tools and in autoscalers that read it (KEDA's Kafka scaler).
//!
//! A rebalance is handled between batches: librdkafka runs the rebalance
//! callback inside `recv`, never while a batch is being applied. Events already
//! collected from a revoked partition are dropped, not applied, and partition
//! rows are locked per transaction, so a member that lost a partition late can
//! never apply its events a second time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::held;
use crate::kafka::partitions::{
    store_carried, stored_offsets, Carried, Offset, PartitionCheckpoint, Position,
};
use crate::{apply_checkpointed, Projection, ReadStore};
use parley_event_log::EventEnvelope;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;

use parley_kafka::KafkaSettings;

mod assignment;
mod collect;

use assignment::{assigned, MemberContext, Shared};
use collect::drop_partitions;

/// How often a member refreshes its row in `projector_members` (and, while busy,
/// the other members' progress).
const REFRESH: Duration = Duration::from_secs(5);

/// Events applied before the first `ANALYZE` of the tables the member looks up
/// on every batch (early: a live stream's lookups run on them from the start).
/// Then again each time as many events again were applied: a table growing
/// from empty gets fresh statistics as it doubles, as autovacuum's analyze
/// would give it (it may be off, or look too late). Each `ANALYZE` also makes
/// every connection plan its cached statements on the table again: a plan made
/// for a table of a thousand rows (a sequential scan for a lookup of a few
/// dozen ids) is slow at ten thousand. Doubling, not a fixed pace: an
/// `ANALYZE` of a big table takes tens of milliseconds, and once the table is
/// big its plans no longer change.
const FIRST_ANALYZE_AFTER: usize = 1_000;

/// librdkafka's `topic.metadata.refresh.interval.ms` for members.
const METADATA_REFRESH_MS: &str = "5000";

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
    /// How long a projection may pass over batches that hold nothing for it
    /// (friends and presence under a stream of messages) without a transaction
    /// of its own. Its partitions' positions are stored with its next batch, or
    /// once this long passed; until then its lag shows that far behind.
    pub idle_record_every: Duration,
}

impl Default for MemberOptions {
    fn default() -> Self {
        Self {
            group: DEFAULT_GROUP.into(),
            batch_size: 1000,
            batch_wait: Duration::from_millis(5),
            session_timeout: Duration::from_secs(10),
            idle_record_every: Duration::from_secs(1),
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

/// A projection's positions passed over without a transaction (see
/// [`MemberOptions::idle_record_every`]).
struct Idle {
    carried: Carried,
    /// When the projection last stored its positions.
    stored_at: Instant,
}

impl Idle {
    fn new() -> Self {
        Self {
            carried: Carried::default(),
            stored_at: Instant::now(),
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
    /// The store's restart count when the positions in memory were loaded
    /// (at start, and by each rewind).
    loaded_at_restarts: AtomicU64,
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
            loaded_at_restarts: AtomicU64::new(0),
        }
    }

    /// Applies the held events whose predecessor has been applied since
    /// (by this member or another), for each of its projections.
    async fn release_held(&self) {
        for projection in &self.projections {
            match held::release(&self.store, &**projection, &self.settings.topic).await {
                Ok(o) if o.applied + o.parked > 0 => tracing::info!(
                    projection = projection.name(),
                    applied = o.applied,
                    parked = o.parked,
                    "held events applied after their predecessors"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    projection = projection.name(),
                    error = %e,
                    "held events not tried again"
                ),
            }
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
            // How soon a subscribed topic that appears (recreated after a loss,
            // or first created by the relay after this member joined) or grows
            // partitions is noticed: librdkafka's default is five minutes, and
            // a member that joined while the topic was missing owns nothing
            // until then.
            .set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS)
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
            settings: self.settings.clone(),
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
        let own = self
            .projections
            .iter()
            .filter_map(|p| p.own_sequences().map(|own| own.table));
        for table in ["projection_applied", "projection_offsets"]
            .into_iter()
            .chain(own)
        {
            if let Err(e) = sqlx::raw_sql(&format!("ANALYZE {table}"))
                .execute(self.store.pool())
                .await
            {
                tracing::warn!(table, error = %e, "ANALYZE failed");
            }
        }
    }

    /// The lowest position over the projections, per partition: where an
    /// assigned partition must start so that no projection misses an event.
    async fn load_starts(&self) -> Result<HashMap<i32, Position>, sqlx::Error> {
        let mut lowest: Option<HashMap<i32, Position>> = None;
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
            self.store.create_tables(projection.schema()).await?;
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        self.loaded_at_restarts
            .store(self.store.server_restarts(), Ordering::SeqCst);
        shared.lock().expect("member lock").start = self.load_starts().await?;
        let consumer = self.consumer(shared.clone())?;
        tracing::info!(group = %self.options.group, topic = %self.settings.topic, "projector member started");
        let mut backoff = Duration::from_millis(100);
        let mut last_refresh = Instant::now();
        let mut applied_since_analyze = 0usize;
        let mut applied_before_analyze = 0usize;
        let mut analyze_after = FIRST_ANALYZE_AFTER;
        let mut idle: HashMap<&'static str, Idle> = HashMap::new();
        // Set when a rewind failed (the read store is away): the consumer is
        // then past events nothing applied, so what it reads is dropped until
        // a rewind to the stored offsets succeeds. Reading goes on meanwhile,
        // which keeps this member in its group.
        let mut rewind_due = false;
        while !*shutdown.borrow() {
            let carrying = idle.values().any(|i| !i.carried.is_empty());
            let pause = if carrying {
                self.options.idle_record_every.min(REFRESH)
            } else {
                REFRESH
            };
            // Only the wait for a first message is raced (dropping `recv` loses
            // nothing); a batch being filled is never abandoned half-read.
            let first = tokio::select! {
                first = consumer.recv() => first,
                _ = shutdown.changed() => break,
                // Idle: store what was passed over, and still record the
                // partitions this member owns.
                _ = tokio::time::sleep(pause) => {
                    self.store_idle(&mut idle, false).await;
                    self.release_held().await;
                    if let Err(e) = self.register(&assigned(&shared)).await {
                        tracing::warn!(error = %e, "cannot record this member's partitions");
                    }
                    continue;
                }
            };
            let first = match first {
                Ok(first) => first,
                Err(e) => {
                    // A client error event (broker down, transport failure):
                    // librdkafka reconnects by itself and paces these, so the
                    // next one is taken at once. Sleeping here would let those
                    // queued during an outage hold the member back long after
                    // the broker returned, one backoff each.
                    self.report_error(&e.to_string());
                    continue;
                }
            };
            let (mut events, mut offsets) = match self.collect(&consumer, &shared, first).await {
                Ok(batch) => batch,
                Err(e) => {
                    // The store failed while parking an undecodable message:
                    // what was read is dropped, so read it again.
                    tracing::warn!(error = %e, "batch not collected, rewinding to the stored offsets");
                    self.report_error(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    rewind_due = !self.try_rewind(&consumer, &shared).await;
                    continue;
                }
            };
            if rewind_due {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                rewind_due = !self.try_rewind(&consumer, &shared).await;
                continue;
            }
            // Abandon what was collected from partitions revoked meanwhile.
            {
                let mut s = shared.lock().expect("member lock");
                if !s.revoked.is_empty() {
                    let revoked = std::mem::take(&mut s.revoked);
                    drop_partitions(&mut events, &mut offsets, |p| revoked.contains(&p));
                }
            }
            if events.is_empty() {
                continue;
            }
            match self.apply(&events, &offsets, &mut idle).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    {
                        let mut s = shared.lock().expect("member lock");
                        for o in &offsets {
                            let n = s.start.entry(o.partition).or_insert(Position::START);
                            *n = (*n).max(Position::after(o));
                        }
                    }
                    applied_since_analyze += events.len();
                    self.commit_for_information(&consumer, &offsets);
                    self.status.send_modify(|st| {
                        st.healthy = true;
                        st.applied_total += events.len() as u64;
                        st.last_error = None;
                        st.assigned = assigned(&shared);
                    });
                    if applied_since_analyze >= analyze_after {
                        self.analyze().await;
                        applied_before_analyze += applied_since_analyze;
                        applied_since_analyze = 0;
                        analyze_after = next_analyze_after(applied_before_analyze);
                    }
                }
                Err(e) => {
                    // Nothing of the batch counts as applied: start again from
                    // what the store holds, for every partition this member owns.
                    tracing::warn!(error = %e, "batch failed, rewinding to the stored offsets");
                    self.report_error(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    rewind_due = !self.try_rewind(&consumer, &shared).await;
                }
            }
            if last_refresh.elapsed() > REFRESH {
                if let Err(e) = self.register(&assigned(&shared)).await {
                    tracing::warn!(error = %e, "cannot record this member's partitions");
                }
                self.release_held().await;
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
        self.store_idle(&mut idle, true).await;
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

    /// Applies a batch to every projection, each in its own transaction with its
    /// partition offsets and aggregate sequences. The projections run
    /// concurrently, on connections of their own: none waits for another's
    /// commit. A failure leaves the others' commits standing; the rewind that
    /// follows restarts from the lowest stored offsets and the sequences skip
    /// what was applied.
    ///
    /// A projection that reads none of the batch's events is passed over, its
    /// positions carried in `idle`, until `idle_record_every` passed since it
    /// last stored them: a batch of messages costs friends and presence nothing.
    async fn apply(
        &self,
        events: &[EventEnvelope],
        offsets: &[Offset],
        idle: &mut HashMap<&'static str, Idle>,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut due = Vec::with_capacity(self.projections.len());
        for projection in &self.projections {
            let state = idle.entry(projection.name()).or_insert_with(Idle::new);
            let reads_any = events
                .iter()
                .any(|e| projection.consumes(&e.aggregate_type));
            if !reads_any && now.duration_since(state.stored_at) < self.options.idle_record_every {
                state.carried.carry(offsets);
                continue;
            }
            due.push((projection, state.carried.clone()));
        }
        let applying = due.iter().map(|(projection, carried)| async move {
            let checkpoint =
                PartitionCheckpoint::new(&***projection, &self.settings.topic, offsets)
                    .with_carried(carried)
                    .loaded_at(self.loaded_at_restarts.load(Ordering::SeqCst));
            let outcome =
                apply_checkpointed(&self.store, &***projection, events, &checkpoint).await?;
            tracing::debug!(
                projection = projection.name(),
                applied = outcome.applied,
                parked = outcome.parked,
                "batch applied"
            );
            anyhow::Ok(projection.name())
        });
        let results = futures::future::join_all(applying).await;
        let mut outcome = Ok(());
        for result in results {
            match result {
                Ok(name) => {
                    let state = idle.get_mut(name).expect("an entry per projection");
                    state.carried.clear();
                    state.stored_at = now;
                }
                Err(e) => outcome = Err(e),
            }
        }
        outcome
    }

    /// Stores the positions the projections passed over: those carried for
    /// `idle_record_every` already, or all of them when `all` (best effort:
    /// what fails stays carried, and is tried again).
    async fn store_idle(&self, idle: &mut HashMap<&'static str, Idle>, all: bool) {
        for (name, state) in idle.iter_mut() {
            let due = all || state.stored_at.elapsed() >= self.options.idle_record_every;
            if state.carried.is_empty() || !due {
                continue;
            }
            match store_carried(&self.store, name, &self.settings.topic, &state.carried).await {
                Ok(()) => {
                    state.carried.clear();
                    state.stored_at = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "cannot store the positions passed over")
                }
            }
        }
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
}

/// Events to apply before the next `ANALYZE`, `applied` events after the
/// first ([`FIRST_ANALYZE_AFTER`]): as many again, so the tables are analyzed
/// each time they doubled.
fn next_analyze_after(applied: usize) -> usize {
    applied.max(FIRST_ANALYZE_AFTER)
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyze_follows_the_tables_as_they_double() {
        let mut applied = 0;
        let mut at = Vec::new();
        let mut after = FIRST_ANALYZE_AFTER;
        while applied < 1_000_000 {
            applied += after;
            at.push(applied);
            after = next_analyze_after(applied);
        }
        assert_eq!(
            at,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
                1_024_000
            ]
        );
    }
}
