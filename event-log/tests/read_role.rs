//! The read side's database role reads the event log and cannot change it
//! (issue 21, item 14): `PgLog::grant_read_access`, run by `parley migrate
//! --read-side-role`.

use chrono::Utc;
use parley_event_log::pg::PgLog;
use parley_event_log::{testing, AppendRequest, Cursor, EventLog, Metadata, NewEvent, StreamWrite};
use uuid::Uuid;

fn one_event() -> AppendRequest {
    AppendRequest {
        streams: vec![StreamWrite {
            aggregate_type: "room".into(),
            aggregate_id: Uuid::now_v7(),
            expected_version: 0,
            events: vec![NewEvent {
                event_type: "RoomCreated".into(),
                event_version: 1,
                payload: serde_json::json!({}),
            }],
        }],
        metadata: Metadata::default(),
        recorded_at: Utc::now(),
        idempotency: None,
    }
}

/// The same URL, logged in as `role` (the test server trusts local logins).
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let after_user = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{after_user}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_side_role_reads_events_and_cannot_write_them() {
    let url = testing::fresh_database().await.expect("test database");
    let owner = PgLog::connect(&url, 2).await.unwrap();
    owner.migrate().await.unwrap();
    owner.append(one_event()).await.unwrap();
    let role = format!("parley_test_reader_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE \"{role}\" LOGIN"))
        .execute(owner.pool())
        .await
        .unwrap();
    owner.grant_read_access(&role).await.unwrap();
    owner.grant_read_access(&role).await.expect("idempotent");
    assert!(owner
        .grant_read_access("bad\"; DROP TABLE events; --")
        .await
        .is_err());

    let reader = PgLog::connect(&as_role(&url, &role), 2).await.unwrap();
    let tail = reader.read_after(Cursor::START, 10).await.unwrap();
    assert_eq!(tail.len(), 1, "it reads the log");
    assert!(
        reader.append(one_event()).await.is_err(),
        "it cannot append"
    );
    for statement in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "SELECT * FROM command_results",
        "DELETE FROM snapshots",
    ] {
        let err = sqlx::query(statement)
            .execute(reader.pool())
            .await
            .expect_err(statement);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }
    assert_eq!(
        owner.read_after(Cursor::START, 10).await.unwrap().len(),
        1,
        "nothing changed"
    );
    drop(reader);

    // Roles are server-wide: leave none behind.
    for statement in [
        format!("REVOKE ALL ON events FROM \"{role}\""),
        format!("REVOKE ALL ON SCHEMA public FROM \"{role}\""),
        format!("DROP ROLE \"{role}\""),
    ] {
        sqlx::query(&statement).execute(owner.pool()).await.unwrap();
    }
}
