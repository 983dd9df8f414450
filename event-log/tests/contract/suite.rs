//! The event log contract: every backend must pass these (run by `contract.rs`).

use chrono::Utc;
use parley_event_log::{
    AppendRequest, Cursor, EventLog, IdempotencyRecord, LogError, Metadata, NewEvent, Snapshot,
    StreamWrite,
};
use serde_json::json;
use uuid::Uuid;

pub fn event(kind: &str, n: i64) -> NewEvent {
    NewEvent {
        event_type: kind.to_string(),
        event_version: 1,
        payload: json!({ "n": n, "text": format!("event {n}") }),
    }
}

pub fn write(aggregate_id: Uuid, expected_version: i64, events: Vec<NewEvent>) -> StreamWrite {
    StreamWrite {
        aggregate_type: "room".into(),
        aggregate_id,
        expected_version,
        events,
    }
}

pub fn request(streams: Vec<StreamWrite>) -> AppendRequest {
    AppendRequest {
        streams,
        metadata: Metadata {
            actor_id: Some(Uuid::now_v7()),
            correlation_id: Some("corr-1".into()),
            ..Metadata::default()
        },
        recorded_at: Utc::now(),
        idempotency: None,
    }
}

pub async fn appends_and_loads_in_order(log: &dyn EventLog) {
    let a = Uuid::now_v7();
    let b = Uuid::now_v7();
    let req = request(vec![
        write(
            a,
            0,
            vec![event("RoomCreated", 1), event("MemberJoined", 2)],
        ),
        write(b, 0, vec![event("RoomCreated", 3)]),
    ]);
    let appended = log.append(req.clone()).await.expect("append");
    assert_eq!(appended.len(), 3);
    assert_eq!(
        appended.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 1]
    );
    assert!(appended.windows(2).all(|w| w[0].position < w[1].position));

    let stream = log.load_stream(a, 0).await.expect("load");
    assert_eq!(stream.len(), 2);
    assert_eq!(stream[0].event_type, "RoomCreated");
    assert_eq!(stream[0].payload, json!({"n": 1, "text": "event 1"}));
    assert_eq!(stream[1].sequence, 2);
    assert_eq!(stream[1].aggregate_type, "room");
    assert_eq!(stream[1].metadata, req.metadata);
    assert_eq!(stream[1].event_id, appended[1].event_id);
    assert_eq!(stream[1].position, appended[1].position);
    // Stored time keeps microseconds, enough to round-trip what chrono produced here.
    let drift = (stream[0].recorded_at - req.recorded_at)
        .num_microseconds()
        .unwrap();
    assert!(drift.abs() <= 1, "recorded_at drifted by {drift}µs");

    // Where one event of a stream sits (consistency tokens are checked by it).
    assert_eq!(
        log.cursor_of(a, 2).await.unwrap(),
        Some(appended[1].cursor())
    );
    assert_eq!(log.cursor_of(a, 3).await.unwrap(), None);
    assert_eq!(log.cursor_of(Uuid::now_v7(), 1).await.unwrap(), None);

    let tail = log.load_stream(a, 1).await.expect("load after 1");
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].sequence, 2);
    assert!(log.load_stream(Uuid::now_v7(), 0).await.unwrap().is_empty());
}

pub async fn rejects_a_stale_version_and_writes_nothing(log: &dyn EventLog) {
    let a = Uuid::now_v7();
    let b = Uuid::now_v7();
    log.append(request(vec![write(a, 0, vec![event("RoomCreated", 1)])]))
        .await
        .expect("first append");

    // The same expected version again: a concurrent writer lost the race.
    let err = log
        .append(request(vec![write(a, 0, vec![event("RoomCreated", 2)])]))
        .await
        .expect_err("stale append must fail");
    assert!(err.is_conflict(), "expected a conflict, got {err:?}");

    // A request touching two streams is all or nothing: b must not be written
    // when a conflicts.
    let err = log
        .append(request(vec![
            write(b, 0, vec![event("RoomCreated", 3)]),
            write(a, 0, vec![event("MemberJoined", 4)]),
        ]))
        .await
        .expect_err("conflict");
    assert!(err.is_conflict());
    assert!(log.load_stream(b, 0).await.unwrap().is_empty());
    assert_eq!(log.load_stream(a, 0).await.unwrap().len(), 1);

    // At the right version it goes through.
    log.append(request(vec![write(a, 1, vec![event("MemberJoined", 5)])]))
        .await
        .expect("append at version 1");
    assert_eq!(log.load_stream(a, 0).await.unwrap().len(), 2);
}

