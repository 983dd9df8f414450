//! Shared pieces of the export tests: fresh logs on both backends, generated
//! events, and readers for what an export wrote.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::Array;
use chrono::{DateTime, TimeZone, Utc};
use parley_event_log::{
    testing, AppendRequest, Cursor, EventEnvelope, Metadata, NewEvent, SharedLog, StreamWrite,
};
use parley_export::shape::Shaper;
use parley_export::{ExportJob, ExportOptions, Filter, Format, Summary, Target};
use serde_json::json;
use uuid::Uuid;

/// A migrated Postgres log in a database of its own, and its URL.
pub async fn pg_log() -> (SharedLog, String) {
    let url = testing::fresh_database().await.expect("test database");
    let log = parley_event_log::open(&url, 8).await.expect("open log");
    (log, url)
}

/// A migrated SQLite log in `dir`, and its URL.
pub async fn sqlite_log(dir: &Path) -> (SharedLog, String) {
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let log = parley_event_log::open(&url, 4).await.expect("open log");
    (log, url)
}

/// When the generated history starts: 2026-01-05T09:00:00Z.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
}

fn id(n: u64, kind: u64) -> Uuid {
    Uuid::from_u64_pair(0x0190_0000_0000_7000 | kind, 0x8000_0000_0000_0000 | n)
}

/// The event `i` of the generated history: a mix of registrations (with a
/// password hash), rooms, joins, messages (today's v2 and legacy v1) and
/// reactions, over 20 rooms and 50 users.
fn event(i: u64, at: DateTime<Utc>) -> (String, Uuid, NewEvent) {
    let room = id(i % 20, 2);
    let user = id(i % 50, 1);
    let at = at.to_rfc3339();
    let (aggregate_type, aggregate_id, event_type, version, payload) = match i % 10 {
        0 => (
            "user",
            id(i, 1),
            "UserRegistered",
            1,
            json!({"user_id": id(i, 1), "username": format!("user{i}"),
                   "display_name": format!("User {i}"),
                   "password_hash": format!("$argon2id$v=19$secret-{i}"), "registered_at": at}),
        ),
        1 => (
            "room",
            id(i, 2),
            "RoomCreated",
            1,
            json!({"room_id": id(i, 2), "name": format!("room {i}"), "topic": null,
                   "visibility": "public", "creator_id": user, "created_at": at}),
        ),
        2 => (
            "room",
            id(i, 2),
            "MemberJoined",
            1,
            json!({"room_id": room, "user_id": user, "role": "member", "at": at}),
        ),
        7 => (
            "message",
            id(i, 3),
            "MessageSent",
            1,
            json!({"message_id": id(i, 3), "room_id": room, "sender_id": user,
                   "body": format!("an old message, number {i}"), "reply_to": null, "sent_at": at}),
        ),
        8 => (
            "message",
            id(i, 3),
            "ReactionAdded",
            1,
            json!({"message_id": id(i - 1, 3), "room_id": room, "user_id": user,
                   "emoji": "👍", "at": at}),
        ),
        _ => (
            "message",
            id(i, 3),
            "MessageSent",
            2,
            json!({"message_id": id(i, 3), "room_id": room, "sender_id": user,
                   "body": format!("message {i}: héllo wörld, a line of chat"),
                   "reply_to": null, "sent_at": at, "format": "plain"}),
        ),
    };
    (
        aggregate_type.to_string(),
        aggregate_id,
        NewEvent {
            event_type: event_type.to_string(),
            event_version: version,
            payload,
        },
    )
}

/// Appends `n` generated events, 500 per command; each command is recorded a
/// minute after the last, so the history spans hours.
pub async fn seed(log: &SharedLog, n: u64) {
    let per_request = 500;
    let mut i = 0;
    let mut request_no = 0i64;
    while i < n {
        let at = t0() + chrono::Duration::minutes(request_no);
        let mut streams = Vec::new();
        for _ in 0..per_request.min(n - i) {
            let (aggregate_type, aggregate_id, event) = event(i, at);
            streams.push(StreamWrite {
                aggregate_type,
                aggregate_id,
                expected_version: 0,
                events: vec![event],
            });
            i += 1;
        }
        let metadata = Metadata {
            actor_id: (request_no % 2 == 0).then(|| id(request_no as u64, 9)),
            correlation_id: Some(format!("corr-{request_no}")),
            traceparent: (request_no % 3 == 0)
                .then(|| format!("00-{:032x}-{:016x}-01", request_no + 1, request_no + 1)),
            ..Metadata::default()
        };
        log.append(AppendRequest {
            streams,
            metadata,
            recorded_at: at,
            idempotency: None,
        })
        .await
        .expect("append");
        request_no += 1;
    }
}

