//! The relay loop: take the leadership, then read, publish, checkpoint, repeat.
//! The checkpoint moves only after the broker acknowledged. It is written at
//! most once per `checkpoint_interval` while events keep coming (each write is
//! a commit that holds the log's safe horizon until it is flushed), and at once
//! when a read finds the log's end. It goes out together with a read, so a
//! cycle waits for one database round trip less.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_event_log::pg::PgLog;
use parley_event_log::{Cursor, SharedLog};
use parley_kafka::{KafkaSettings, LossDetector, TopicAdmin, TopicState, TopicVerdict};
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument;

use crate::leader::{lock_key, LeaderLock};
use crate::publisher::Publisher;
use crate::{checkpoint, RelayError};

/// How long a batch may wait for the broker's acknowledgement before the
/// relay reports the broker as unreachable (it keeps waiting).
const STALLED_AFTER: Duration = Duration::from_secs(5);
/// Failed batches in a row after which the producer is replaced.
const REBUILD_AFTER_FAILED_BATCHES: u32 = 3;

/// What a relay replica is doing: for health checks and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// Whether this replica holds the lock and publishes.
    pub leader: bool,
    /// Whether the last Kafka operation (topic check or batch) succeeded.
    pub kafka_ok: bool,
    /// The stored checkpoint: the topic holds every event up to it.
    pub cursor: Cursor,
    /// Events this replica got acknowledged (republished ones count again).
    pub published_total: u64,
    /// The latest failure, cleared by the next published batch.
    pub last_error: Option<String>,
}

/// Tuning of the relay loop; the defaults suit production.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Events read from the log and published per batch.
    pub batch_size: i64,
    /// Longest wait for an append notification before reading the log anyway.
    pub idle_wait: Duration,
    /// How often a standby tries to take the lock.
    pub lock_retry: Duration,
    /// Ceiling of the retry backoff after a failure.
    pub max_backoff: Duration,
    /// How often an idle leader checks that the topic still exists.
    pub topic_check_interval: Duration,
    /// How often a leader checks that its session still holds the lock. A
    /// leader that lost it may publish for this long more: duplicates, which
    /// consumers skip, and never a checkpoint moved back.
    pub lock_check_interval: Duration,
    /// Least time between two checkpoint writes while the log keeps growing. A
    /// relay that dies republishes up to this much (duplicates, which consumers
    /// skip); a caught-up relay writes its checkpoint at once.
    pub checkpoint_interval: Duration,
    /// How long a topic the relay has published to must keep being reported
    /// missing (in several checks) before it is recreated and the whole log
    /// republished into it.
    pub lost_topic_after: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            idle_wait: Duration::from_secs(1),
            lock_retry: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            topic_check_interval: Duration::from_secs(5),
            lock_check_interval: Duration::from_millis(250),
            checkpoint_interval: Duration::from_millis(500),
            lost_topic_after: Duration::from_secs(30),
        }
    }
}

/// Publishes the Postgres event log to the events topic (see the crate docs).
pub struct Relay {
    log: SharedLog,
    pool: PgPool,
    settings: KafkaSettings,
    options: RelayOptions,
    publisher: Publisher,
    admin: TopicAdmin,
    status: watch::Sender<RelayStatus>,
}

/// Where a leader is in the log.
struct Leading {
    /// Where the topic is known to hold every event up to, once loaded.
    cursor: Option<Cursor>,
    /// A cursor the broker acknowledged that is not yet the stored checkpoint:
    /// it is written alongside a later read (a crash before that republishes
    /// what it covers, which consumers skip by sequence).
    unsaved: Option<Cursor>,
    /// When the checkpoint was last written (or the lead began).
    last_saved: Instant,
    /// Whether the topic must be checked (and recreated if lost) before publishing.
    check_topic: bool,
    last_topic_check: Instant,
    /// Judges successive topic checks (a lost topic must be seen more than once).
    loss: LossDetector,
    /// Batches in a row the broker did not acknowledge.
    failed_batches: u32,
    /// The topic's generation, sent in every message's `topic_generation` header.
    generation: i64,
}

