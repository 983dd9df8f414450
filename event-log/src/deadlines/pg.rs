//! [`Deadlines`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Deadlines;
use crate::pg::PgLog;
use crate::LogError;

#[async_trait]
impl Deadlines for PgLog {
    async fn set_deadline(&self, kind: &str, id: Uuid, due: DateTime<Utc>) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO deadlines (kind, aggregate_id, due_at) VALUES ($1, $2, $3)
             ON CONFLICT (kind, aggregate_id) DO UPDATE SET due_at = EXCLUDED.due_at",
        )
        .bind(kind)
        .bind(id)
        .bind(due)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn due_deadlines(
        &self,
        kind: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>, LogError> {
        Ok(sqlx::query_scalar(
            "SELECT aggregate_id FROM deadlines WHERE kind = $1 AND due_at <= $2
             ORDER BY due_at LIMIT $3",
        )
        .bind(kind)
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    async fn clear_deadline(&self, kind: &str, id: Uuid) -> Result<(), LogError> {
        sqlx::query("DELETE FROM deadlines WHERE kind = $1 AND aggregate_id = $2")
            .bind(kind)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
