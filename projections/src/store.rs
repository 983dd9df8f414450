//! The read-model store: one database (PostgreSQL or a SQLite file) reached through
//! sqlx's Any driver, so every read model runs the same SQL on both backends.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once, Weak};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use parley_event_log::notify::{self, Heard};
use parley_event_log::Cursor;
use sqlx::any::{install_default_drivers, AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::watch;

use crate::generations::{keyed_notice, Generations, KEYS_CHANNEL};
use crate::restarts::ServerRuns;

/// The Postgres channel projectors announce their commits on.
pub const COMMITS_CHANNEL: &str = "parley_projections";

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The read models' database.
#[derive(Clone, Debug)]
pub struct ReadStore {
    pool: AnyPool,
    backend: Backend,
    /// Ticks after a projector commits (see [`ReadStore::committed`]).
    committed: Arc<watch::Sender<u64>>,
    /// Commits heard of per projection (see [`ReadStore::generation`]).
    generations: Arc<Generations>,
    listening: Arc<Once>,
    url: Arc<str>,
    /// The server's runs, as new connections saw them.
    runs: Arc<ServerRuns>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid read store url: {0}")]
    Config(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How long one statement may run on a Postgres read store opened with
/// [`ReadStore::open`] (projectors, rebuilds, exports): long enough for the
/// largest batch, short enough that a stuck one frees its connection.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The advisory lock key under which read-model tables are created
/// (`parley` + `schema`, in ASCII, folded into 63 bits).
const SCHEMA_LOCK: i64 = 0x7061_726c_6579_5343;

impl ReadStore {
    /// Opens the store named by a URL and applies its migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        Self::open_with_timeout(url, pool_size, STATEMENT_TIMEOUT).await
    }

    /// [`ReadStore::open`] with another statement timeout (Postgres only; the
    /// read API's queries are key lookups and get a much shorter one).
    pub async fn open_with_timeout(
        url: &str,
        pool_size: u32,
        statement_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let statement_timeout =
            format!("SET statement_timeout = {}", statement_timeout.as_millis());
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Config(format!(
                "{}: expected postgres://... or sqlite://...",
                parley_event_log::redact_url(url)
            )));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let options =
            AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Config(e.to_string()))?;
        let runs = Arc::new(ServerRuns::default());
        let seen = runs.clone();
        let pool = AnyPoolOptions::new()
            // SQLite has one writer: more connections only wait on its lock.
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                pool_size.max(2)
            })
            .acquire_timeout(Duration::from_secs(10))
            // Acquire waits as TRACE events (see the event log's `pg.rs`).
            .acquire_time_level(tracing::log::LevelFilter::Trace)
            .after_connect(move |conn, _| {
                let statement_timeout = statement_timeout.clone();
                let seen = seen.clone();
                Box::pin(async move {
                    use sqlx::Executor;
                    if backend == Backend::Postgres {
                        // Read models are derived data, and a projector's checkpoint
                        // commits with its changes: a crash can only lose the newest
                        // commits together with their checkpoint, which the projector
                        // then applies again from the log (it notices the restart,
                        // `restarts.rs`). So a commit need not wait for its WAL flush
                        // (the event log's commits still do).
                        conn.execute("SET synchronous_commit = off").await?;
                        let started: String =
                            sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
                                .fetch_one(&mut *conn)
                                .await?;
                        seen.saw(started);
                        conn.execute(statement_timeout.as_str()).await?;
                        // Every read-model statement is a key lookup or a keyed
                        // write; with a LIMIT parameter Postgres kept choosing
                        // custom plans, i.e. planning each execution again (seen
                        // in perf). A generic plan is planned once per statement.
                        conn.execute("SET plan_cache_mode = force_generic_plan")
                            .await?;
                    }
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Self {
            pool,
            backend,
            committed: Arc::new(watch::channel(0).0),
            generations: Arc::new(Generations::default()),
            listening: Arc::new(Once::new()),
            url: url.into(),
            runs,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// The URL the store was opened with (credentials included: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs a read model's `CREATE ... IF NOT EXISTS` statements.
    ///
    /// PostgreSQL does not make those safe when two sessions run them at once
    /// (one fails on `pg_type_typname_nsp_index`, or "type ... already
    /// exists"), and replicas started together (Kubernetes `replicas: 2`, a
    /// scale-up from zero) do exactly that. On PostgreSQL they run in one
    /// transaction under an advisory lock, so replicas take turns; SQLite's
    /// single writer already serializes them.
    pub async fn create_tables(&self, statements: Vec<String>) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Sqlite {
            for statement in statements {
                sqlx::raw_sql(&statement).execute(&self.pool).await?;
            }
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !free {
            tracing::info!("another process is creating the read models' tables: waiting for it");
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SCHEMA_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        for statement in &statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where a projection is in the log (the start if it never ran).
    /// How many restarts of the server this store has noticed (always 0 on
    /// SQLite): positions loaded under an older count may be ahead of what
    /// the store holds.
    pub fn server_restarts(&self) -> u64 {
        self.runs.restarts()
    }

    pub async fn checkpoint(&self, projection: &str) -> Result<Cursor, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        checkpoint(&mut conn, projection).await
    }

    /// Checkpoints of several projections in one round trip (the start for one
    /// that never ran), in the order asked.
    pub async fn checkpoints(&self, projections: &[&str]) -> Result<Vec<Cursor>, sqlx::Error> {
        let rows = sqlx::query("SELECT projection, tx_id, position FROM projection_checkpoints")
            .fetch_all(&self.pool)
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let cursor = Cursor {
                tx_id: row.try_get("tx_id")?,
                position: row.try_get("position")?,
            };
            found.insert(row.try_get::<String, _>("projection")?, cursor);
        }
        Ok(projections
            .iter()
            .map(|name| found.get(*name).copied().unwrap_or(Cursor::START))
            .collect())
    }

    /// Ticks after a projector commits a batch: at once for projectors in this
    /// process, and on Postgres also for other processes' projectors (their
    /// transactions `NOTIFY` on commit). Readers that wait for a checkpoint to move
    /// (the stream hub, read-your-writes) wait on this instead of polling.
    pub fn committed(&self) -> watch::Receiver<u64> {
        if self.backend == Backend::Postgres {
            let (url, committed, generations) = (
                self.url.clone(),
                Arc::downgrade(&self.committed),
                self.generations.clone(),
            );
            self.listening.call_once(move || {
                tokio::spawn(listen_for_commits(url, committed, generations));
            });
        }
        self.committed.subscribe()
    }

    /// A number that grows with every commit of any of `projections` that this
    /// process heard of, whatever it was about (what the stream hub waits
    /// for). `None` on Postgres while commits of other processes cannot be
    /// heard (the notification link is down or not up yet), and always on
    /// SQLite, where another process could write unheard.
    pub fn generation(&self, projections: &[&str]) -> Option<u64> {
        self.live()?;
        Some(self.generations.commits_of(projections))
    }

    /// Whether commits of other processes are heard now: `None` if not.
    fn live(&self) -> Option<()> {
        if self.backend != Backend::Postgres {
            return None;
        }
        let _ = self.committed();
        self.generations.live.load(Ordering::Acquire).then_some(())
    }

    /// As [`ReadStore::generation`], counting only the commits that could
    /// change rows about `keys` (rooms, users; see [`crate::generations`]):
    /// an entry built from one room's rows outlives commits about others.
    pub fn generation_about(&self, projections: &[&str], keys: &[uuid::Uuid]) -> Option<u64> {
        self.live()?;
        Some(self.generations.of(projections, keys))
    }

    /// A number that moves whenever any generation could (see
    /// [`Generations::changes`](crate::generations)): for entries whose keys
    /// are known only once read. `None` as for [`ReadStore::generation`].
    pub fn changes(&self) -> Option<u64> {
        self.live()?;
        Some(self.generations.changes())
    }

    /// Announces a commit of `projection` made in this process, about `keys`
    /// (`None`: about everything).
    pub(crate) fn announce_commit(&self, projection: &str, keys: Option<&[uuid::Uuid]>) {
        self.generations.committed(projection);
        match keys {
            Some(keys) => self.generations.bump_keys(projection, keys),
            None => self.generations.bump(projection),
        }
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Turns projectors' NOTIFYs into ticks, reconnecting when the link drops. Holds
/// the sender weakly: once every handle to the store is gone, the task ends.
async fn listen_for_commits(
    url: Arc<str>,
    committed: Weak<watch::Sender<u64>>,
    generations: Arc<Generations>,
) {
    let tick = || match committed.upgrade() {
        Some(sender) => {
            sender.send_modify(|n| *n = n.wrapping_add(1));
            true
        }
        None => false,
    };
    let connect = || sqlx::postgres::PgListener::connect(&url);
    let channels = [KEYS_CHANNEL, COMMITS_CHANNEL];
    notify::listen(connect, &channels, "projection commit", |heard| {
        match heard {
            // Whatever was committed while we were away: a new epoch, and wake
            // waiters once.
            Heard::Connected => {
                generations.reconnected();
                tick()
            }
            // The keyed notice comes first; the plain one that follows wakes.
            Heard::Notification { channel, payload } if channel == KEYS_CHANNEL => {
                generations.heard(channel, payload);
                committed.strong_count() > 0
            }
            Heard::Notification { channel, payload } => {
                generations.heard(channel, payload);
                tick()
            }
            Heard::Lost => {
                generations.live.store(false, Ordering::Release);
                committed.strong_count() > 0
            }
        }
    })
    .await;
    generations.live.store(false, Ordering::Release);
}

/// A projection's checkpoint, read on the given connection.
pub async fn checkpoint(conn: &mut AnyConnection, projection: &str) -> Result<Cursor, sqlx::Error> {
    let row =
        sqlx::query("SELECT tx_id, position FROM projection_checkpoints WHERE projection = $1")
            .bind(projection)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some(row) => Cursor {
            tx_id: row.try_get("tx_id")?,
            position: row.try_get("position")?,
        },
        None => Cursor::START,
    })
}

/// Moves a projection's checkpoint, inside the caller's transaction.
pub async fn save_checkpoint(
    conn: &mut AnyConnection,
    projection: &str,
    cursor: Cursor,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, tx_id, position, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (projection) DO UPDATE
           SET tx_id = excluded.tx_id, position = excluded.position, updated_at = excluded.updated_at",
    )
    .bind(projection)
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .bind(micros(&Utc::now()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Tells other processes (see [`ReadStore::committed`]) that `projection` moved,
/// inside the caller's transaction: Postgres delivers it when, and only if, the
/// transaction commits. With `keys`, the commit is about only those rooms and
/// users (see [`crate::generations`]); `None`: about everything. Nothing to do
/// on SQLite (one process).
pub async fn announce_in(
    conn: &mut AnyConnection,
    projection: &str,
    keys: Option<&[uuid::Uuid]>,
) -> Result<(), sqlx::Error> {
    if conn.backend_name() != "PostgreSQL" {
        return Ok(());
    }
    // One statement: the keyed notice first (see crate::generations).
    match keys {
        Some(keys) => {
            sqlx::query("SELECT pg_notify($1, $2), pg_notify($3, $4)")
                .bind(KEYS_CHANNEL)
                .bind(keyed_notice(projection, keys))
                .bind(COMMITS_CHANNEL)
                .bind(projection)
                .execute(&mut *conn)
                .await?
        }
        None => {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(COMMITS_CHANNEL)
                .bind(projection)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(())
}

/// Times are stored as microseconds since the Unix epoch (sortable on both backends).
pub fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`micros`].
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}
