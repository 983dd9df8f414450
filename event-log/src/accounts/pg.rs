//! [`Accounts`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::{Accounts, Rotation, SessionRecord};
use crate::pg::PgLog;
use crate::LogError;

const SESSION_COLUMNS: &str =
    "session_id, user_id, created_at, last_used_at, expires_at, user_agent";

fn session(row: &PgRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        user_agent: row.try_get("user_agent")?,
    })
}

#[async_trait]
impl Accounts for PgLog {
    async fn password_hash(&self, user_id: Uuid) -> Result<Option<String>, LogError> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    async fn set_password_hash(&self, user_id: Uuid, hash: &str) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE
               SET password_hash = EXCLUDED.password_hash, updated_at = now()",
        )
        .bind(user_id)
        .bind(hash)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn forget_password_hash(&self, user_id: Uuid) -> Result<(), LogError> {
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn start_session(&self, s: &SessionRecord, refresh_hash: &str) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO sessions (session_id, user_id, refresh_hash, created_at, last_used_at,
                                   expires_at, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.session_id)
        .bind(s.user_id)
        .bind(refresh_hash)
        .bind(s.created_at)
        .bind(s.last_used_at)
        .bind(s.expires_at)
        .bind(&s.user_agent)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        session_id: Uuid,
        presented: &str,
        next: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Rotation, LogError> {
        let mut tx = self.pool().begin().await?;
        let rotated = sqlx::query(&format!(
            "UPDATE sessions SET refresh_hash = $3, last_used_at = $4, expires_at = $5
             WHERE session_id = $1 AND refresh_hash = $2 AND ended_at IS NULL AND expires_at > $4
             RETURNING {SESSION_COLUMNS}"
        ))
        .bind(session_id)
        .bind(presented)
        .bind(next)
        .bind(now)
        .bind(expires_at)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = rotated {
            sqlx::query(
                "INSERT INTO refresh_tokens_rotated (refresh_hash, session_id, rotated_at)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(presented)
            .bind(session_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Rotation::Rotated(session(&row)?));
        }
        // Not the current token: one this session rotated past means a copy is
        // in other hands, so the whole session ends.
        let reused = sqlx::query(
            "UPDATE sessions SET ended_at = COALESCE(ended_at, $3)
             WHERE session_id = $1
               AND EXISTS (SELECT 1 FROM refresh_tokens_rotated
                           WHERE refresh_hash = $2 AND session_id = $1 AND rotated_at < $4)
             RETURNING user_id",
        )
        .bind(session_id)
        .bind(presented)
        .bind(now)
        .bind(now - super::REUSE_GRACE)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match reused {
            Some(row) => Rotation::Reused {
                session_id,
                user_id: row.try_get("user_id")?,
            },
            None => Rotation::Unknown,
        })
    }

    async fn spend_token(
        &self,
        token_hash: &str,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, LogError> {
        let done = sqlx::query(
            "INSERT INTO refresh_tokens_rotated (refresh_hash, session_id, rotated_at)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(token_hash)
        .bind(session_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn sessions_of(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, LogError> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions
             WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC, session_id"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(session).collect::<Result<_, _>>()?)
    }

    async fn end_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, LogError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = $3
             WHERE session_id = $1 AND user_id = $2 AND ended_at IS NULL AND expires_at > $3",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn end_sessions(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<u64, LogError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = $2
             WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2",
        )
        .bind(user_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    async fn prune_sessions(&self, before: DateTime<Utc>) -> Result<u64, LogError> {
        let mut tx = self.pool().begin().await?;
        let gone: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE COALESCE(ended_at, expires_at) < $1 RETURNING session_id",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM refresh_tokens_rotated WHERE session_id = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.len() as u64)
    }
}
