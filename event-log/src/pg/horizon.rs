//! The tail's horizon: which running transactions may still add events.
//!
//! The tail reads only below the oldest running transaction that can still
//! write an event (invariant 2). PostgreSQL's snapshot `xmin` is the oldest
//! running transaction of the whole cluster, so a stranger's open transaction
//! (another database's, a batch job's, a session left `idle in transaction`)
//! would hold every reader back for as long as it stays open.
//!
//! Why a stranger can be told apart: an append's first statement is its
//! `INSERT INTO events`, and PostgreSQL locks the table it inserts into (at
//! parse, or when a cached plan is revalidated) before that statement gives
//! the transaction its id. So a transaction that already has an id and holds
//! no lock on `events` cannot write an event for as long as it runs. A watcher
//! lists those every [`WATCH_EVERY`]; the tail's query leaves them out of its
//! horizon. A transaction it has not classified yet (younger than one watch)
//! still holds the tail, briefly, as before: never the other way round.
//!
//! A list holds only for the server run it was taken in: after a restart
//! (a crash, a failover) PostgreSQL can hand out again the ids of
//! transactions whose records it lost, to a writer this time. So the list
//! carries the server's start time, and the tail's query ignores a list of
//! another run.
//!
//! What remains is a writer that hangs mid-append: it must hold the tail. The
//! watcher names it (pid, database, state, since when) in a warning and in
//! [`LOG_TAIL_HELD_SECONDS`], and [`Horizon::holder`] answers it.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

/// How often running transactions are classified.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);
/// A writer running longer than this is reported as holding the tail.
const REPORT_AFTER: Duration = Duration::from_secs(5);
/// How long the oldest transaction that may still append events has been
/// running (0: none is): an append takes milliseconds, so a growing value is a
/// writer stuck mid-append, holding every reader of the log back.
pub const LOG_TAIL_HELD_SECONDS: &str = "parley_log_tail_held_seconds";

/// A transaction that may still append events, and so holds the tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailHolder {
    pub pid: i32,
    pub database: Option<String>,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// Running transactions that cannot write events, as of one server run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strangers {
    /// Their ids (xid8, as integers).
    pub ids: Vec<i64>,
    /// `pg_postmaster_start_time()` when they were listed (`None` before the
    /// first listing: no one is left out then).
    pub server_started: Option<DateTime<Utc>>,
}

/// What the watcher knows, shared with the log's readers.
#[derive(Default)]
pub struct Horizon {
    strangers: RwLock<Strangers>,
    /// The oldest running transaction that may, once it has run a while.
    holder: RwLock<Option<TailHolder>>,
}

impl Horizon {
    /// The strangers to leave out of the tail's horizon.
    pub fn strangers(&self) -> Strangers {
        self.strangers.read().expect("horizon lock").clone()
    }

    /// The writer holding the tail for longer than a moment, if one is.
    pub fn holder(&self) -> Option<TailHolder> {
        self.holder.read().expect("horizon lock").clone()
    }
}

/// The tail's condition, in SQL: below the oldest running transaction that is
/// not one of the strangers (their ids bound at `$param`, `bigint[]`, and their
/// server's start at `$param + 1`), shifted by the log's clock as `tx_id` is
/// (see migration 0006).
pub fn below_horizon(param: u8) -> String {
    let started = param + 1;
    format!(
        "tx_id < (COALESCE(
            (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
              WHERE x::text::bigint <> ALL(
                CASE WHEN pg_postmaster_start_time() = ${started}::timestamptz
                     THEN ${param}::bigint[] ELSE '{{}}'::bigint[] END)),
            pg_snapshot_xmax(pg_current_snapshot()))::text::numeric
            + (SELECT shift FROM log_clock))::text::xid8"
    )
}

/// Each running transaction that has an id, whether it holds a lock on
/// `events` here, and who runs it. A prepared transaction (no pid) is left
/// out, so it counts as a writer.
const CLASSIFY: &str = "
    SELECT x::text::bigint AS xid,
           EXISTS (SELECT 1 FROM pg_locks e
                    WHERE e.pid = t.pid AND e.locktype = 'relation'
                      AND e.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                      AND e.relation = 'events'::regclass) AS writer,
           t.pid, a.datname, a.state, a.xact_start,
           pg_postmaster_start_time() AS server_started
      FROM pg_snapshot_xip(pg_current_snapshot()) AS x
      JOIN pg_locks t ON t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock'
                     AND t.granted AND t.pid IS NOT NULL
                     AND t.transactionid::text::bigint = x::text::bigint % 4294967296
      LEFT JOIN pg_stat_activity a ON a.pid = t.pid
     ORDER BY x";

/// Classifies the running transactions every [`WATCH_EVERY`] for as long as
/// the log's readers hold `horizon`.
pub async fn watch(pool: PgPool, horizon: Weak<Horizon>) {
    let mut reported: Option<i32> = None;
    loop {
        let Some(shared) = horizon.upgrade() else {
            return;
        };
        match classify(&pool).await {
            Ok((strangers, oldest_writer)) => {
                *shared.strangers.write().expect("horizon lock") = strangers;
                let held = oldest_writer
                    .as_ref()
                    .and_then(|w| w.since)
                    .map(|since| (Utc::now() - since).to_std().unwrap_or_default())
                    .unwrap_or_default();
                metrics::gauge!(LOG_TAIL_HELD_SECONDS).set(held.as_secs_f64());
                let holder = oldest_writer.filter(|_| held >= REPORT_AFTER);
                if let Some(h) = &holder {
                    if reported != Some(h.pid) {
                        tracing::warn!(
                            pid = h.pid,
                            database = h.database.as_deref().unwrap_or("?"),
                            state = h.state.as_deref().unwrap_or("?"),
                            since = ?h.since,
                            held_secs = held.as_secs(),
                            "a transaction that may append events has been open for a while: \
                             every reader of the log waits for it (pg_terminate_backend(pid) ends it)"
                        );
                        reported = Some(h.pid);
                    }
                } else {
                    reported = None;
                }
                *shared.holder.write().expect("horizon lock") = holder;
            }
            Err(e) => tracing::debug!(error = %e, "cannot classify running transactions"),
        }
        drop(shared);
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// The strangers, and the oldest transaction that may still write events.
async fn classify(pool: &PgPool) -> Result<(Strangers, Option<TailHolder>), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // Read first: a list is of the run this time was read in, or empty.
    let server_started = sqlx::query_scalar("SELECT pg_postmaster_start_time()")
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query(CLASSIFY).fetch_all(&mut *conn).await?;
    let mut strangers = Strangers {
        ids: Vec::new(),
        server_started: Some(server_started),
    };
    let mut oldest_writer = None;
    for row in rows {
        if row.try_get::<DateTime<Utc>, _>("server_started")? != server_started {
            // The server restarted between the two queries: list no one.
            strangers.ids.clear();
            break;
        }
        if row.try_get::<bool, _>("writer")? {
            if oldest_writer.is_none() {
                oldest_writer = Some(TailHolder {
                    pid: row.try_get("pid")?,
                    database: row.try_get("datname")?,
                    state: row.try_get("state")?,
                    since: row.try_get("xact_start")?,
                });
            }
        } else {
            strangers.ids.push(row.try_get("xid")?);
        }
    }
    Ok((strangers, oldest_writer))
}

/// Starts the watcher once per log, on the first read of the tail.
pub fn start_once(once: &std::sync::Once, pool: &PgPool, horizon: &Arc<Horizon>) {
    let (pool, weak) = (pool.clone(), Arc::downgrade(horizon));
    once.call_once(move || {
        tokio::spawn(watch(pool, weak));
    });
}
