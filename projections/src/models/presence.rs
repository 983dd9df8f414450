//! Presence: each user's chosen status, status message and when they were last seen.
//!
//! The stored status is what the user chose; the status a query returns is the
//! effective one: "offline" once the user has not been seen for [`OFFLINE_AFTER`],
//! even though no event says so (a closed laptop sends nothing).
//!
//! Each row remembers the last sequence of the user's presence stream that was
//! applied; an event at or below it changes nothing.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parley_domain::presence::PresenceEvent;
use parley_event_log::EventEnvelope;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::Model;
use super::{parse_uuid, placeholders, IN_CHUNK};
use crate::projection::{decode, ApplyError, Projection};
use crate::projection::{padded, padded_len};
use crate::store::{from_micros, micros};

/// A user not seen for this long is shown offline (clients heartbeat every 30 s).
pub const OFFLINE_AFTER: chrono::Duration = chrono::Duration::minutes(2);

/// The presence read model; `suffix` names a second set of tables for rebuilds.
pub struct PresenceModel {
    presence: String,
}

impl Model for PresenceModel {
    const NAME: &'static str = "presence";

    fn with_suffix(suffix: &str) -> Self {
        Self {
            presence: format!("presence{suffix}"),
        }
    }
}

#[async_trait]
impl Projection for PresenceModel {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(&["presence"])
    }

    fn schema(&self) -> Vec<String> {
        let p = &self.presence;
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {p} (
                user_id        TEXT   PRIMARY KEY,
                status         TEXT   NOT NULL,
                status_message TEXT,
                last_seen_at   BIGINT NOT NULL,
                last_sequence  BIGINT NOT NULL
            )"
        )]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        if !self.consumes(&event.aggregate_type) {
            return Ok(());
        }
        let decoded: PresenceEvent = decode(event)?;
        let p = &self.presence;
        // The stream id is ids::presence_id(user): the user is in the payload.
        match decoded {
            PresenceEvent::PresenceChanged(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {p} (user_id, status, status_message, last_seen_at, last_sequence)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (user_id) DO UPDATE
                       SET status = excluded.status, status_message = excluded.status_message,
                           last_seen_at = excluded.last_seen_at, last_sequence = excluded.last_sequence
                       WHERE {p}.last_sequence < excluded.last_sequence"
                ))
                .bind(e.user_id.to_string())
                .bind(e.status.as_str())
                .bind(e.status_message.map(|m| m.as_str().to_string()))
                .bind(micros(&e.at))
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
            }
            PresenceEvent::PresenceHeartbeat(e) => {
                // A heartbeat repeats the current status; without a row (its change was
                // parked) the user is at least there: online.
                sqlx::query(&format!(
                    "INSERT INTO {p} (user_id, status, status_message, last_seen_at, last_sequence)
                     VALUES ($1, 'online', NULL, $2, $3)
                     ON CONFLICT (user_id) DO UPDATE
                       SET last_seen_at = excluded.last_seen_at, last_sequence = excluded.last_sequence
                       WHERE {p}.last_sequence < excluded.last_sequence"
                ))
                .bind(e.user_id.to_string())
                .bind(micros(&e.at))
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// A user's presence as queries return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PresenceView {
    pub user_id: Uuid,
    /// The effective status: "online", "away" or "offline" ("offline" once the user
    /// has not been seen for [`OFFLINE_AFTER`], and for users never seen).
    pub status: String,
    pub status_message: Option<String>,
    /// When the user last set a status or sent a heartbeat (null if never).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// Those of `user_ids` whose presence `viewer` may see: the viewer, their
/// friends, and people who share a room with them, unless either of the two
/// blocks the other. Reads the friends and rooms models' tables.
pub async fn visible_to(
    pool: &AnyPool,
    viewer: Uuid,
    user_ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut visible = HashSet::new();
    let mut blocked = HashSet::new();
    for chunk in user_ids.chunks(IN_CHUNK) {
        let list = placeholders(2, padded_len(chunk.len()));
        for sql in [
            format!("SELECT friend_id FROM friends WHERE user_id = $1 AND friend_id IN ({list})"),
            format!(
                "SELECT DISTINCT theirs.user_id FROM room_members mine
                 JOIN room_members theirs ON theirs.room_id = mine.room_id
                 WHERE mine.user_id = $1 AND theirs.user_id IN ({list})"
            ),
        ] {
            for id in in_list_query(pool, &sql, viewer, chunk).await? {
                visible.insert(id);
            }
        }
        for sql in [
            format!(
                "SELECT blocked_id FROM blocks WHERE blocker_id = $1 AND blocked_id IN ({list})"
            ),
            format!(
                "SELECT blocker_id FROM blocks WHERE blocked_id = $1 AND blocker_id IN ({list})"
            ),
        ] {
            blocked.extend(in_list_query(pool, &sql, viewer, chunk).await?);
        }
    }
    visible.retain(|id| !blocked.contains(id));
    if user_ids.contains(&viewer) {
        visible.insert(viewer);
    }
    Ok(visible)
}

/// Runs a query of one text column with `$1` = `viewer` and `$2...` = `ids`
/// (padded), and parses the column as ids.
async fn in_list_query(
    pool: &AnyPool,
    sql: &str,
    viewer: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut query = sqlx::query_scalar::<_, String>(sql).bind(viewer.to_string());
    for id in padded(ids) {
        query = query.bind(id.to_string());
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|id| parse_uuid(id))
        .collect()
}

/// The presence of `user_ids` as of `now`, in the order asked (each user once).
pub async fn presence_of(
    pool: &AnyPool,
    user_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<PresenceView>, sqlx::Error> {
    let mut ids = Vec::with_capacity(user_ids.len());
    for id in user_ids {
        if !ids.contains(id) {
            ids.push(*id);
        }
    }
    let mut stored: HashMap<Uuid, (String, Option<String>, DateTime<Utc>)> =
        HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IN_CHUNK) {
        let sql = format!(
            "SELECT user_id, status, status_message, last_seen_at FROM presence WHERE user_id IN ({})",
            placeholders(1, padded_len(chunk.len()))
        );
        let mut query = sqlx::query(&sql);
        for id in padded(chunk) {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(pool).await? {
            stored.insert(
                parse_uuid(&row.try_get::<String, _>("user_id")?)?,
                (
                    row.try_get("status")?,
                    row.try_get("status_message")?,
                    from_micros(row.try_get("last_seen_at")?),
                ),
            );
        }
    }
    Ok(ids
        .into_iter()
        .map(|user_id| match stored.remove(&user_id) {
            Some((status, status_message, last_seen_at)) => PresenceView {
                user_id,
                status: if last_seen_at + OFFLINE_AFTER < now {
                    "offline".to_string()
                } else {
                    status
                },
                status_message,
                last_seen_at: Some(last_seen_at),
            },
            None => PresenceView {
                user_id,
                status: "offline".to_string(),
                status_message: None,
                last_seen_at: None,
            },
        })
        .collect())
}