/// Attack (issue 21, item 1): an id used by one aggregate type cannot be
/// continued by another. Fails before: the log appended `message` events to a
/// `room` stream, and loading it as either type then failed with a 500.
pub async fn refuses_a_stream_of_another_aggregate_type(log: &dyn EventLog) {
    let a = Uuid::now_v7();
    log.append(request(vec![write(a, 0, vec![event("RoomCreated", 1)])]))
        .await
        .expect("create the room stream");
    let mut other = write(a, 1, vec![event("MessageSent", 2)]);
    other.aggregate_type = "message".into();
    let bystander = Uuid::now_v7();
    match log
        .append(request(vec![
            write(bystander, 0, vec![event("RoomCreated", 3)]),
            other,
        ]))
        .await
    {
        Err(LogError::AggregateTypeMismatch { aggregate_id }) => assert_eq!(aggregate_id, a),
        other => panic!("expected AggregateTypeMismatch, got {other:?}"),
    }
    // Nothing of the request was written, and the room stream goes on as a room.
    assert!(log.load_stream(bystander, 0).await.unwrap().is_empty());
    let stream = log.load_stream(a, 0).await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].aggregate_type, "room");
    log.append(request(vec![write(a, 1, vec![event("MemberJoined", 4)])]))
        .await
        .expect("the owner type still appends");
}

/// Attack (issue 21, item 13): stored answers are kept for a retention, not
/// forever. Fails before: nothing ever deleted them, so a client sending a new
/// key per request grew the table without bound.
pub async fn prunes_command_results_older_than_a_time(log: &dyn EventLog) {
    let a = Uuid::now_v7();
    let mut req = request(vec![write(a, 0, vec![event("RoomCreated", 1)])]);
    req.idempotency = Some(IdempotencyRecord {
        scope: format!("{a}:old"),
        fingerprint: "f".into(),
        status: 201,
        body: json!({}),
    });
    log.append(req).await.expect("append");
    let scope = format!("{a}:old");
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(log.prune_command_results(hour_ago).await.unwrap(), 0);
    assert!(log.command_result(&scope).await.unwrap().is_some());
    let soon = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(log.prune_command_results(soon).await.unwrap(), 1);
    assert!(log.command_result(&scope).await.unwrap().is_none());
    // The events stay: only the stored answer goes.
    assert_eq!(log.load_stream(a, 0).await.unwrap().len(), 1);
}

pub async fn stores_idempotent_results_once(log: &dyn EventLog) {
    let a = Uuid::now_v7();
    let mut req = request(vec![write(a, 0, vec![event("RoomCreated", 1)])]);
    req.metadata.idempotency_key = Some("key-1".into());
    req.idempotency = Some(IdempotencyRecord {
        scope: format!("{a}:key-1"),
        fingerprint: "POST /v1/rooms sha:abc".into(),
        status: 201,
        body: json!({"room_id": a}),
    });
    let first = log.append(req.clone()).await.expect("first");

    // A retry that raced past the lookup: refused, and nothing appended.
    let mut retry = req.clone();
    retry.streams = vec![write(Uuid::now_v7(), 0, vec![event("RoomCreated", 2)])];
    match log.append(retry).await {
        Err(LogError::DuplicateCommand { scope }) => assert_eq!(scope, format!("{a}:key-1")),
        other => panic!("expected DuplicateCommand, got {other:?}"),
    }

    let stored = log
        .command_result(&format!("{a}:key-1"))
        .await
        .unwrap()
        .expect("stored result");
    assert_eq!(stored.status, 201);
    assert_eq!(stored.body, json!({"room_id": a}));
    assert_eq!(stored.fingerprint, "POST /v1/rooms sha:abc");
    assert_eq!(stored.appended, first);
    assert!(log
        .command_result("nobody:nothing")
        .await
        .unwrap()
        .is_none());

    let all = read_at_least(log, 1).await;
    assert_eq!(all.len(), 1, "the refused retry appended nothing");
    assert_eq!(all[0].metadata.idempotency_key.as_deref(), Some("key-1"));
}

