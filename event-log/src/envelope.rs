use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who and what caused an event: travels with it through every hop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One event to append, before the log gives it a sequence and a position.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub event_version: i32,
    pub payload: serde_json::Value,
}

/// Events for one aggregate, appended only if the stream is at `expected_version`
/// (0 for a stream that must not exist yet).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamWrite {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
}

/// The result a command answered with, stored under its idempotency scope in the
/// same transaction as its events, so a retry gets the first answer.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// Unique per caller and key, e.g. `"{user_id}:{Idempotency-Key}"`.
    pub scope: String,
    /// What the request was (method, path, body digest): a key reused for another
    /// request is refused instead of answering with an unrelated result.
    pub fingerprint: String,
    pub status: u16,
    pub body: serde_json::Value,
}

/// A command's events: every stream is appended in one transaction, or none is.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub streams: Vec<StreamWrite>,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
    pub idempotency: Option<IdempotencyRecord>,
}

impl AppendRequest {
    /// Number of events across all streams.
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }
}

/// Where an appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedEvent {
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub sequence: i64,
    pub position: i64,
    /// The writing transaction (Postgres `xid8`; 0 on SQLite).
    pub tx_id: i64,
}

impl AppendedEvent {
    /// The tail cursor just at this event.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

/// A stored command result (see [`IdempotencyRecord`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub fingerprint: String,
    pub status: u16,
    pub body: serde_json::Value,
    pub appended: Vec<AppendedEvent>,
}

/// A reader's place in the log, ordered by `(tx_id, position)`.
///
/// Positions are handed out before commit, so "position > N" can skip a row of a
/// transaction still in flight. Ordering by the writing transaction's id first, and
/// only reading transactions older than every running one, cannot (invariant 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub tx_id: i64,
    pub position: i64,
}

impl Cursor {
    /// The start of the log.
    pub const START: Cursor = Cursor {
        tx_id: 0,
        position: 0,
    };
}

/// A stored event: the one envelope used in log rows, Kafka values and exports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: i32,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub sequence: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub metadata: Metadata,
    pub payload: serde_json::Value,
    /// The writing transaction: part of the tail cursor, not of the public envelope.
    #[serde(skip)]
    pub tx_id: i64,
}

impl EventEnvelope {
    /// Seconds from the event's recording to `now`; 0 when `now` is earlier
    /// (clocks of different machines disagree a little).
    pub fn seconds_old_at(&self, now: DateTime<Utc>) -> f64 {
        (now - self.recorded_at)
            .to_std()
            .map_or(0.0, |elapsed| elapsed.as_secs_f64())
    }

    /// The tail cursor just at this event.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

/// An aggregate's state at a version, stored as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub version: i64,
    pub state: serde_json::Value,
}
