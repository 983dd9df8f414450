//! The SQLite event log: the embedded default (`parley dev`).
//!
//! SQLite has one writer at a time, so positions are committed in the order they are
//! handed out and a tail by position is safe. Writes go through a one-connection
//! pool (no busy-lock retries), reads through their own pool (WAL mode).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use crate::error::classify;
use crate::{
    AppendRequest, AppendedEvent, CommandResult, Cursor, EventEnvelope, EventLog, LogError,
    Snapshot,
};

/// Stored command results deleted per statement when pruning.
const PRUNE_SLICE: i64 = 1_000;

/// The SQLite implementation of [`EventLog`].
#[derive(Clone)]
pub struct SqliteLog {
    writer: SqlitePool,
    reader: SqlitePool,
    appended: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

/// Timestamps are stored as fixed-width RFC 3339 text, so they sort as text.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl SqliteLog {
    /// Opens (creating if needed) the database file named by a `sqlite://` URL.
    pub async fn open(url: &str) -> Result<Self, LogError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| LogError::Config(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // Acquire waits as TRACE events, as for Postgres (see `pg.rs`).
            .acquire_time_level(tracing::log::LevelFilter::Trace)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_time_level(tracing::log::LevelFilter::Trace)
            .connect_with(options.read_only(false))
            .await?;
        Ok(Self {
            writer,
            reader,
            appended: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// The pool that writes (one connection).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool that reads.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Applies the event log's migrations.
    pub async fn migrate(&self) -> Result<(), LogError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn try_append(&self, request: &AppendRequest) -> Result<Vec<AppendedEvent>, sqlx::Error> {
        let mut tx = self.writer.begin().await?;
        let meta = serde_json::to_string(&request.metadata).unwrap_or_default();
        let recorded = format_time(&request.recorded_at);
        let mut appended = Vec::with_capacity(request.event_count());
        for stream in &request.streams {
            for (i, event) in stream.events.iter().enumerate() {
                let event_id = Uuid::now_v7();
                let sequence = stream.expected_version + 1 + i as i64;
                let position: i64 = sqlx::query_scalar(
                    "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                        event_type, event_version, recorded_at, metadata, payload, idempotency_key)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING position",
                )
                .bind(event_id.to_string())
                .bind(&stream.aggregate_type)
                .bind(stream.aggregate_id.to_string())
                .bind(sequence)
                .bind(&event.event_type)
                .bind(event.event_version)
                .bind(&recorded)
                .bind(&meta)
                .bind(event.payload.to_string())
                .bind(&request.metadata.idempotency_key)
                .fetch_one(&mut *tx)
                .await?;
                appended.push(AppendedEvent {
                    event_id,
                    aggregate_id: stream.aggregate_id,
                    sequence,
                    position,
                    tx_id: 0,
                });
            }
        }
        if let Some(idem) = &request.idempotency {
            sqlx::query(
                "INSERT INTO command_results (scope, fingerprint, status, body, appended)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&idem.scope)
            .bind(&idem.fingerprint)
            .bind(idem.status as i64)
            .bind(idem.body.to_string())
            .bind(serde_json::to_string(&appended).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(appended)
    }
}

impl SqliteLog {
    /// The first stream of `request` whose stored events are of another type.
    async fn stream_of_another_type(
        &self,
        request: &AppendRequest,
    ) -> Result<Option<Uuid>, LogError> {
        for stream in request.streams.iter().filter(|s| s.expected_version > 0) {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT aggregate_type FROM events WHERE aggregate_id = ? AND sequence = ?",
            )
            .bind(stream.aggregate_id.to_string())
            .bind(stream.expected_version)
            .fetch_optional(&self.reader)
            .await?;
            if stored.is_some_and(|t| t != stream.aggregate_type) {
                return Ok(Some(stream.aggregate_id));
            }
        }
        Ok(None)
    }
}

const ENVELOPE_COLUMNS: &str = "position, tx_id, event_id, aggregate_type, aggregate_id, sequence,
     event_type, event_version, recorded_at, metadata, payload";

fn corrupt(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(format!("{what}: {e}"))
}

/// Decodes an event row selected with the envelope's columns (position, tx_id,
/// event_id, aggregate_type, aggregate_id, sequence, event_type, event_version,
/// recorded_at, metadata, payload).
pub fn envelope(row: &SqliteRow) -> Result<EventEnvelope, LogError> {
    let text = |name: &str| row.try_get::<String, _>(name);
    Ok(EventEnvelope {
        event_id: text("event_id")?
            .parse()
            .map_err(|e| corrupt("event_id", e))?,
        event_type: text("event_type")?,
        event_version: row.try_get("event_version")?,
        aggregate_type: text("aggregate_type")?,
        aggregate_id: text("aggregate_id")?
            .parse()
            .map_err(|e| corrupt("aggregate_id", e))?,
        sequence: row.try_get("sequence")?,
        position: row.try_get("position")?,
        recorded_at: DateTime::parse_from_rfc3339(&text("recorded_at")?)
            .map_err(|e| corrupt("recorded_at", e))?
            .with_timezone(&Utc),
        metadata: serde_json::from_str(&text("metadata")?).map_err(|e| corrupt("metadata", e))?,
        payload: serde_json::from_str(&text("payload")?).map_err(|e| corrupt("payload", e))?,
        tx_id: row.try_get("tx_id")?,
    })
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn append(&self, request: AppendRequest) -> Result<Vec<AppendedEvent>, LogError> {
        let appended = match self.try_append(&request).await {
            Ok(appended) => appended,
            Err(e) => {
                return Err(match classify(e, &request) {
                    // SQLite's RAISE cannot name the stream: find it.
                    LogError::AggregateTypeMismatch { aggregate_id } => {
                        LogError::AggregateTypeMismatch {
                            aggregate_id: self
                                .stream_of_another_type(&request)
                                .await?
                                .unwrap_or(aggregate_id),
                        }
                    }
                    other => other,
                });
            }
        };
        self.appended.send_modify(|n| *n += 1);
        Ok(appended)
    }

    /// In-process only: SQLite is the embedded mode, one process.
    fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    async fn load_stream(
        &self,
        aggregate_id: Uuid,
        after_sequence: i64,
    ) -> Result<Vec<EventEnvelope>, LogError> {
        let sql = format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE aggregate_id = ? AND sequence > ? ORDER BY sequence"
        );
        let rows = sqlx::query(&sql)
            .bind(aggregate_id.to_string())
            .bind(after_sequence)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(envelope).collect()
    }

    async fn read_after(&self, cursor: Cursor, limit: i64) -> Result<Vec<EventEnvelope>, LogError> {
        let sql = format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE (tx_id, position) > (?, ?) ORDER BY tx_id, position LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(cursor.tx_id)
            .bind(cursor.position)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(envelope).collect()
    }

    async fn cursor_of(
        &self,
        aggregate_id: Uuid,
        sequence: i64,
    ) -> Result<Option<Cursor>, LogError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id, position FROM events WHERE aggregate_id = ? AND sequence = ?",
        )
        .bind(aggregate_id.to_string())
        .bind(sequence)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|(tx_id, position)| Cursor { tx_id, position }))
    }

