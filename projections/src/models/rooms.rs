//! Rooms: each room's metadata, members (with roles) and pending invites, plus what a
//! room list needs: the last message (with a short preview) and per-user unread
//! counts from read markers; the delivery markers receipts count with them
//! (queried in [`super::receipts`]); and the rooms' calls ([`super::calls`]).
//!
//! Everything that spans aggregates (a room's last message, a read marker's place)
//! is resolved when queried, not copied when applied, so the model ends the same
//! whatever the interleaving of different aggregates' events (only each
//! aggregate's own order matters, invariant 3). Each room, message and read marker
//! row remembers the last sequence of its stream that was applied; an event at or
//! below it changes nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parley_domain::message::{MessageEvent, MessageSent};
use parley_domain::read_marker::ReadMarkerEvent;
use parley_domain::room::RoomEvent;
use parley_event_log::EventEnvelope;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::parse_uuid;
use super::Model;
use crate::projection::{
    advance, apply_in_runs, decode, value_rows, ApplyError, OwnSequences, Projection, SentRuns,
};
use crate::store::{from_micros, micros};

/// How many characters of the last message a room list shows.
pub const PREVIEW_CHARS: usize = 100;

/// The rooms read model; `suffix` names a second set of tables for rebuilds.
pub struct Rooms {
    rooms: String,
    members: String,
    invites: String,
    messages: String,
    markers: String,
    deliveries: String,
    calls: String,
    call_members: String,
    suffix: String,
}

impl Model for Rooms {
    const NAME: &'static str = "rooms";

    fn with_suffix(suffix: &str) -> Self {
        Self {
            rooms: format!("rooms{suffix}"),
            members: format!("room_members{suffix}"),
            invites: format!("room_invites{suffix}"),
            messages: format!("room_messages{suffix}"),
            markers: format!("room_read_markers{suffix}"),
            deliveries: format!("room_delivery_markers{suffix}"),
            calls: format!("room_calls{suffix}"),
            call_members: format!("room_call_members{suffix}"),
            suffix: suffix.to_string(),
        }
    }
}

