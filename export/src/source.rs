//! Reading the event log in position order, with the filters pushed into SQL.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parley_event_log::{EventEnvelope, Metadata};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{PgPool, Row, SqlitePool};

use crate::filter::Filter;

/// An event log opened read-only for export (no migrations are run).
#[derive(Clone)]
pub enum LogSource {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

const COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, recorded_at, metadata, payload";

impl LogSource {
    /// Opens the log named by `postgres://...` or `sqlite://...`.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let safe = parley_event_log::redact_url(url);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {safe}: {e}"))?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("bad sqlite url {safe}: {e}"))?
                // An export of a mistyped path must fail, not create an empty log.
                .create_if_missing(false)
                .read_only(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open {safe}: {e}"))?;
            Ok(Self::Sqlite(pool))
        } else {
            anyhow::bail!("--database-url {safe:?}: expected postgres://... or sqlite://...")
        }
    }

    /// The highest position below which every event has committed and no new
    /// one can appear, so an export up to it is complete and a later one can
    /// resume after it.
    ///
    /// Postgres hands positions out before commit: the head seen now may have
    /// gaps that transactions still running will fill. Those transactions are
    /// all older than the snapshot's `xmax`, so once the oldest running
    /// transaction is past it, every position up to the head seen is final.
    /// (SQLite has one writer and commits positions in order.)
    pub async fn settled_head(&self) -> anyhow::Result<i64> {
        match self {
            LogSource::Sqlite(pool) => Ok(sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(MAX(position), 0) FROM events",
            )
            .fetch_one(pool)
            .await?),
            LogSource::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT COALESCE(MAX(position), 0) AS head,
                            pg_snapshot_xmax(pg_current_snapshot())::text AS xmax
                     FROM events",
                )
                .fetch_one(pool)
                .await?;
                let head: i64 = row.try_get("head")?;
                let xmax: String = row.try_get("xmax")?;
                let started = Instant::now();
                loop {
                    let settled: bool = sqlx::query_scalar(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8",
                    )
                    .bind(&xmax)
                    .fetch_one(pool)
                    .await?;
                    if settled {
                        return Ok(head);
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        anyhow::bail!(
                            "a transaction older than the export has been running for a \
                             minute; the log head is not settled (retry later)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Up to `limit` events matching `filter` with a position in `(after, up_to]`,
    /// in position order.
    pub async fn read_page(
        &self,
        filter: &Filter,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<EventEnvelope>> {
        match self {
            LogSource::Postgres(pool) => {
                let (sql, _) = page_sql(filter, |n| format!("${n}"));
                let mut q = sqlx::query(&sql).bind(after).bind(up_to);
                if !filter.types.is_empty() {
                    q = q.bind(&filter.types);
                }
                if let Some(t) = &filter.aggregate_type {
                    q = q.bind(t);
                }
                if let Some(id) = filter.aggregate_id {
                    q = q.bind(id);
                }
                if let Some(t) = filter.since {
                    q = q.bind(t);
                }
                if let Some(t) = filter.until {
                    q = q.bind(t);
                }
                let rows = q.bind(limit).fetch_all(pool).await?;
                rows.iter().map(pg_envelope).collect()
            }
            LogSource::Sqlite(pool) => {
                let (sql, _) = page_sql(filter, |_| "?".to_string());
                let mut q = sqlx::query(&sql).bind(after).bind(up_to);
                for t in &filter.types {
                    q = q.bind(t);
                }
                if let Some(t) = &filter.aggregate_type {
                    q = q.bind(t);
                }
                if let Some(id) = filter.aggregate_id {
                    q = q.bind(id.to_string());
                }
                if let Some(t) = filter.since {
                    q = q.bind(parley_event_log::sqlite::format_time(&t));
                }
                if let Some(t) = filter.until {
                    q = q.bind(parley_event_log::sqlite::format_time(&t));
                }
                let rows = q.bind(limit).fetch_all(pool).await?;
                rows.iter().map(sqlite_envelope).collect()
            }
        }
    }
}

/// The page query with only the conditions that are set (so Postgres can use the
/// aggregate index when one is given). `param(n)` renders the n-th placeholder.
fn page_sql(filter: &Filter, param: impl Fn(usize) -> String) -> (String, usize) {
    let mut n = 0;
    let mut next = || {
        n += 1;
        param(n)
    };
    let mut sql = format!(
        "SELECT {COLUMNS} FROM events WHERE position > {} AND position <= {}",
        next(),
        next()
    );
    if !filter.types.is_empty() {
        if param(1) == "?" {
            let marks: Vec<String> = filter.types.iter().map(|_| next()).collect();
            sql += &format!(" AND event_type IN ({})", marks.join(", "));
        } else {
            sql += &format!(" AND event_type = ANY({})", next());
        }
    }
    if filter.aggregate_type.is_some() {
        sql += &format!(" AND aggregate_type = {}", next());
    }
    if filter.aggregate_id.is_some() {
        sql += &format!(" AND aggregate_id = {}", next());
    }
    if filter.since.is_some() {
        sql += &format!(" AND recorded_at >= {}", next());
    }
    if filter.until.is_some() {
        sql += &format!(" AND recorded_at < {}", next());
    }
    sql += &format!(" ORDER BY position LIMIT {}", next());
    (sql, n)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("corrupt event row ({what}): {e}")
}

fn pg_envelope(row: &PgRow) -> anyhow::Result<EventEnvelope> {
    let metadata: serde_json::Value = row.try_get("metadata")?;
    Ok(EventEnvelope {
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        position: row.try_get("position")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        metadata: metadata_from(metadata)?,
        payload: row.try_get("payload")?,
        tx_id: 0,
    })
}

fn metadata_from(value: serde_json::Value) -> anyhow::Result<Metadata> {
    serde_json::from_value(value).map_err(|e| corrupt("metadata", e))
}

fn sqlite_envelope(row: &SqliteRow) -> anyhow::Result<EventEnvelope> {
    let text = |name: &str| row.try_get::<String, _>(name);
    Ok(EventEnvelope {
        event_id: text("event_id")?
            .parse()
            .map_err(|e| corrupt("event_id", e))?,
        event_type: text("event_type")?,
        event_version: row.try_get("event_version")?,
        aggregate_type: text("aggregate_type")?,
        aggregate_id: text("aggregate_id")?
            .parse()
            .map_err(|e| corrupt("aggregate_id", e))?,
        sequence: row.try_get("sequence")?,
        position: row.try_get("position")?,
        recorded_at: DateTime::parse_from_rfc3339(&text("recorded_at")?)
            .map_err(|e| corrupt("recorded_at", e))?
            .with_timezone(&Utc),
        metadata: serde_json::from_str(&text("metadata")?).map_err(|e| corrupt("metadata", e))?,
        payload: serde_json::from_str(&text("payload")?).map_err(|e| corrupt("payload", e))?,
        tx_id: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sql_has_only_the_set_conditions() {
        let (sql, n) = page_sql(&Filter::default(), |n| format!("${n}"));
        assert!(sql.ends_with("position > $1 AND position <= $2 ORDER BY position LIMIT $3"));
        assert_eq!(n, 3);
        let filter = Filter {
            types: vec!["A".into(), "B".into()],
            aggregate_id: Some(uuid::Uuid::nil()),
            ..Filter::default()
        };
        let (sql, n) = page_sql(&filter, |_| "?".into());
        assert!(sql.contains("event_type IN (?, ?) AND aggregate_id = ?"));
        assert_eq!(n, 6);
        let (sql, _) = page_sql(&filter, |n| format!("${n}"));
        assert!(sql.contains("event_type = ANY($3) AND aggregate_id = $4"));
    }
}
