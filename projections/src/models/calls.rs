//! Calls, kept by the rooms model (a call is its room's business): each call's
//! state and what each member did with it, for `GET /v1/calls/{call_id}`.
//!
//! A call row remembers the last sequence of its call stream that was applied;
//! an event at or below it changes nothing.

use chrono::{DateTime, Utc};
use parley_domain::call::{CallEnd, CallEvent, CallKind};
use parley_event_log::EventEnvelope;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::parse_uuid;
use crate::projection::{advance, decode, ApplyError};
use crate::store::{from_micros, micros};

/// The tables' schema: calls, and each member's part in one.
pub(crate) fn schema(calls: &str, members: &str, suffix: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {calls} (
                call_id       TEXT   PRIMARY KEY,
                room_id       TEXT   NOT NULL,
                kind          TEXT   NOT NULL,
                started_by    TEXT   NOT NULL,
                status        TEXT   NOT NULL,
                started_at    BIGINT NOT NULL,
                answered_at   BIGINT,
                ended_at      BIGINT,
                end_reason    TEXT,
                last_sequence BIGINT NOT NULL
            )"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS room_calls_room{suffix} ON {calls} (room_id, started_at)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {members} (
                call_id TEXT   NOT NULL,
                user_id TEXT   NOT NULL,
                state   TEXT   NOT NULL,
                at      BIGINT NOT NULL,
                PRIMARY KEY (call_id, user_id)
            )"
        ),
    ]
}

fn kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Audio => "audio",
        CallKind::Video => "video",
    }
}

fn end_name(end: CallEnd) -> &'static str {
    match end {
        CallEnd::Completed => "completed",
        CallEnd::Missed => "missed",
        CallEnd::Declined => "declined",
        CallEnd::Cancelled => "cancelled",
    }
}

/// Applies one event of a call.
pub(crate) async fn apply(
    calls: &str,
    members: &str,
    conn: &mut AnyConnection,
    event: &EventEnvelope,
) -> Result<(), ApplyError> {
    let decoded: CallEvent = decode(event)?;
    if let CallEvent::CallStarted(e) = &decoded {
        let inserted = sqlx::query(&format!(
            "INSERT INTO {calls} (call_id, room_id, kind, started_by, status, started_at, last_sequence)
             VALUES ($1, $2, $3, $4, 'ringing', $5, $6) ON CONFLICT (call_id) DO NOTHING"
        ))
        .bind(e.call_id.to_string())
        .bind(e.room_id.to_string())
        .bind(kind_name(e.kind))
        .bind(e.started_by.to_string())
        .bind(micros(&e.at))
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?;
        // A replayed start must not bring the caller back into the call.
        if inserted.rows_affected() == 0 {
            return Ok(());
        }
        return set_member(members, conn, e.call_id, e.started_by, "joined", &e.at).await;
    }
    if !advance(conn, calls, "call_id", event.aggregate_id, event.sequence).await? {
        return Ok(());
    }
    match decoded {
        CallEvent::CallStarted(_) => {}
        CallEvent::CallJoined(e) => {
            // Answered: the first join of someone other than the caller.
            sqlx::query(&format!(
                "UPDATE {calls} SET status = 'active', answered_at = COALESCE(answered_at, $1)
                 WHERE call_id = $2 AND started_by <> $3 AND status <> 'ended'"
            ))
            .bind(micros(&e.at))
            .bind(e.call_id.to_string())
            .bind(e.user_id.to_string())
            .execute(&mut *conn)
            .await?;
            set_member(members, conn, e.call_id, e.user_id, "joined", &e.at).await?;
        }
        CallEvent::CallDeclined(e) => {
            set_member(members, conn, e.call_id, e.user_id, "declined", &e.at).await?;
        }
        CallEvent::CallLeft(e) => {
            set_member(members, conn, e.call_id, e.user_id, "left", &e.at).await?;
        }
        CallEvent::CallEnded(e) => {
            sqlx::query(&format!(
                "UPDATE {calls} SET status = 'ended', ended_at = $1, end_reason = $2 WHERE call_id = $3"
            ))
            .bind(micros(&e.at))
            .bind(end_name(e.reason))
            .bind(e.call_id.to_string())
            .execute(&mut *conn)
            .await?;
            // Whoever was still in it is out now.
            sqlx::query(&format!(
                "UPDATE {members} SET state = 'left', at = $1 WHERE call_id = $2 AND state = 'joined'"
            ))
            .bind(micros(&e.at))
            .bind(e.call_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn set_member(
    members: &str,
    conn: &mut AnyConnection,
    call_id: Uuid,
    user_id: Uuid,
    state: &str,
    at: &DateTime<Utc>,
) -> Result<(), ApplyError> {
    sqlx::query(&format!(
        "INSERT INTO {members} (call_id, user_id, state, at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (call_id, user_id) DO UPDATE SET state = excluded.state, at = excluded.at"
    ))
    .bind(call_id.to_string())
    .bind(user_id.to_string())
    .bind(state)
    .bind(micros(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A member's part in a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CallMember {
    pub user_id: Uuid,
    /// "joined" (in the call now), "left" or "declined".
    pub state: String,
    /// When they last did so.
    pub at: DateTime<Utc>,
}

/// A call as `GET /v1/calls/{call_id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CallView {
    pub call_id: Uuid,
    pub room_id: Uuid,
    /// "audio" or "video".
    pub kind: String,
    pub started_by: Uuid,
    /// "ringing", "active" or "ended".
    pub status: String,
    pub started_at: DateTime<Utc>,
    /// When someone other than the caller first joined; null if nobody did.
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// "completed", "missed", "declined" or "cancelled" once ended.
    pub end_reason: Option<String>,
    /// Everyone who joined or declined, in the order they last acted.
    pub members: Vec<CallMember>,
}

/// A call, if the read model holds it.
pub async fn call(pool: &AnyPool, call_id: Uuid) -> Result<Option<CallView>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT call_id, room_id, kind, started_by, status, started_at, answered_at, ended_at, end_reason
           FROM room_calls WHERE call_id = $1",
    )
    .bind(call_id.to_string())
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query(
        "SELECT user_id, state, at FROM room_call_members WHERE call_id = $1 ORDER BY at, user_id",
    )
    .bind(call_id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(CallMember {
            user_id: parse_uuid(&r.try_get::<String, _>("user_id")?)?,
            state: r.try_get("state")?,
            at: from_micros(r.try_get("at")?),
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(CallView {
        call_id,
        room_id: parse_uuid(&row.try_get::<String, _>("room_id")?)?,
        kind: row.try_get("kind")?,
        started_by: parse_uuid(&row.try_get::<String, _>("started_by")?)?,
        status: row.try_get("status")?,
        started_at: from_micros(row.try_get("started_at")?),
        answered_at: row
            .try_get::<Option<i64>, _>("answered_at")?
            .map(from_micros),
        ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(from_micros),
        end_reason: row.try_get("end_reason")?,
        members,
    }))
}

/// The members of a call who are in it now (signals go only between them).
pub async fn in_call(pool: &AnyPool, call_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query(
        "SELECT m.user_id FROM room_call_members m JOIN room_calls c ON c.call_id = m.call_id
          WHERE m.call_id = $1 AND m.state = 'joined' AND c.status <> 'ended'",
    )
    .bind(call_id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| parse_uuid(&r.try_get::<String, _>("user_id")?))
    .collect()
}