impl Leading {
    /// A new lead: the checkpoint and the generation are loaded, and the topic
    /// checked, by the first step.
    fn new(lost_topic_after: Duration) -> Self {
        Self {
            cursor: None,
            unsaved: None,
            last_saved: Instant::now(),
            check_topic: true,
            last_topic_check: Instant::now(),
            loss: LossDetector::new(lost_topic_after),
            failed_batches: 0,
            generation: 1,
        }
    }
}

impl Relay {
    /// Opens the Postgres log at `database_url` and a relay publishing it.
    pub async fn connect(database_url: &str, settings: KafkaSettings) -> Result<Self, RelayError> {
        let log = PgLog::connect(database_url, 4).await?;
        log.migrate().await?;
        let pool = log.pool().clone();
        Self::new(Arc::new(log), pool, settings)
    }

    /// A relay for `log`, keeping its checkpoint in `pool` (the log's database).
    /// Fails only on an invalid client configuration; nothing connects yet.
    pub fn new(log: SharedLog, pool: PgPool, settings: KafkaSettings) -> Result<Self, RelayError> {
        Ok(Self {
            publisher: Publisher::new(&settings)?,
            admin: TopicAdmin::new(&settings)?,
            log,
            pool,
            settings,
            options: RelayOptions::default(),
            status: watch::channel(RelayStatus::default()).0,
        })
    }

    /// The same relay with other tuning.
    pub fn with_options(mut self, options: RelayOptions) -> Self {
        self.options = options;
        self
    }

    /// Follows the relay's status.
    pub fn status(&self) -> watch::Receiver<RelayStatus> {
        self.status.subscribe()
    }