impl Rooms {
    async fn apply_room(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        let decoded: RoomEvent = decode(event)?;
        let (rooms, members, invites) = (&self.rooms, &self.members, &self.invites);
        let insert_room = format!(
            "INSERT INTO {rooms} (room_id, name, topic, visibility, is_direct, created_at, last_sequence)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (room_id) DO NOTHING"
        );
        match decoded {
            RoomEvent::RoomCreated(e) => {
                sqlx::query(&insert_room)
                    .bind(e.room_id.to_string())
                    .bind(Some(e.name.as_str().to_string()))
                    .bind(e.topic.map(|t| t.as_str().to_string()))
                    .bind(e.visibility.as_str())
                    .bind(0_i64)
                    .bind(micros(&e.created_at))
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            RoomEvent::DirectRoomCreated(e) => {
                sqlx::query(&insert_room)
                    .bind(e.room_id.to_string())
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind("private")
                    .bind(1_i64)
                    .bind(micros(&e.created_at))
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            _ => {}
        }
        if !advance(conn, rooms, "room_id", event.aggregate_id, event.sequence).await? {
            return Ok(());
        }
        match decoded {
            RoomEvent::RoomCreated(_) | RoomEvent::DirectRoomCreated(_) => {}
            RoomEvent::MemberInvited(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {invites} (room_id, user_id, invited_by, invited_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (room_id, user_id) DO UPDATE SET invited_by = excluded.invited_by, invited_at = excluded.invited_at"
                ))
                .bind(e.room_id.to_string())
                .bind(e.user_id.to_string())
                .bind(e.invited_by.to_string())
                .bind(micros(&e.at))
                .execute(&mut *conn)
                .await?;
            }
            RoomEvent::MemberJoined(e) => {
                sqlx::query(&format!(
                    "DELETE FROM {invites} WHERE room_id = $1 AND user_id = $2"
                ))
                .bind(e.room_id.to_string())
                .bind(e.user_id.to_string())
                .execute(&mut *conn)
                .await?;
                sqlx::query(&format!(
                    "INSERT INTO {members} (room_id, user_id, role, joined_at, joined_position) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (room_id, user_id) DO UPDATE
                       SET role = excluded.role, joined_at = excluded.joined_at, joined_position = excluded.joined_position"
                ))
                .bind(e.room_id.to_string())
                .bind(e.user_id.to_string())
                .bind(e.role.as_str())
                .bind(micros(&e.at))
                .bind(event.position)
                .execute(&mut *conn)
                .await?;
            }
            RoomEvent::MemberLeft(parley_domain::room::MemberLeft {
                room_id, user_id, ..
            })
            | RoomEvent::MemberKicked(parley_domain::room::MemberKicked {
                room_id, user_id, ..
            }) => {
                sqlx::query(&format!(
                    "DELETE FROM {members} WHERE room_id = $1 AND user_id = $2"
                ))
                .bind(room_id.to_string())
                .bind(user_id.to_string())
                .execute(&mut *conn)
                .await?;
            }
            RoomEvent::MemberBanned(e) => {
                // Out of the room, and any pending invite withdrawn.
                for table in [members, invites] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE room_id = $1 AND user_id = $2"
                    ))
                    .bind(e.room_id.to_string())
                    .bind(e.user_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
            }
            // The rooms model keeps no ban list: lifting one changes nothing here.
            RoomEvent::MemberUnbanned(_) => {}
            RoomEvent::MemberRoleChanged(e) => {
                sqlx::query(&format!(
                    "UPDATE {members} SET role = $1 WHERE room_id = $2 AND user_id = $3"
                ))
                .bind(e.role.as_str())
                .bind(e.room_id.to_string())
                .bind(e.user_id.to_string())
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    async fn apply_message(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        let decoded: MessageEvent = decode(event)?;
        let m = &self.messages;
        match decoded {
            MessageEvent::MessageSent(e) => self.insert_sent(conn, &[(event, e)]).await?,
            MessageEvent::MessageEdited(e) => {
                if advance(conn, m, "message_id", e.message_id, event.sequence).await? {
                    sqlx::query(&format!(
                        "UPDATE {m} SET preview = $1 WHERE message_id = $2 AND redacted = 0"
                    ))
                    .bind(preview(e.body.as_str()))
                    .bind(e.message_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
            }
            MessageEvent::MessageRedacted(e) => {
                if advance(conn, m, "message_id", e.message_id, event.sequence).await? {
                    sqlx::query(&format!(
                        "UPDATE {m} SET preview = NULL, redacted = 1 WHERE message_id = $1"
                    ))
                    .bind(e.message_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
            }
            // Reactions change nothing a room list shows, but the row still
            // records that they were applied (its sequences are the model's own).
            MessageEvent::ReactionAdded(e) => {
                advance(conn, m, "message_id", e.message_id, event.sequence).await?;
            }
            MessageEvent::ReactionRemoved(e) => {
                advance(conn, m, "message_id", e.message_id, event.sequence).await?;
            }
        }
        Ok(())
    }

    async fn apply_read_marker(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        let decoded: ReadMarkerEvent = decode(event)?;
        // The message's place is looked up when counting: it may not be here yet.
        let (table, e) = match &decoded {
            ReadMarkerEvent::ReadMarkerMoved(e) => {
                (&self.markers, (e.room_id, e.user_id, e.message_id))
            }
            ReadMarkerEvent::DeliveryMarkerMoved(e) => {
                (&self.deliveries, (e.room_id, e.user_id, e.message_id))
            }
        };
        let (room_id, user_id, message_id) = e;
        sqlx::query(&format!(
            "INSERT INTO {table} (room_id, user_id, message_id, last_sequence) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id, user_id) DO UPDATE
               SET message_id = excluded.message_id, last_sequence = excluded.last_sequence
               WHERE {table}.last_sequence < excluded.last_sequence"
        ))
        .bind(room_id.to_string())
        .bind(user_id.to_string())
        .bind(message_id.to_string())
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The first [`PREVIEW_CHARS`] characters of a message body.
pub fn preview(body: &str) -> String {
    body.chars().take(PREVIEW_CHARS).collect()
}

#[async_trait]
impl Projection for Rooms {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(&["room", "message", "read_marker", "call"])
    }

    /// Every message event it applies advances its message row's
    /// `last_sequence` (reactions too, though a room list does not show them).
    fn own_sequences(&self) -> Option<OwnSequences<'_>> {
        Some(OwnSequences::messages(&self.messages))
    }

    fn schema(&self) -> Vec<String> {
        let (r, mb, i, m, s) = (
            &self.rooms,
            &self.members,
            &self.invites,
            &self.messages,
            &self.suffix,
        );
        // Read and delivery markers have one shape: a user's last message.
        let marker_table = |k: &str| {
            format!(
                "CREATE TABLE IF NOT EXISTS {k} (
                    room_id       TEXT   NOT NULL,
                    user_id       TEXT   NOT NULL,
                    message_id    TEXT   NOT NULL,
                    last_sequence BIGINT NOT NULL,
                    PRIMARY KEY (room_id, user_id)
                )"
            )
        };
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {r} (
                    room_id       TEXT   PRIMARY KEY,
                    name          TEXT,
                    topic         TEXT,
                    visibility    TEXT   NOT NULL,
                    is_direct     BIGINT NOT NULL,
                    created_at    BIGINT NOT NULL,
                    last_sequence BIGINT NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {mb} (
                    room_id         TEXT   NOT NULL,
                    user_id         TEXT   NOT NULL,
                    role            TEXT   NOT NULL,
                    joined_at       BIGINT NOT NULL,
                    joined_position BIGINT NOT NULL,
                    PRIMARY KEY (room_id, user_id)
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS room_members_user{s} ON {mb} (user_id)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {i} (
                    room_id    TEXT   NOT NULL,
                    user_id    TEXT   NOT NULL,
                    invited_by TEXT   NOT NULL,
                    invited_at BIGINT NOT NULL,
                    PRIMARY KEY (room_id, user_id)
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS room_invites_user{s} ON {i} (user_id)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {m} (
                    message_id    TEXT   PRIMARY KEY,
                    room_id       TEXT   NOT NULL,
                    position      BIGINT NOT NULL,
                    sender_id     TEXT   NOT NULL,
                    sent_at       BIGINT NOT NULL,
                    preview       TEXT,
                    redacted      BIGINT NOT NULL DEFAULT 0,
                    last_sequence BIGINT NOT NULL
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS room_messages_room{s} ON {m} (room_id, position)"),
            // What a room list's unread count reads, so that it counts index
            // entries (an index-only scan) rather than fetching each message
            // row: 2,278 buffers for a list of 10 rooms of 200 messages
            // without it, 279 with it.
            format!(
                "CREATE INDEX IF NOT EXISTS room_messages_unread{s} ON {m} (room_id, position, sender_id) WHERE redacted = 0"
            ),
            marker_table(&self.markers),
            marker_table(&self.deliveries),
        ]
        .into_iter()
        .chain(super::calls::schema(&self.calls, &self.call_members, s))
        .collect()
    }

    /// Runs of `MessageSent` go in as one multi-row insert.
    async fn apply_many(
        &self,
        conn: &mut AnyConnection,
        events: &[EventEnvelope],
    ) -> Result<Vec<Option<String>>, sqlx::Error> {
        apply_in_runs(self, conn, events).await
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        match event.aggregate_type.as_str() {
            "room" => self.apply_room(conn, event).await,
            "message" => self.apply_message(conn, event).await,
            "read_marker" => self.apply_read_marker(conn, event).await,
            "call" => super::calls::apply(&self.calls, &self.call_members, conn, event).await,
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl SentRuns for Rooms {
    async fn insert_sent(
        &self,
        conn: &mut AnyConnection,
        run: &[(&EventEnvelope, MessageSent)],
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {} (message_id, room_id, position, sender_id, sent_at, preview, last_sequence, redacted)
             VALUES {} ON CONFLICT (message_id) DO NOTHING",
            self.messages,
            value_rows(run.len(), 7, ", 0")
        );
        let mut query = sqlx::query(&sql);
        for (event, e) in run {
            query = query
                .bind(e.message_id.to_string())
                .bind(e.room_id.to_string())
                .bind(event.position)
                .bind(e.sender_id.to_string())
                .bind(micros(&e.sent_at))
                .bind(preview(e.body.as_str()))
                .bind(event.sequence);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

/// The newest message of a room, as a room list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LastMessage {
    pub message_id: Uuid,
    pub sender_id: Uuid,
    /// The first 100 characters of the body (as edited); null once redacted.
    pub preview: Option<String>,
    pub sent_at: DateTime<Utc>,
    pub redacted: bool,
}

/// A room in the caller's room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoomSummary {
    pub room_id: Uuid,
    /// Null for direct rooms.
    pub name: Option<String>,
    pub topic: Option<String>,
    /// "public" or "private" (direct rooms are private).
    pub visibility: String,
    pub is_direct: bool,
    pub member_count: i64,
    pub last_message: Option<LastMessage>,
    /// Messages after the caller's read marker (and after they joined) that others
    /// sent and that are not redacted.
    pub unread_count: i64,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    /// "owner", "admin" or "member".
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

/// A room with its members (in the order they joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoomDetails {
    pub room_id: Uuid,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub visibility: String,
    pub is_direct: bool,
    pub created_at: DateTime<Utc>,
    pub member_count: i64,
    pub members: Vec<Member>,
}

/// A pending invite of a user into a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InviteView {
    pub room_id: Uuid,
    pub invited_by: Uuid,
    pub invited_at: DateTime<Utc>,
}

/// The user's rooms, most recent activity first (the last message, or when the room
/// was created or the user joined, whichever is latest).
pub async fn rooms_of(pool: &AnyPool, user_id: Uuid) -> Result<Vec<RoomSummary>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.room_id, r.name, r.topic, r.visibility, r.is_direct,
                (SELECT COUNT(*) FROM room_members c WHERE c.room_id = r.room_id) AS member_count,
                l.message_id AS last_id, l.sender_id AS last_sender_id, l.preview AS last_preview,
                l.redacted AS last_redacted, l.sent_at AS last_sent_at,
                (SELECT COUNT(*) FROM room_messages u
                  WHERE u.room_id = r.room_id AND u.sender_id <> $1 AND u.redacted = 0
                    AND u.position > m.joined_position
                    AND u.position > COALESCE(
                          (SELECT p.position FROM room_read_markers k
                             JOIN room_messages p ON p.message_id = k.message_id
                            WHERE k.room_id = r.room_id AND k.user_id = $1), 0)) AS unread_count,
                CASE WHEN COALESCE(l.sent_at, r.created_at) > m.joined_at
                     THEN COALESCE(l.sent_at, r.created_at) ELSE m.joined_at END AS activity
           FROM room_members m
           JOIN rooms r ON r.room_id = m.room_id
           LEFT JOIN room_messages l ON l.message_id =
                (SELECT x.message_id FROM room_messages x WHERE x.room_id = r.room_id ORDER BY x.position DESC LIMIT 1)
          WHERE m.user_id = $1
          ORDER BY activity DESC, r.room_id",
    )
    .bind(user_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let last_message = match r.try_get::<Option<String>, _>("last_id")? {
                Some(id) => Some(LastMessage {
                    message_id: parse_uuid(&id)?,
                    sender_id: parse_uuid(&r.try_get::<String, _>("last_sender_id")?)?,
                    preview: r.try_get("last_preview")?,
                    sent_at: from_micros(r.try_get("last_sent_at")?),
                    redacted: r.try_get::<i64, _>("last_redacted")? != 0,
                }),
                None => None,
            };
            Ok(RoomSummary {
                room_id: parse_uuid(&r.try_get::<String, _>("room_id")?)?,
                name: r.try_get("name")?,
                topic: r.try_get("topic")?,
                visibility: r.try_get("visibility")?,
                is_direct: r.try_get::<i64, _>("is_direct")? != 0,
                member_count: r.try_get("member_count")?,
                last_message,
                unread_count: r.try_get("unread_count")?,
            })
        })
        .collect()
}

/// A room and its members; `None` if there is no such room.
pub async fn room(pool: &AnyPool, room_id: Uuid) -> Result<Option<RoomDetails>, sqlx::Error> {
    let Some(row) = sqlx::query("SELECT room_id, name, topic, visibility, is_direct, created_at FROM rooms WHERE room_id = $1")
        .bind(room_id.to_string())
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query(
        "SELECT user_id, role, joined_at FROM room_members WHERE room_id = $1 ORDER BY joined_position, user_id",
    )
    .bind(room_id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(Member {
            user_id: parse_uuid(&r.try_get::<String, _>("user_id")?)?,
            role: r.try_get("role")?,
            joined_at: from_micros(r.try_get("joined_at")?),
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(RoomDetails {
        room_id: parse_uuid(&row.try_get::<String, _>("room_id")?)?,
        name: row.try_get("name")?,
        topic: row.try_get("topic")?,
        visibility: row.try_get("visibility")?,
        is_direct: row.try_get::<i64, _>("is_direct")? != 0,
        created_at: from_micros(row.try_get("created_at")?),
        member_count: members.len() as i64,
        members,
    }))
}

/// Whether the user is a member of the room now.
pub async fn is_member(pool: &AnyPool, room_id: Uuid, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let row =
        sqlx::query("SELECT COUNT(*) AS n FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id.to_string())
            .bind(user_id.to_string())
            .fetch_one(pool)
            .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// The ids of the user's rooms, in the order they joined them.
pub async fn room_ids_of(pool: &AnyPool, user_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query(
        "SELECT room_id FROM room_members WHERE user_id = $1 ORDER BY joined_position, room_id",
    )
    .bind(user_id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| parse_uuid(&r.try_get::<String, _>("room_id")?))
    .collect()
}

/// The user's pending invites, newest first.
pub async fn invites_of(pool: &AnyPool, user_id: Uuid) -> Result<Vec<InviteView>, sqlx::Error> {
    sqlx::query("SELECT room_id, invited_by, invited_at FROM room_invites WHERE user_id = $1 ORDER BY invited_at DESC, room_id")
        .bind(user_id.to_string())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(InviteView {
                room_id: parse_uuid(&r.try_get::<String, _>("room_id")?)?,
                invited_by: parse_uuid(&r.try_get::<String, _>("invited_by")?)?,
                invited_at: from_micros(r.try_get("invited_at")?),
            })
        })
        .collect()
}