pub async fn tails_every_event_once_in_order(log: &dyn EventLog) {
    let mut expected = Vec::new();
    for round in 0..5 {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let streams = ids
            .iter()
            .map(|id| {
                write(
                    *id,
                    0,
                    vec![event("RoomCreated", round), event("MemberJoined", round)],
                )
            })
            .collect();
        let appended = log.append(request(streams)).await.unwrap();
        expected.extend(appended.iter().map(|e| e.event_id));
    }
    read_at_least(log, expected.len()).await;
    let mut cursor = Cursor::START;
    let mut seen = Vec::new();
    loop {
        let page = log.read_after(cursor, 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        for e in &page {
            assert!(e.cursor() > cursor, "tail went backwards");
            cursor = e.cursor();
            seen.push(e.event_id);
        }
    }
    assert_eq!(seen, expected);
}

pub async fn reads_the_newest_events_in_tail_order(log: &dyn EventLog) {
    assert!(log.read_newest(3).await.unwrap().is_empty(), "empty log");
    let mut appended = Vec::new();
    for round in 0..4 {
        let streams = vec![write(
            Uuid::now_v7(),
            0,
            vec![event("RoomCreated", round), event("MemberJoined", round)],
        )];
        appended.extend(log.append(request(streams)).await.unwrap());
    }
    let all = read_at_least(log, appended.len()).await;
    let newest = log.read_newest(3).await.unwrap();
    let ids = |events: &[parley_event_log::EventEnvelope]| -> Vec<Uuid> {
        events.iter().map(|e| e.event_id).collect()
    };
    assert_eq!(ids(&newest), ids(&all[all.len() - 3..]));
    // A reader that starts just before them reads exactly them.
    let before_first = newest[0].cursor();
    let before_first = Cursor {
        tx_id: before_first.tx_id,
        position: before_first.position - 1,
    };
    assert_eq!(
        ids(&log.read_after(before_first, 10).await.unwrap()),
        ids(&newest)
    );
    assert_eq!(ids(&log.read_newest(100).await.unwrap()), ids(&all));
}

pub async fn keeps_the_newest_snapshot(log: &dyn EventLog) {
    let a = Uuid::now_v7();
    assert!(log.load_snapshot(a).await.unwrap().is_none());
    let snap = |version: i64| Snapshot {
        aggregate_type: "room".into(),
        aggregate_id: a,
        version,
        state: json!({"members": version}),
    };
    log.save_snapshot(snap(5)).await.unwrap();
    log.save_snapshot(snap(3)).await.unwrap();
    let got = log.load_snapshot(a).await.unwrap().unwrap();
    assert_eq!(got.version, 5);
    assert_eq!(got.state, json!({"members": 5}));
    log.save_snapshot(snap(9)).await.unwrap();
    assert_eq!(log.load_snapshot(a).await.unwrap().unwrap().version, 9);
}

pub async fn hands_out_due_deadlines_earliest_first(log: &dyn EventLog) {
    let now = Utc::now();
    let (early, late, future, other) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let ago = |s| now - chrono::Duration::seconds(s);
    log.set_deadline("call_ring", late, ago(5)).await.unwrap();
    log.set_deadline("call_ring", early, ago(60)).await.unwrap();
    log.set_deadline("call_ring", future, ago(-60))
        .await
        .unwrap();
    log.set_deadline("other", other, ago(60)).await.unwrap();
    assert_eq!(
        log.due_deadlines("call_ring", now, 10).await.unwrap(),
        [early, late]
    );
    assert_eq!(
        log.due_deadlines("call_ring", now, 1).await.unwrap(),
        [early]
    );
    // Moved later: no longer due.
    log.set_deadline("call_ring", early, ago(-30))
        .await
        .unwrap();
    log.clear_deadline("call_ring", late).await.unwrap();
    assert!(log
        .due_deadlines("call_ring", now, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(log.due_deadlines("other", now, 10).await.unwrap(), [other]);
}

pub async fn serializes_concurrent_writers_on_one_stream(log: std::sync::Arc<dyn EventLog>) {
    // 20 writers all try to append sequence 1 of the same stream at once: exactly one wins.
    let a = Uuid::now_v7();
    let mut handles = Vec::new();
    for i in 0..20 {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            log.append(request(vec![write(a, 0, vec![event("RoomCreated", i)])]))
                .await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert!(e.is_conflict(), "unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(log.load_stream(a, 0).await.unwrap().len(), 1);
}

/// Tails from the start until at least `n` events are readable (the safe tail may
/// briefly hold back committed rows while an older transaction anywhere on the
/// server is still running), then returns everything readable.
pub async fn read_at_least(log: &dyn EventLog, n: usize) -> Vec<parley_event_log::EventEnvelope> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let all = log.read_after(Cursor::START, 100_000).await.unwrap();
        if all.len() >= n || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