/// Appends one event of any type and version (unknown ones included).
pub async fn append_raw(
    log: &SharedLog,
    event_type: &str,
    version: i32,
    payload: serde_json::Value,
) {
    log.append(AppendRequest {
        streams: vec![StreamWrite {
            aggregate_type: "room".into(),
            aggregate_id: Uuid::now_v7(),
            expected_version: 0,
            events: vec![NewEvent {
                event_type: event_type.into(),
                event_version: version,
                payload,
            }],
        }],
        metadata: Metadata::default(),
        recorded_at: t0(),
        idempotency: None,
    })
    .await
    .expect("append");
}

/// Every event of the log in position order, shaped as an export shapes them.
///
/// Read with the log's own tail, which (on Postgres) only returns transactions
/// older than every one still running anywhere on the server, so it waits until
/// the whole log is visible (every test here appends without gaps in positions).
pub async fn expected(log: &SharedLog, stored_shape: bool) -> Vec<EventEnvelope> {
    let head = log.last_position().await.expect("head");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut all = loop {
        let all = log
            .read_after(Cursor::START, i64::MAX)
            .await
            .expect("read log");
        if all.len() as i64 >= head {
            break all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log's tail shows {} of {head} events after a minute",
            all.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    all.sort_by_key(|e| e.position);
    let mut shaper = Shaper::new(stored_shape);
    for e in &mut all {
        e.tx_id = 0;
        shaper.shape(e);
    }
    all
}

/// Runs an export of the log at `url` into `out`.
pub async fn export(
    url: &str,
    out: &Path,
    filter: Filter,
    options: ExportOptions,
    resume: bool,
) -> anyhow::Result<Summary> {
    parley_export::run_export(
        ExportJob {
            database_url: url.to_string(),
            target: Target::File(out.to_path_buf()),
            format: None,
            resume,
            filter,
            options,
        },
        indicatif::ProgressBar::hidden(),
        Arc::new(AtomicBool::new(false)),
    )
    .await
}

/// The events of a JSON Lines export.
pub fn read_jsonl(path: &Path) -> Vec<EventEnvelope> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("an envelope per line"))
        .collect()
}

/// The events of a Parquet export, rebuilt from its columns; also checks the
/// typed payload columns against each payload.
pub fn read_parquet(path: &Path) -> Vec<EventEnvelope> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let opt = |col: &arrow_array::StringArray, i: usize| {
            (!col.is_null(i)).then(|| col.value(i).to_string())
        };
        let (event_id, event_type, aggregate_type, aggregate_id, payload) = (
            text("event_id"),
            text("event_type"),
            text("aggregate_type"),
            text("aggregate_id"),
            text("payload"),
        );
        let (actor, corr, cause, key, trace, request) = (
            text("actor_id"),
            text("correlation_id"),
            text("causation_id"),
            text("idempotency_key"),
            text("traceparent"),
            text("request_id"),
        );
        let (room, sender, user, message) = (
            text("room_id"),
            text("sender_id"),
            text("user_id"),
            text("message_id"),
        );
        let version = batch
            .column_by_name("event_version")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let sequence = batch
            .column_by_name("sequence")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let position = batch
            .column_by_name("position")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let body_length = batch
            .column_by_name("body_length")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let recorded = batch
            .column_by_name("recorded_at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        for i in 0..batch.num_rows() {
            let payload: serde_json::Value = serde_json::from_str(payload.value(i)).unwrap();
            let field = |name: &str| payload.get(name).and_then(|v| v.as_str()).map(String::from);
            assert_eq!(opt(&room, i), field("room_id"));
            assert_eq!(opt(&sender, i), field("sender_id"));
            assert_eq!(opt(&user, i), field("user_id"));
            assert_eq!(opt(&message, i), field("message_id"));
            assert_eq!(
                (!body_length.is_null(i)).then(|| body_length.value(i) as usize),
                field("body").map(|b| b.chars().count())
            );
            out.push(EventEnvelope {
                event_id: event_id.value(i).parse().unwrap(),
                event_type: event_type.value(i).to_string(),
                event_version: version.value(i),
                aggregate_type: aggregate_type.value(i).to_string(),
                aggregate_id: aggregate_id.value(i).parse().unwrap(),
                sequence: sequence.value(i),
                position: position.value(i),
                recorded_at: DateTime::from_timestamp_micros(recorded.value(i)).unwrap(),
                metadata: Metadata {
                    actor_id: opt(&actor, i).map(|a| a.parse().unwrap()),
                    correlation_id: opt(&corr, i),
                    causation_id: opt(&cause, i),
                    idempotency_key: opt(&key, i),
                    traceparent: opt(&trace, i),
                    request_id: opt(&request, i),
                },
                payload,
                tx_id: 0,
            });
        }
    }
    out
}

/// Reads an export of either format.
pub fn read_export(path: &Path) -> Vec<EventEnvelope> {
    match Format::from_path(path).unwrap() {
        Format::Jsonl => read_jsonl(path),
        Format::Parquet => read_parquet(path),
    }
}