    /// The log this relay publishes (for readiness and pool metrics).
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// Runs until `shutdown` turns true (or its sender is dropped): waits for the
    /// leadership, then publishes. On shutdown the batch in flight is finished and
    /// the lock released.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let span = tracing::info_span!("relay", topic = %self.settings.topic);
        async move {
            let options = (*self.pool.connect_options()).clone();
            let mut lock = LeaderLock::new(options, lock_key(&self.settings.topic));
            let mut table_ready = false;
            crate::metrics::leader(false);
            metrics::counter!(crate::metrics::RELAY_PUBLISHED_TOTAL).increment(0);
            while !stopping(&shutdown) {
                if !table_ready {
                    match checkpoint::ensure_table(&self.pool).await {
                        Ok(()) => table_ready = true,
                        Err(e) => self.failed(&RelayError::Database(e)),
                    }
                }
                if table_ready {
                    match lock.try_acquire().await {
                        Ok(true) => self.lead(&mut lock, &mut shutdown).await,
                        Ok(false) => tracing::trace!("standing by"),
                        Err(e) => self.failed(&RelayError::Database(e)),
                    }
                }
                if wait(self.options.lock_retry, &mut shutdown).await {
                    break;
                }
            }
            lock.release().await;
            tracing::info!("relay stopped");
        }
        .instrument(span)
        .await
    }

    /// Publishes while this replica holds the lock.
    async fn lead(&mut self, lock: &mut LeaderLock, shutdown: &mut watch::Receiver<bool>) {
        tracing::info!("took the lead");
        self.status.send_modify(|s| s.leader = true);
        crate::metrics::leader(true);
        let mut state = Leading::new(self.options.lost_topic_after);
        let mut appended = self.log.appended();
        let mut backoff = Backoff::new(self.options.max_backoff);
        // The lock was just taken: its first check is due an interval from now.
        let mut lock_checked = Instant::now();
        while !stopping(shutdown) {
            if lock_checked.elapsed() >= self.options.lock_check_interval {
                if !lock.still_held().await {
                    tracing::warn!("leader lock lost, stepping down");
                    break;
                }
                lock_checked = Instant::now();
            }
            match self.step(&mut state).await {
                Ok(true) => {
                    backoff.reset();
                    state.failed_batches = 0;
                }
                Ok(false) => {
                    backoff.reset();
                    if state.last_topic_check.elapsed() >= self.options.topic_check_interval {
                        state.check_topic = true;
                    }
                    let notified = appended.changed();
                    tokio::select! {
                        _ = tokio::time::timeout(self.options.idle_wait, notified) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(error) => {
                    self.failed(&error);
                    if let Some(cursor) = state.cursor {
                        self.measure_lag(cursor).await;
                    }
                    if error.is_kafka() {
                        state.check_topic = true;
                        self.rebuild_publisher_if_stuck(&error, &mut state);
                    }
                    if wait(backoff.next(), shutdown).await {
                        break;
                    }
                }
            }
        }
        self.step_down(&mut state, lock).await;
    }

    /// Ends a lead: stores what was acknowledged, then frees the lock.
    async fn step_down(&mut self, state: &mut Leading, lock: &mut LeaderLock) {
        // The checkpoint only moves forward, so this late write cannot undo a
        // successor's.
        if let Err(e) = self.save_checkpoint(state).await {
            tracing::warn!(error = %e, "could not store the last checkpoint");
        }
        lock.release().await;
        self.status.send_modify(|s| s.leader = false);
        crate::metrics::leader(false);
        tracing::info!("gave up the lead");
    }

    /// Publishes one batch. Returns whether there was anything to publish.
    async fn step(&mut self, state: &mut Leading) -> Result<bool, RelayError> {
        let topic = self.settings.topic.clone();
        let topic = topic.as_str();
        let cursor = match state.cursor {
            Some(cursor) => cursor,
            None => {
                let cursor = checkpoint::load(&self.pool, topic)
                    .await?
                    .unwrap_or(Cursor::START);
                state.generation = checkpoint::generation(&self.pool, topic).await?;
                tracing::info!(
                    tx_id = cursor.tx_id,
                    position = cursor.position,
                    generation = state.generation,
                    "resuming"
                );
                self.status.send_modify(|s| s.cursor = cursor);
                *state.cursor.insert(cursor)
            }
        };
        if state.check_topic {
            let seen = self.admin.state().await?;
            let published_before = cursor != Cursor::START;
            match state.loss.observe(seen, published_before, Instant::now()) {
                TopicVerdict::Publish => {}
                TopicVerdict::CheckAgain => return Err(RelayError::TopicUnclear(seen)),
                TopicVerdict::Recreate => self.recreate_topic(state).await?,
            }
            state.check_topic = false;
            state.last_topic_check = Instant::now();
            self.status.send_modify(|s| s.kafka_ok = true);
            if seen != TopicState::Present {
                return Ok(true);
            }
        }

        // A due checkpoint and this read go out together.
        let due = state.last_saved.elapsed() >= self.options.checkpoint_interval;
        let (saved, batch) = tokio::join!(
            async {
                if due {
                    self.save_checkpoint(state).await
                } else {
                    Ok(())
                }
            },
            self.log.read_after(cursor, self.options.batch_size)
        );
        saved?;
        let batch = batch?;
        let Some(last) = batch.last().map(|e| e.cursor()) else {
            // Caught up: store what was acknowledged before going idle.
            self.save_checkpoint(state).await?;
            crate::metrics::lag(0);
            return Ok(false);
        };
        let publishing = self.publisher.publish(&batch, state.generation);
        tokio::pin!(publishing);
        tokio::select! {
            published = &mut publishing => published?,
            _ = tokio::time::sleep(STALLED_AFTER) => {
                // Not acknowledged for a while: readiness and the status say so
                // now, not only once the deliveries time out (30 s).
                self.status.send_modify(|s| {
                    s.kafka_ok = false;
                    s.last_error = Some(format!(
                        "the broker has not acknowledged a batch for {} s",
                        STALLED_AFTER.as_secs()
                    ));
                });
                publishing.await?
            }
        }
        // Every event up to `last` is acknowledged: only now may the checkpoint
        // move (with the next read, or when the lead ends).
        state.unsaved = Some(last);
        state.cursor = Some(last);
        tracing::debug!(
            events = batch.len(),
            tx_id = last.tx_id,
            position = last.position,
            "published"
        );
        self.status.send_modify(|s| {
            s.kafka_ok = true;
            s.published_total += batch.len() as u64;
            s.last_error = None;
        });
        crate::metrics::published(&batch);
        if batch.len() as i64 >= self.options.batch_size {
            self.measure_lag(last).await;
        } else {
            // A short batch read all there was: caught up.
            crate::metrics::lag(0);
        }
        Ok(true)
    }

    /// Writes the acknowledged cursor not stored yet, if any, as the checkpoint;
    /// the status reports the stored one.
    async fn save_checkpoint(&self, state: &mut Leading) -> Result<(), RelayError> {
        if let Some(acked) = state.unsaved {
            checkpoint::advance(&self.pool, &self.settings.topic, acked).await?;
            state.unsaved = None;
            state.last_saved = Instant::now();
            self.status.send_modify(|s| s.cursor = acked);
        }
        Ok(())
    }

    /// Sets the lag gauge: the log's head position minus `cursor`'s (positions are
    /// handed out in order, so this counts the events behind, give or take ones
    /// still being committed).
    async fn measure_lag(&self, cursor: Cursor) {
        if let Ok(head) = self.log.last_position().await {
            crate::metrics::lag(head - cursor.position);
        }
    }

    /// The topic is missing: never created, or lost (a broker lost its storage).
    /// The checkpoint goes back to the start of the log under a new topic
    /// generation *before* the topic is created, so consumers can rebuild from a
    /// topic holding the whole log again and can tell its offsets from the lost
    /// topic's, even if this relay dies half-way.
    async fn recreate_topic(&mut self, state: &mut Leading) -> Result<(), RelayError> {
        let topic = self.settings.topic.as_str();
        // A cursor of the lost topic must never be stored over the reset.
        state.unsaved = None;
        let generation = checkpoint::new_generation(&self.pool, topic).await?;
        if state.cursor != Some(Cursor::START) {
            tracing::error!(
                lost_up_to = ?state.cursor,
                generation,
                "topic was lost: recreating it and republishing the whole log"
            );
        }
        state.cursor = Some(Cursor::START);
        state.generation = generation;
        self.status.send_modify(|s| s.cursor = Cursor::START);
        if self.admin.create().await? {
            tracing::info!(generation, "topic created");
        }
        // A fresh producer: the old one's idempotence state refers to the old topic.
        self.publisher = Publisher::new(&self.settings)?;
        Ok(())
    }

    /// Replaces a producer that failed fatally, or that keeps failing: an
    /// idempotent producer can stay wedged on a broker that forgot its producer
    /// id (Tansu after a restart answers `UnknownProducerId` until it times out).
    fn rebuild_publisher_if_stuck(&mut self, error: &RelayError, state: &mut Leading) {
        if matches!(error, RelayError::Unacknowledged { .. }) {
            state.failed_batches += 1;
        }
        let reason = match self.publisher.fatal_error() {
            Some(fatal) => fatal,
            None if state.failed_batches >= REBUILD_AFTER_FAILED_BATCHES => {
                format!("{} batches in a row not acknowledged", state.failed_batches)
            }
            None => return,
        };
        tracing::warn!(%reason, "rebuilding the producer");
        match Publisher::new(&self.settings) {
            Ok(publisher) => {
                self.publisher = publisher;
                state.failed_batches = 0;
            }
            Err(e) => tracing::error!(error = %e, "cannot rebuild the producer"),
        }
    }

    fn failed(&self, error: &RelayError) {
        tracing::warn!(error = %error, "relay step failed, retrying");
        self.status.send_modify(|s| {
            if error.is_kafka() {
                s.kafka_ok = false;
            }
            s.last_error = Some(error.to_string());
        });
    }
}

/// Whether the relay was asked to stop (or can no longer be asked).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps for `period` unless shutdown comes first. Returns whether it did.
async fn wait(period: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = shutdown.changed() => {}
    }
    stopping(shutdown)
}

