//! `parley events ...` as an analyst runs it: the real binary on a SQLite log.

use std::path::Path;
use std::process::{Command, Output};

use chrono::Utc;
use parley_domain::codec::EventCodec;
use parley_domain::message::{MessageEvent, MessageSent};
use parley_domain::room::{MemberJoined, RoomCreated, RoomEvent};
use parley_domain::user::UserRegisteredV1;
use parley_domain::values::{DisplayName, MessageBody, Role, RoomName, Username, Visibility};
use parley_event_log::{AppendRequest, Metadata, NewEvent, SharedLog, StreamWrite};
use sqlx::Connection;
use uuid::Uuid;

fn parley(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env("PARLEY_LOG", "warn")
        .output()
        .expect("run parley")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn append(log: &SharedLog, aggregate_type: &str, id: Uuid, events: Vec<NewEvent>) {
    log.append(AppendRequest {
        streams: vec![StreamWrite {
            aggregate_type: aggregate_type.into(),
            aggregate_id: id,
            expected_version: 0,
            events,
        }],
        metadata: Metadata::default(),
        recorded_at: Utc::now(),
        idempotency: None,
    })
    .await
    .expect("append");
}

fn new_event(e: &impl EventCodec) -> NewEvent {
    NewEvent {
        event_type: e.event_type().into(),
        event_version: e.event_version() as i32,
        payload: e.to_payload(),
    }
}

/// A user, a room they joined, and 30 messages (the first stored as v1): 33 events.
async fn chat_log(dir: &Path) -> String {
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let log = parley_event_log::open(&url, 2).await.unwrap();
    let (user, room) = (Uuid::now_v7(), Uuid::now_v7());
    let now = Utc::now();
    // As a release before UserRegistered v2 wrote it: with the password hash.
    let registered = NewEvent {
        event_type: "UserRegistered".into(),
        event_version: 1,
        payload: serde_json::to_value(UserRegisteredV1 {
            user_id: user,
            username: Username::parse("alice").unwrap(),
            display_name: DisplayName::parse("Alice").unwrap(),
            password_hash: "$argon2id$v=19$do-not-export".into(),
            registered_at: now,
        })
        .unwrap(),
    };
    append(&log, "user", user, vec![registered]).await;
    let created = RoomEvent::RoomCreated(RoomCreated {
        room_id: room,
        name: RoomName::parse("general").unwrap(),
        topic: None,
        visibility: Visibility::Public,
        creator_id: user,
        created_at: now,
    });
    let joined = RoomEvent::MemberJoined(MemberJoined {
        room_id: room,
        user_id: user,
        role: Role::Owner,
        at: now,
    });
    append(
        &log,
        "room",
        room,
        vec![new_event(&created), new_event(&joined)],
    )
    .await;
    for i in 0..30 {
        let id = Uuid::now_v7();
        let sent = MessageEvent::MessageSent(MessageSent {
            message_id: id,
            room_id: room,
            sender_id: user,
            body: MessageBody::parse(format!("message {i}")).unwrap(),
            reply_to: None,
            sent_at: now,
            format: Default::default(),
        });
        let mut event = new_event(&sent);
        if i == 0 {
            // As a release before MessageSent v2 wrote it.
            event.event_version = 1;
            event.payload.as_object_mut().unwrap().remove("format");
        }
        append(&log, "message", id, vec![event]).await;
    }
    url
}

#[test]
fn bad_filter_arguments_name_the_argument() {
    for (args, named) in [
        (&["--since", "yesterday"][..], "--since"),
        (&["--until", "2026-13-01"][..], "--until"),
        (&["--aggregate-id", "nope"][..], "--aggregate-id"),
        (&["--from-position", "0"][..], "--from-position"),
        (&["--to-position", "x"][..], "--to-position"),
        (&["--type", "message sent"][..], "--type"),
        (&["--format", "csv"][..], "--format"),
    ] {
        let mut full = vec!["events", "export", "--database-url", "sqlite://unused.db"];
        full.extend_from_slice(args);
        let out = parley(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{args:?}: {}", stderr(&out));
    }
    let out = parley(&[
        "events",
        "export",
        "--database-url",
        "sqlite://unused.db",
        "--from-position",
        "9",
        "--to-position",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--from-position 9 is above --to-position 3"));
}

#[tokio::test]
async fn export_to_stdout_and_replay_into_a_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let url = chat_log(dir.path()).await;

    let out = parley(&["events", "export", "--database-url", &url, "--out", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 33, "only events on stdout");
    assert!(!text.contains("do-not-export"));
    assert!(
        stderr(&out).contains("events written   33"),
        "{}",
        stderr(&out)
    );
    let first_sent: serde_json::Value = serde_json::from_str(text.lines().nth(3).unwrap()).unwrap();
    assert_eq!(first_sent["event_version"], 2);
    assert_eq!(first_sent["payload"]["format"], "plain");
    let out = parley(&[
        "events",
        "export",
        "--database-url",
        &url,
        "--stored-shape",
        "--type",
        "MessageSent",
        "--limit",
        "1",
    ]);
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored["event_version"], 1);
    assert!(stored["payload"].get("format").is_none());

    // Replay everything but the last 3 messages into a fresh read store.
    let into = format!("sqlite://{}", dir.path().join("sandbox.db").display());
    let out = parley(&[
        "events",
        "replay",
        "--database-url",
        &url,
        "--into",
        &into,
        "--to-position",
        "30",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stderr(&out);
    assert!(report.contains("events           30"), "{report}");
    assert!(report.contains("parked           0"), "{report}");
    let mut conn = sqlx::SqliteConnection::connect(&into).await.unwrap();
    let messages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM history_messages")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(messages, 27);
    // The v1 message was applied like any other (upcast by the codec).
    let first: String =
        sqlx::query_scalar("SELECT body FROM history_messages ORDER BY position LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(first, "message 0");

    // A database that already holds read models is refused.
    let out = parley(&["events", "replay", "--database-url", &url, "--into", &into]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("fresh database"), "{}", stderr(&out));
}