    async fn read_newest(&self, limit: i64) -> Result<Vec<EventEnvelope>, LogError> {
        let sql = format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events ORDER BY tx_id DESC, position DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().rev().map(envelope).collect()
    }

    async fn last_position(&self) -> Result<i64, LogError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn command_result(&self, scope: &str) -> Result<Option<CommandResult>, LogError> {
        let row = sqlx::query(
            "SELECT fingerprint, status, body, appended FROM command_results WHERE scope = ?",
        )
        .bind(scope)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(CommandResult {
                fingerprint: row.try_get("fingerprint")?,
                status: row.try_get::<i64, _>("status")? as u16,
                body: serde_json::from_str(&row.try_get::<String, _>("body")?)
                    .map_err(|e| corrupt("command result", e))?,
                appended: serde_json::from_str(&row.try_get::<String, _>("appended")?)
                    .map_err(|e| corrupt("command result", e))?,
            })
        })
        .transpose()
    }

    async fn prune_command_results(&self, before: DateTime<Utc>) -> Result<u64, LogError> {
        // `created_at` is RFC 3339 UTC text, so it compares as time (to the
        // millisecond its default keeps). In slices: this holds the one writer.
        let before = format_time(&before);
        let mut pruned = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM command_results WHERE rowid IN
                   (SELECT rowid FROM command_results WHERE created_at < ? LIMIT ?)",
            )
            .bind(&before)
            .bind(PRUNE_SLICE)
            .execute(&self.writer)
            .await?;
            pruned += done.rows_affected();
            if done.rows_affected() < PRUNE_SLICE as u64 {
                return Ok(pruned);
            }
        }
    }

    async fn load_snapshot(&self, aggregate_id: Uuid) -> Result<Option<Snapshot>, LogError> {
        let row = sqlx::query(
            "SELECT aggregate_type, version, state FROM snapshots WHERE aggregate_id = ?",
        )
        .bind(aggregate_id.to_string())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(Snapshot {
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id,
                version: row.try_get("version")?,
                state: serde_json::from_str(&row.try_get::<String, _>("state")?)
                    .map_err(|e| corrupt("snapshot", e))?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO snapshots (aggregate_id, aggregate_type, version, state)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (aggregate_id) DO UPDATE
               SET version = excluded.version, state = excluded.state
               WHERE snapshots.version < excluded.version",
        )
        .bind(snapshot.aggregate_id.to_string())
        .bind(&snapshot.aggregate_type)
        .bind(snapshot.version)
        .bind(snapshot.state.to_string())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), LogError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> Option<crate::PoolStats> {
        Some(crate::PoolStats::of(&self.writer).plus(crate::PoolStats::of(&self.reader)))
    }
}