/// Exponential backoff from 200 ms up to a ceiling.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);

    fn new(max: Duration) -> Self {
        Self {
            next: Self::FIRST,
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now.min(self.max)
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use parley_event_log::{testing, AppendRequest, EventLog, Metadata, NewEvent, StreamWrite};
    use parley_kafka::testing::OwnBroker;
    use uuid::Uuid;

    /// A relay on a broker of the test's own and a fresh log holding `events`
    /// events of one room, with the log's end; `None` when no broker can run.
    async fn relay_with_events(events: usize) -> Option<(OwnBroker, Relay, Cursor)> {
        let broker = OwnBroker::start()?;
        let url = testing::fresh_database().await.expect("test database");
        let log = PgLog::connect(&url, 4).await.expect("connect");
        log.migrate().await.expect("migrate");
        let request = AppendRequest {
            streams: vec![StreamWrite {
                aggregate_type: "room".into(),
                aggregate_id: Uuid::now_v7(),
                expected_version: 0,
                events: (0..events)
                    .map(|n| NewEvent {
                        event_type: "MessageSent".into(),
                        event_version: 1,
                        payload: serde_json::json!({ "n": n }),
                    })
                    .collect(),
            }],
            metadata: Metadata::default(),
            recorded_at: Utc::now(),
            idempotency: None,
        };
        let appended = log.append(request).await.expect("append");
        let end = appended.iter().map(|a| a.cursor()).max().expect("events");
        let pool = log.pool().clone();
        checkpoint::ensure_table(&pool)
            .await
            .expect("checkpoint table");
        let settings = KafkaSettings::new(&broker.addr).with_topic("parley.test.relay");
        let relay = Relay::new(Arc::new(log), pool, settings).expect("relay");
        Some((broker, relay, end))
    }

    /// The checkpoint as stored.
    async fn stored(relay: &Relay) -> Option<Cursor> {
        checkpoint::load(&relay.pool, &relay.settings.topic)
            .await
            .expect("load checkpoint")
    }

    /// Two steps of a new lead: the first creates the topic, the second
    /// publishes the whole log, acknowledged but not yet stored.
    async fn publish_all(relay: &mut Relay, end: Cursor) -> Leading {
        let mut state = Leading::new(relay.options.lost_topic_after);
        assert!(relay.step(&mut state).await.expect("create the topic"));
        assert!(relay.step(&mut state).await.expect("publish"));
        assert_eq!(state.unsaved, Some(end), "acknowledged up to the end");
        assert_eq!(
            stored(relay).await,
            Some(Cursor::START),
            "stored with the next read, not yet"
        );
        state
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_topic_drops_the_acknowledged_cursor_not_yet_stored() {
        let Some((_broker, mut relay, end)) = relay_with_events(5).await else {
            return;
        };
        let mut state = publish_all(&mut relay, end).await;
        let lost_generation = state.generation;

        // The topic goes, with the batch's checkpoint still unwritten.
        relay.admin.delete().await.expect("delete the topic");
        state.check_topic = true;
        // Seen missing in enough checks (no minimum time here): recreated.
        state.loss = LossDetector::new(Duration::ZERO);
        let mut checks = 0;
        loop {
            match relay.step(&mut state).await {
                Ok(published) => {
                    assert!(published, "recreating counts as work");
                    break;
                }
                Err(RelayError::TopicUnclear(TopicState::Missing)) => checks += 1,
                Err(other) => panic!("recreate the topic: {other}"),
            }
        }
        assert_eq!(checks + 1, parley_kafka::MISSING_CHECKS_TO_RECREATE);
        assert!(state.generation > lost_generation, "a new generation");
        // What the next step writes with its read: nothing of the lost topic's,
        // so a crash now still republishes the whole log.
        relay.save_checkpoint(&mut state).await.expect("save");
        assert_eq!(stored(&relay).await, Some(Cursor::START));

        assert!(relay.step(&mut state).await.expect("republish"));
        relay.save_checkpoint(&mut state).await.expect("save");
        assert_eq!(stored(&relay).await, Some(end));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stepping_down_stores_the_acknowledged_cursor_then_frees_the_lock() {
        let Some((_broker, mut relay, end)) = relay_with_events(5).await else {
            return;
        };
        let options = (*relay.pool.connect_options()).clone();
        let key = lock_key(&relay.settings.topic);
        let mut lock = LeaderLock::new(options.clone(), key);
        assert!(lock.try_acquire().await.expect("lock"));
        let mut state = publish_all(&mut relay, end).await;

        relay.step_down(&mut state, &mut lock).await;
        assert_eq!(stored(&relay).await, Some(end));
        assert!(!relay.status.borrow().leader);
        let mut successor = LeaderLock::new(options, key);
        assert!(successor.try_acquire().await.expect("lock"), "lock freed");
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let waits: Vec<_> = (0..5).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(200));
    }
}
