//! The PostgreSQL event log.
//!
//! Appends from many concurrent commands are gathered by a group committer
//! into one transaction (one `INSERT ... SELECT FROM UNNEST`), which is what lets a
//! 2-core machine keep thousands of durable sends per second. A batch that hits a
//! conflict is re-run request by request, so one stale command never fails others.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, PgPool, Row};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

mod clock;
mod commit;
pub mod horizon;

use crate::notify::Heard;
use crate::{
    AppendRequest, AppendedEvent, CommandResult, Cursor, EventEnvelope, EventLog, LogError,
    Snapshot,
};
use commit::{append_alone, committer, Pending, MAX_BATCH};
use horizon::{Horizon, TailHolder};

/// Stored command results deleted per statement when pruning.
const PRUNE_SLICE: i64 = 5_000;
/// The server-side limit on one statement of the event log's pool.
const STATEMENT_TIMEOUT: &str = "30s";
/// How long a session of the log's pool may sit idle inside a transaction.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "30s";
/// How long an append waits for room in the committer's queue (which holds
/// four batches) before it is refused with [`LogError::Busy`].
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL implementation of [`EventLog`].
#[derive(Clone)]
pub struct PgLog {
    pool: PgPool,
    committer: Option<mpsc::Sender<Pending>>,
    appended: Arc<watch::Sender<u64>>,
    listening: Arc<std::sync::Once>,
    notifier: mpsc::Sender<()>,
    /// Which running transactions cannot write events (see [`horizon`]).
    horizon: Arc<Horizon>,
    watching: Arc<std::sync::Once>,
}

/// The channel appends announce themselves on.
const CHANNEL: &str = "parley_events";

/// Tells other processes' tailers (LISTEN parley_events) that the log grew,
/// from outside the appending transactions. A NOTIFY inside one takes
/// PostgreSQL's server-wide notify lock at commit and holds it across the
/// commit's WAL flush, so every appending commit, and every other notifying
/// transaction on the server, would wait for the one before it to reach the
/// disk. Here each NOTIFY is a statement of its own, with nothing to flush.
/// Appends while one is on its way are folded into the next; listeners re-read
/// the log whenever they wake, so one wake-up covers them all.
fn start_notifier(pool: PgPool) -> mpsc::Sender<()> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                // Tailers elsewhere then wake by their own timeout.
                tracing::debug!(error = %e, "cannot announce appends to other processes");
            }
        }
    });
    tx
}

/// Asks the notifier for a NOTIFY (a full queue already holds one).
fn announce(notifier: &mpsc::Sender<()>) {
    let _ = notifier.try_send(());
}

