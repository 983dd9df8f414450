//! Helpers for tests across the workspace: a fresh Postgres database per test.
//!
//! The server comes from `PARLEY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Databases are named
//! `parley_test_<unix seconds>_<random>`; ones older than two hours (left by a
//! crashed run) are dropped when the next test database is made.

mod cluster;

pub use cluster::PrivateCluster;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

use crate::LogError;

/// A port for a child process to listen on. Ports taken by binding port 0 come
/// from the kernel's ephemeral range, where every outgoing connection (to the
/// database, to a broker) takes its own, so one can be gone before the child
/// binds it. These come from below that range (20000 to 31999), handed out in
/// turn within the process from a start of its own.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// An append that creates the room `room` (one `RoomCreated` at sequence 1):
/// the smallest write a test can make through the log's own append.
pub fn room_created(room: uuid::Uuid) -> crate::AppendRequest {
    crate::AppendRequest {
        streams: vec![crate::StreamWrite {
            aggregate_type: "room".into(),
            aggregate_id: room,
            expected_version: 0,
            events: vec![crate::NewEvent {
                event_type: "RoomCreated".into(),
                event_version: 1,
                payload: serde_json::json!({}),
            }],
        }],
        metadata: crate::Metadata::default(),
        recorded_at: chrono::Utc::now(),
        idempotency: None,
    }
}

/// The maintenance URL of the test Postgres server.
pub fn admin_url() -> String {
    std::env::var("PARLEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > base.find("://").map_or(0, |i| i + 2) => &base[..slash],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> Result<String, LogError> {
    let admin = admin_url();
    let mut conn = PgConnection::connect(&admin).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    drop_stale(&mut conn, now).await;
    let name = format!("parley_test_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(with_database(&admin, &name))
}

async fn drop_stale(conn: &mut PgConnection, now: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'parley\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let made: u64 = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(made) > 2 * 3600 {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn swaps_the_database_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
