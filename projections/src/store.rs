//! The read-model store: one database (PostgreSQL or a SQLite file) reached through
//! sqlx's Any driver, so every read model runs the same SQL on both backends.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use parley_event_log::Cursor;
use sqlx::any::{install_default_drivers, AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};

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

impl ReadStore {
    /// Opens the store named by a URL and applies its migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<Self, StoreError> {
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
        let pool = AnyPoolOptions::new()
            // SQLite has one writer: more connections only wait on its lock.
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                pool_size.max(2)
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
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
        let store = Self { pool, backend };
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

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where a projection is in the log (the start if it never ran).
    pub async fn checkpoint(&self, projection: &str) -> Result<Cursor, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        checkpoint(&mut conn, projection).await
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
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

/// Times are stored as microseconds since the Unix epoch (sortable on both backends).
pub fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`micros`].
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}