impl PgLog {
    /// Connects with a pool of `pool_size` connections and starts the group committer.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, LogError> {
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| LogError::Config(format!("bad postgres url: {e}")))?
            // Every statement of the log is a keyed or a LIMITed read, or an
            // append: one that runs this long is stuck, and must not hold a
            // connection (and the tail) forever.
            // A Parley session left idle inside a transaction (a stuck append)
            // would hold every reader of the log back: it is ended instead.
            .options([
                ("statement_timeout", STATEMENT_TIMEOUT),
                (
                    "idle_in_transaction_session_timeout",
                    IDLE_IN_TRANSACTION_TIMEOUT,
                ),
            ])
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(Duration::from_secs(5))
            // Every acquire reports its wait as a TRACE event (target
            // `sqlx::pool::acquire`); the `parley` binary turns those into the
            // `parley_db_pool_acquire_seconds` histogram. Nothing listens elsewhere.
            .acquire_time_level(tracing::log::LevelFilter::Trace)
            .connect_with(options)
            .await?;
        Ok(Self::with_pool(pool))
    }

    /// Wraps an existing pool and starts the group committer on it.
    pub fn with_pool(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        let appended = Arc::new(watch::channel(0).0);
        let notifier = start_notifier(pool.clone());
        tokio::spawn(committer(
            pool.clone(),
            rx,
            appended.clone(),
            notifier.clone(),
        ));
        Self {
            pool,
            committer: Some(tx),
            appended,
            listening: Arc::new(std::sync::Once::new()),
            notifier,
            horizon: Arc::default(),
            watching: Arc::new(std::sync::Once::new()),
        }
    }

    /// The same log without group commit: every append is its own transaction.
    pub fn without_group_commit(pool: PgPool) -> Self {
        Self {
            notifier: start_notifier(pool.clone()),
            pool,
            committer: None,
            appended: Arc::new(watch::channel(0).0),
            listening: Arc::new(std::sync::Once::new()),
            horizon: Arc::default(),
            watching: Arc::new(std::sync::Once::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The transaction holding the tail back for longer than a moment: one
    /// that may still append events (a writer stuck mid-append), with who runs
    /// it. Known once the log has been read from.
    pub fn tail_holder(&self) -> Option<TailHolder> {
        self.horizon.holder()
    }

    /// The strangers the tail leaves out, the watcher started if need be.
    fn strangers(&self) -> horizon::Strangers {
        horizon::start_once(&self.watching, &self.pool, &self.horizon);
        self.horizon.strangers()
    }

    /// Applies the event log's migrations, then moves the log's clock past
    /// its newest event if the log was restored or moved from another cluster
    /// (see [`clock`]).
    pub async fn migrate(&self) -> Result<(), LogError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        if let Some(rebased) = clock::rebase(&self.pool).await? {
            tracing::warn!(
                newest_tx_id = %rebased.newest,
                shift = %rebased.shift,
                "the event log was written on another cluster (a restore or a move): \
                 new transactions now sort after all of its events"
            );
        }
        Ok(())
    }

    /// Lets `role` read the event log and nothing else: the read side (the read
    /// API, log-fed projectors) connects as such a role, so a bug or a breach
    /// there cannot write, rewrite or delete events. Idempotent.
    pub async fn grant_read_access(&self, role: &str) -> Result<(), LogError> {
        let valid = !role.is_empty()
            && role.len() <= 63
            && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(LogError::Config(format!(
                "read-side role {role:?}: expected a lowercase SQL identifier (a-z, 0-9, _)"
            )));
        }
        // GRANT takes no bind parameters; the name was checked above.
        for statement in [
            format!("GRANT USAGE ON SCHEMA public TO \"{role}\""),
            format!("GRANT SELECT ON events TO \"{role}\""),
        ] {
            sqlx::query(&statement).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn append_alone(&self, request: &AppendRequest) -> Result<Vec<AppendedEvent>, LogError> {
        let result = append_alone(&self.pool, request).await;
        if result.is_ok() {
            self.appended.send_modify(|n| *n += 1);
            announce(&self.notifier);
        }
        result
    }
}

/// Turns other processes' NOTIFYs into ticks, reconnecting when the link drops.
/// Holds the sender weakly: once the log is dropped, the task ends.
async fn listen(pool: PgPool, appended: std::sync::Weak<watch::Sender<u64>>) {
    let connect = || sqlx::postgres::PgListener::connect_with(&pool);
    // Connected (whatever was appended while away) and each notification:
    // wake readers once.
    crate::notify::listen(connect, &[CHANNEL], "event", |heard| match heard {
        Heard::Lost => appended.strong_count() > 0,
        Heard::Connected | Heard::Notification { .. } => match appended.upgrade() {
            Some(sender) => {
                sender.send_modify(|n| *n += 1);
                true
            }
            None => false,
        },
    })
    .await
}

// The transaction id is read as text (sqlx has no xid8 type) under another name:
// `ORDER BY tx_id` must sort the xid8 column, and an output column called `tx_id`
// would shadow it and sort as text ("100001" < "99999").
const ENVELOPE_COLUMNS: &str =
    "position, tx_id::text AS tx_text, event_id, aggregate_type, aggregate_id, sequence,
     event_type, event_version, recorded_at, metadata, payload";

fn envelope(row: &PgRow) -> Result<EventEnvelope, LogError> {
    let tx_id: String = row.try_get("tx_text")?;
    let metadata: serde_json::Value = row.try_get("metadata")?;
    Ok(EventEnvelope {
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        position: row.try_get("position")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        metadata: serde_json::from_value(metadata)
            .map_err(|e| LogError::Corrupt(format!("metadata: {e}")))?,
        payload: row.try_get("payload")?,
        tx_id: tx_id
            .parse()
            .map_err(|_| LogError::Corrupt(format!("tx_id {tx_id}")))?,
    })
}

#[async_trait]
impl EventLog for PgLog {
    async fn append(&self, request: AppendRequest) -> Result<Vec<AppendedEvent>, LogError> {
        match &self.committer {
            Some(committer) => {
                let (reply, answer) = oneshot::channel();
                // The queue is bounded; a request that cannot get in within
                // this wait is refused whole (the client retries on 503).
                match tokio::time::timeout(QUEUE_WAIT, committer.send(Pending { request, reply }))
                    .await
                {
                    Ok(sent) => sent.map_err(|_| LogError::CommitterGone)?,
                    Err(_) => return Err(LogError::Busy),
                }
                answer.await.map_err(|_| LogError::CommitterGone)?
            }
            None => self.append_alone(&request).await,
        }
    }

    async fn load_stream(
        &self,
        aggregate_id: Uuid,
        after_sequence: i64,
    ) -> Result<Vec<EventEnvelope>, LogError> {
        let sql = format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE aggregate_id = $1 AND sequence > $2 ORDER BY sequence"
        );
        let rows = sqlx::query(&sql)
            .bind(aggregate_id)
            .bind(after_sequence)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(envelope).collect()
    }

    async fn read_after(&self, cursor: Cursor, limit: i64) -> Result<Vec<EventEnvelope>, LogError> {
        // Only transactions older than the oldest one still running that may
        // write events are read: every later commit will sort after the cursor,
        // so nothing is ever skipped (see `horizon`).
        let sql = format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE (tx_id, position) > ($1::bigint::text::xid8, $2)
               AND {}
             ORDER BY tx_id, position
             LIMIT $3",
            horizon::below_horizon(4)
        );
        let strangers = self.strangers();
        let rows = sqlx::query(&sql)
            .bind(cursor.tx_id)
            .bind(cursor.position)
            .bind(limit)
            .bind(strangers.ids)
            .bind(strangers.server_started)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(envelope).collect()
    }

    async fn cursor_of(
        &self,
        aggregate_id: Uuid,
        sequence: i64,
    ) -> Result<Option<Cursor>, LogError> {
        let row = sqlx::query(
            "SELECT tx_id::text AS tx_text, position FROM events
             WHERE aggregate_id = $1 AND sequence = $2",
        )
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let tx_id: String = row.try_get("tx_text")?;
            Ok(Cursor {
                tx_id: tx_id
                    .parse()
                    .map_err(|_| LogError::Corrupt(format!("tx_id {tx_id}")))?,
                position: row.try_get("position")?,
            })
        })
        .transpose()
    }

    async fn read_newest(&self, limit: i64) -> Result<Vec<EventEnvelope>, LogError> {
        let sql = format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE {}
             ORDER BY tx_id DESC, position DESC
             LIMIT $1",
            horizon::below_horizon(2)
        );
        let strangers = self.strangers();
        let rows = sqlx::query(&sql)
            .bind(limit)
            .bind(strangers.ids)
            .bind(strangers.server_started)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().rev().map(envelope).collect()
    }

    async fn last_position(&self) -> Result<i64, LogError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn command_result(&self, scope: &str) -> Result<Option<CommandResult>, LogError> {
        let row = sqlx::query(
            "SELECT fingerprint, status, body, appended FROM command_results WHERE scope = $1",
        )
        .bind(scope)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let appended: serde_json::Value = row.try_get("appended")?;
            Ok(CommandResult {
                fingerprint: row.try_get("fingerprint")?,
                status: row.try_get::<i16, _>("status")? as u16,
                body: row.try_get("body")?,
                appended: serde_json::from_value(appended)
                    .map_err(|e| LogError::Corrupt(format!("command result: {e}")))?,
            })
        })
        .transpose()
    }

    async fn prune_command_results(&self, before: DateTime<Utc>) -> Result<u64, LogError> {
        // In slices, so no one statement runs long or locks much.
        let mut pruned = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM command_results WHERE scope IN
                   (SELECT scope FROM command_results WHERE created_at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(PRUNE_SLICE)
            .execute(&self.pool)
            .await?;
            pruned += done.rows_affected();
            if done.rows_affected() < PRUNE_SLICE as u64 {
                return Ok(pruned);
            }
        }
    }

    async fn load_snapshot(&self, aggregate_id: Uuid) -> Result<Option<Snapshot>, LogError> {
        let row = sqlx::query(
            "SELECT aggregate_type, version, state FROM snapshots WHERE aggregate_id = $1",
        )
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Snapshot {
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id,
                version: row.try_get("version")?,
                state: row.try_get("state")?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO snapshots (aggregate_id, aggregate_type, version, state)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (aggregate_id) DO UPDATE
               SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now()
               WHERE snapshots.version < EXCLUDED.version",
        )
        .bind(snapshot.aggregate_id)
        .bind(&snapshot.aggregate_type)
        .bind(snapshot.version)
        .bind(&snapshot.state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn appended(&self) -> watch::Receiver<u64> {
        let (pool, appended) = (self.pool.clone(), self.appended.clone());
        self.listening.call_once(move || {
            tokio::spawn(listen(pool, Arc::downgrade(&appended)));
        });
        self.appended.subscribe()
    }

    async fn ping(&self) -> Result<(), LogError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> Option<crate::PoolStats> {
        Some(crate::PoolStats::of(&self.pool))
    }
}
