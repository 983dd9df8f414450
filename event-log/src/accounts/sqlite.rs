//! [`Accounts`] on SQLite: times are RFC 3339 UTC text of fixed width, so
//! they compare as text.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use super::{Accounts, Rotation, SessionRecord};
use crate::sqlite::{format_time, SqliteLog};
use crate::LogError;

const SESSION_COLUMNS: &str =
    "session_id, user_id, created_at, last_used_at, expires_at, user_agent";

fn corrupt(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(format!("{what}: {e}"))
}

fn time(row: &SqliteRow, name: &str) -> Result<DateTime<Utc>, LogError> {
    let text: String = row.try_get(name)?;
    Ok(DateTime::parse_from_rfc3339(&text)
        .map_err(|e| corrupt(name, e))?
        .with_timezone(&Utc))
}

fn id(row: &SqliteRow, name: &str) -> Result<Uuid, LogError> {
    let text: String = row.try_get(name)?;
    text.parse().map_err(|e| corrupt(name, e))
}

fn session(row: &SqliteRow) -> Result<SessionRecord, LogError> {
    Ok(SessionRecord {
        session_id: id(row, "session_id")?,
        user_id: id(row, "user_id")?,
        created_at: time(row, "created_at")?,
        last_used_at: time(row, "last_used_at")?,
        expires_at: time(row, "expires_at")?,
        user_agent: row.try_get("user_agent")?,
    })
}

#[async_trait]
impl Accounts for SqliteLog {
    async fn password_hash(&self, user_id: Uuid) -> Result<Option<String>, LogError> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = ?")
                .bind(user_id.to_string())
                .fetch_optional(self.reader())
                .await?,
        )
    }

    async fn set_password_hash(&self, user_id: Uuid, hash: &str) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO credentials (user_id, password_hash) VALUES (?, ?)
             ON CONFLICT (user_id) DO UPDATE
               SET password_hash = excluded.password_hash,
                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
        .bind(user_id.to_string())
        .bind(hash)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn forget_password_hash(&self, user_id: Uuid) -> Result<(), LogError> {
        sqlx::query("DELETE FROM credentials WHERE user_id = ?")
            .bind(user_id.to_string())
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn start_session(&self, s: &SessionRecord, refresh_hash: &str) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO sessions (session_id, user_id, refresh_hash, created_at, last_used_at,
                                   expires_at, user_agent)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.session_id.to_string())
        .bind(s.user_id.to_string())
        .bind(refresh_hash)
        .bind(format_time(&s.created_at))
        .bind(format_time(&s.last_used_at))
        .bind(format_time(&s.expires_at))
        .bind(&s.user_agent)
        .execute(self.writer())
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
        let grace_cutoff = format_time(&(now - super::REUSE_GRACE));
        let (sid, now) = (session_id.to_string(), format_time(&now));
        let mut tx = self.writer().begin().await?;
        let rotated = sqlx::query(&format!(
            "UPDATE sessions SET refresh_hash = ?, last_used_at = ?, expires_at = ?
             WHERE session_id = ? AND refresh_hash = ? AND ended_at IS NULL AND expires_at > ?
             RETURNING {SESSION_COLUMNS}"
        ))
        .bind(next)
        .bind(&now)
        .bind(format_time(&expires_at))
        .bind(&sid)
        .bind(presented)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = rotated {
            sqlx::query(
                "INSERT OR IGNORE INTO refresh_tokens_rotated (refresh_hash, session_id, rotated_at)
                 VALUES (?, ?, ?)",
            )
            .bind(presented)
            .bind(&sid)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Rotation::Rotated(session(&row)?));
        }
        // Not the current token: one this session rotated past means a copy is
        // in other hands, so the whole session ends.
        let reused: Option<String> = sqlx::query_scalar(
            "UPDATE sessions SET ended_at = COALESCE(ended_at, ?)
             WHERE session_id = ?
               AND EXISTS (SELECT 1 FROM refresh_tokens_rotated
                           WHERE refresh_hash = ? AND session_id = ? AND rotated_at < ?)
             RETURNING user_id",
        )
        .bind(&now)
        .bind(&sid)
        .bind(presented)
        .bind(&sid)
        .bind(&grace_cutoff)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match reused {
            Some(user) => Rotation::Reused {
                session_id,
                user_id: user.parse().map_err(|e| corrupt("user_id", e))?,
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
            "INSERT OR IGNORE INTO refresh_tokens_rotated (refresh_hash, session_id, rotated_at)
             VALUES (?, ?, ?)",
        )
        .bind(token_hash)
        .bind(session_id.to_string())
        .bind(format_time(&now))
        .execute(self.writer())
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
             WHERE user_id = ? AND ended_at IS NULL AND expires_at > ?
             ORDER BY created_at DESC, session_id"
        ))
        .bind(user_id.to_string())
        .bind(format_time(&now))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(session).collect()
    }

    async fn end_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, LogError> {
        let now = format_time(&now);
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = ?
             WHERE session_id = ? AND user_id = ? AND ended_at IS NULL AND expires_at > ?",
        )
        .bind(&now)
        .bind(session_id.to_string())
        .bind(user_id.to_string())
        .bind(&now)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn end_sessions(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<u64, LogError> {
        let now = format_time(&now);
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = ?
             WHERE user_id = ? AND ended_at IS NULL AND expires_at > ?",
        )
        .bind(&now)
        .bind(user_id.to_string())
        .bind(&now)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    async fn prune_sessions(&self, before: DateTime<Utc>) -> Result<u64, LogError> {
        let before = format_time(&before);
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "DELETE FROM refresh_tokens_rotated WHERE session_id IN
               (SELECT session_id FROM sessions WHERE COALESCE(ended_at, expires_at) < ?)",
        )
        .bind(&before)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM sessions WHERE COALESCE(ended_at, expires_at) < ?")
            .bind(&before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
