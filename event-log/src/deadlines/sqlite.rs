//! [`Deadlines`] on SQLite: times are RFC 3339 UTC text of fixed width, so
//! they compare as text.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Deadlines;
use crate::sqlite::{format_time, SqliteLog};
use crate::LogError;

#[async_trait]
impl Deadlines for SqliteLog {
    async fn set_deadline(&self, kind: &str, id: Uuid, due: DateTime<Utc>) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO deadlines (kind, aggregate_id, due_at) VALUES (?, ?, ?)
             ON CONFLICT (kind, aggregate_id) DO UPDATE SET due_at = excluded.due_at",
        )
        .bind(kind)
        .bind(id.to_string())
        .bind(format_time(&due))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn due_deadlines(
        &self,
        kind: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>, LogError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT aggregate_id FROM deadlines WHERE kind = ? AND due_at <= ?
             ORDER BY due_at LIMIT ?",
        )
        .bind(kind)
        .bind(format_time(&now))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        ids.iter()
            .map(|id| {
                id.parse()
                    .map_err(|e| LogError::Corrupt(format!("deadline id {id}: {e}")))
            })
            .collect()
    }

    async fn clear_deadline(&self, kind: &str, id: Uuid) -> Result<(), LogError> {
        sqlx::query("DELETE FROM deadlines WHERE kind = ? AND aggregate_id = ?")
            .bind(kind)
            .bind(id.to_string())
            .execute(self.writer())
            .await?;
        Ok(())
    }
}
