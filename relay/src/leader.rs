//! One publisher at a time: a Postgres session advisory lock on a dedicated connection.
//!
//! The lock lives exactly as long as the session that took it, so a leader that
//! crashes, hangs up or is partitioned away frees it with its connection, and a
//! standby's next try (every second or so) takes over. The connection is not from
//! a pool: a pooled connection could be handed back, or recycled, while the lock is
//! still held on it.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// How long a lock query may take before the lock is presumed lost.
const LOCK_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock key of the relay publishing to `topic`: stable across
/// processes and versions (FNV-1a), non-negative so it reads back from `pg_locks`
/// as it was written.
pub fn lock_key(topic: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"parley.relay:".iter().chain(topic.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash & i64::MAX as u64) as i64
}

/// The leadership lock of one relay replica.
pub(crate) struct LeaderLock {
    options: PgConnectOptions,
    key: i64,
    conn: Option<PgConnection>,
}

impl LeaderLock {
    pub(crate) fn new(options: PgConnectOptions, key: i64) -> Self {
        // The server drops (and unlocks) a session whose client vanished without a
        // FIN within about 25 s, instead of the kernel's two hours.
        let options = options
            .application_name("parley-relay-lock")
            .options([
                ("tcp_keepalives_idle", "10"),
                ("tcp_keepalives_interval", "5"),
                ("tcp_keepalives_count", "3"),
            ])
            .log_statements(tracing::log::LevelFilter::Trace);
        Self {
            options,
            key,
            conn: None,
        }
    }

    /// Tries once to take the lock, connecting first if needed.
    pub(crate) async fn try_acquire(&mut self) -> Result<bool, sqlx::Error> {
        let result = self.query_bool("SELECT pg_try_advisory_lock($1)").await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Whether this session still holds the lock (and its connection still answers).
    pub(crate) async fn still_held(&mut self) -> bool {
        let held = self
            .query_bool(
                "SELECT EXISTS (
                     SELECT 1 FROM pg_locks
                     WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
                       AND objsubid = 1
                       AND ((classid::bigint << 32) | objid::bigint) = $1)",
            )
            .await;
        match held {
            Ok(held) => held,
            Err(_) => {
                self.conn = None;
                false
            }
        }
    }

    /// Releases the lock by closing its session.
    pub(crate) async fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing the session frees every lock it holds, whatever its count.
            let _ = tokio::time::timeout(LOCK_QUERY_TIMEOUT, conn.close()).await;
        }
    }

    async fn query_bool(&mut self, sql: &str) -> Result<bool, sqlx::Error> {
        let key = self.key;
        let work = async {
            if self.conn.is_none() {
                self.conn = Some(PgConnection::connect_with(&self.options).await?);
            }
            let conn = self.conn.as_mut().expect("connected above");
            sqlx::query_scalar::<_, bool>(sql)
                .bind(key)
                .fetch_one(conn)
                .await
        };
        match tokio::time::timeout(LOCK_QUERY_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "lock query timed out",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn keys_are_stable_and_non_negative() {
        assert_eq!(lock_key("parley.events"), lock_key("parley.events"));
        assert_ne!(lock_key("parley.events"), lock_key("parley.events.v2"));
        for topic in ["", "a", "parley.events", "parley.test.0193"] {
            assert!(lock_key(topic) >= 0);
        }
    }
}
