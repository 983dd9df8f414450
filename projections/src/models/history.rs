//! History: each room's messages with edits, redactions (body gone, tombstone
//! kept), reactions and reply references, paged by cursor both ways.
//!
//! Every row remembers the last sequence of its message aggregate that was applied;
//! an event at or below it changes nothing, so replays and duplicate deliveries
//! are harmless.

use std::collections::HashMap;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parley_domain::message::{MessageEvent, MessageSent};
use parley_event_log::EventEnvelope;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::parse_uuid;
use super::Model;
use crate::projection::{
    advance, apply_in_runs, decode, padded, padded_len, value_rows, ApplyError, OwnSequences,
    Projection, SentRuns,
};
use crate::store::{from_micros, micros};

/// Largest page a client may ask for.
pub const MAX_PAGE: i64 = 200;

/// The history read model; `suffix` names a second set of tables for rebuilds.
pub struct History {
    messages: String,
    reactions: String,
    suffix: String,
    /// Rebuild tables: created empty and filled once, in log order.
    fresh: bool,
}

impl Model for History {
    const NAME: &'static str = "history";

    fn with_suffix(suffix: &str) -> Self {
        Self {
            messages: format!("history_messages{suffix}"),
            reactions: format!("history_reactions{suffix}"),
            suffix: suffix.to_string(),
            fresh: false,
        }
    }
}

impl History {
    /// The model over fresh tables a rebuild fills from the start of the log.
    /// Its sent messages go in without an `ON CONFLICT` check: the log holds
    /// each `MessageSent` once (sequence 1 of its message), and a rebuild reads
    /// every event once, in order. (Were a send there twice, the batch would fail
    /// and be retried event by event, parking the second one: nothing is lost.)
    pub fn rebuilding(suffix: &str) -> Self {
        Self {
            fresh: true,
            ..Self::with_suffix(suffix)
        }
    }
}

impl History {
    async fn count_reaction(
        &self,
        conn: &mut AnyConnection,
        message_id: Uuid,
        delta: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE {} SET reaction_count = reaction_count + $1 WHERE message_id = $2",
            self.messages
        ))
        .bind(delta)
        .bind(message_id.to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl SentRuns for History {
    async fn insert_sent(
        &self,
        conn: &mut AnyConnection,
        run: &[(&EventEnvelope, MessageSent)],
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {} (message_id, room_id, position, last_sequence, sender_id, body, reply_to, sent_at, redacted)
             VALUES {}{}",
            self.messages,
            value_rows(run.len(), 8, ", 0"),
            if self.fresh {
                ""
            } else {
                " ON CONFLICT (message_id) DO NOTHING"
            }
        );
        let mut query = sqlx::query(&sql);
        for (event, e) in run {
            query = query
                .bind(e.message_id.to_string())
                .bind(e.room_id.to_string())
                .bind(event.position)
                .bind(event.sequence)
                .bind(e.sender_id.to_string())
                .bind(e.body.as_str().to_string())
                .bind(e.reply_to.map(|id| id.to_string()))
                .bind(micros(&e.sent_at));
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for History {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(&["message"])
    }

    /// By `message_id` only (the reactions' key starts with it); the room index
    /// serves the pages.
    fn applies_by_primary_key(&self) -> bool {
        true
    }

    /// Every message event it applies advances its row's `last_sequence`.
    fn own_sequences(&self) -> Option<OwnSequences<'_>> {
        Some(OwnSequences::messages(&self.messages))
    }

    fn schema(&self) -> Vec<String> {
        let (m, r, s) = (&self.messages, &self.reactions, &self.suffix);
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {m} (
                    message_id    TEXT   PRIMARY KEY,
                    room_id       TEXT   NOT NULL,
                    position      BIGINT NOT NULL,
                    last_sequence BIGINT NOT NULL,
                    sender_id     TEXT   NOT NULL,
                    body          TEXT,
                    reply_to      TEXT,
                    sent_at       BIGINT NOT NULL,
                    edited_at     BIGINT,
                    redacted      BIGINT NOT NULL DEFAULT 0,
                    -- Reactions held, so pages only look reactions up where there are some.
                    reaction_count BIGINT NOT NULL DEFAULT 0
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS history_messages_room{s} ON {m} (room_id, position)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {r} (
                    message_id TEXT NOT NULL,
                    emoji      TEXT NOT NULL,
                    user_id    TEXT NOT NULL,
                    PRIMARY KEY (message_id, emoji, user_id)
                )"
            ),
        ]
    }

    /// Runs of `MessageSent` (nearly all of a busy log) go in as one multi-row
    /// insert; everything else is applied one by one, in order.
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
        if !self.consumes(&event.aggregate_type) {
            return Ok(());
        }
        let decoded: MessageEvent = decode(event)?;
        let (m, r) = (&self.messages, &self.reactions);
        match decoded {
            MessageEvent::MessageSent(e) => self.insert_sent(conn, &[(event, e)]).await?,
            MessageEvent::MessageEdited(e) => {
                if advance(conn, m, "message_id", e.message_id, event.sequence).await? {
                    sqlx::query(&format!("UPDATE {m} SET body = $1, edited_at = $2 WHERE message_id = $3 AND redacted = 0"))
                        .bind(e.body.as_str().to_string())
                        .bind(micros(&e.edited_at))
                        .bind(e.message_id.to_string())
                        .execute(&mut *conn)
                        .await?;
                }
            }
            MessageEvent::MessageRedacted(e) => {
                if advance(conn, m, "message_id", e.message_id, event.sequence).await? {
                    sqlx::query(&format!(
                        "UPDATE {m} SET body = NULL, redacted = 1, reaction_count = 0 WHERE message_id = $1"
                    ))
                    .bind(e.message_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query(&format!("DELETE FROM {r} WHERE message_id = $1"))
                        .bind(e.message_id.to_string())
                        .execute(&mut *conn)
                        .await?;
                }
            }
            MessageEvent::ReactionAdded(e) => {
                if advance(conn, m, "message_id", e.message_id, event.sequence).await? {
                    let added = sqlx::query(&format!(
                        "INSERT INTO {r} (message_id, emoji, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
                    ))
                    .bind(e.message_id.to_string())
                    .bind(e.emoji.as_str().to_string())
                    .bind(e.user_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                    if added.rows_affected() == 1 {
                        self.count_reaction(conn, e.message_id, 1).await?;
                    }
                }
            }
            MessageEvent::ReactionRemoved(e) => {
                if advance(conn, m, "message_id", e.message_id, event.sequence).await? {
                    let removed = sqlx::query(&format!(
                        "DELETE FROM {r} WHERE message_id = $1 AND emoji = $2 AND user_id = $3"
                    ))
                    .bind(e.message_id.to_string())
                    .bind(e.emoji.as_str().to_string())
                    .bind(e.user_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                    if removed.rows_affected() == 1 {
                        self.count_reaction(conn, e.message_id, -1).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A reaction and how many members chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    /// Whether the caller is among them.
    pub me: bool,
}

/// A message as the history API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub sender_id: Uuid,
    /// Null once redacted.
    pub body: Option<String>,
    pub sent_at: chrono::DateTime<chrono::Utc>,
    pub edited_at: Option<chrono::DateTime<chrono::Utc>>,
    pub redacted: bool,
    pub reactions: Vec<ReactionCount>,
    pub reply_to: Option<Uuid>,
    /// The global log position of the send: the page order.
    pub position: i64,
    /// Members other than the sender whose devices received it (a read counts
    /// as received).
    pub delivered_count: i64,
    /// Members other than the sender whose read marker is at it or past it.
    pub read_count: i64,
}

/// One page of history, oldest first, with cursors for the pages around it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub messages: Vec<MessageView>,
    /// Cursor for the next older page (null at the oldest end).
    pub before: Option<String>,
    /// Cursor for the next newer page (null at the newest end).
    pub after: Option<String>,
}

/// Which page to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRequest {
    Newest,
    Before(i64),
    After(i64),
}

/// Encodes a page cursor (opaque to clients).
pub fn encode_cursor(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("p{position}"))
}

/// Decodes a page cursor; `None` when it is not one of ours.
pub fn decode_cursor(cursor: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let raw = std::str::from_utf8(&raw).ok()?;
    raw.strip_prefix('p')?.parse().ok()
}

/// Reads a page of a room's history for `viewer` (no membership check).
pub async fn page(
    pool: &AnyPool,
    room_id: Uuid,
    request: PageRequest,
    limit: i64,
    viewer: Uuid,
) -> Result<HistoryPage, sqlx::Error> {
    read_page(pool, room_id, request, limit, viewer, false).await
}

/// Reads a page for a member of the room, with its receipt counts, or `None`
/// when `viewer` is not one. The membership check (the rooms model's
/// `room_members`) rides in the page query, so the common case costs one round
/// trip for the page; only an empty page asks again.
pub async fn page_for_member(
    pool: &AnyPool,
    room_id: Uuid,
    request: PageRequest,
    limit: i64,
    viewer: Uuid,
) -> Result<Option<HistoryPage>, sqlx::Error> {
    let mut page = read_page(pool, room_id, request, limit, viewer, true).await?;
    if page.messages.is_empty() && !super::rooms::is_member(pool, room_id, viewer).await? {
        return Ok(None);
    }
    super::receipts::attach(pool, room_id, &mut page.messages).await?;
    Ok(Some(page))
}

async fn read_page(
    pool: &AnyPool,
    room_id: Uuid,
    request: PageRequest,
    limit: i64,
    viewer: Uuid,
    members_only: bool,
) -> Result<HistoryPage, sqlx::Error> {
    let limit = limit.clamp(1, MAX_PAGE);
    let columns = "message_id, room_id, position, sender_id, body, reply_to, sent_at, edited_at, redacted, reaction_count";
    // Placeholders first appear in ascending order (SQLite numbers them that way).
    let member = if members_only {
        " AND EXISTS (SELECT 1 FROM room_members WHERE room_id = $2 AND user_id = $3)"
    } else {
        ""
    };
    let next = if members_only { 4 } else { 2 };
    let (condition, order, bound) = match request {
        PageRequest::Newest => (String::new(), "DESC", None),
        PageRequest::Before(p) => (format!(" AND position < ${next}"), "DESC", Some(p)),
        PageRequest::After(p) => (format!(" AND position > ${next}"), "ASC", Some(p)),
    };
    let limit_at = next + usize::from(bound.is_some());
    let sql = format!(
        "SELECT {columns} FROM history_messages WHERE room_id = $1{member}{condition} ORDER BY position {order} LIMIT ${limit_at}"
    );
    let mut query = sqlx::query(&sql).bind(room_id.to_string());
    if members_only {
        query = query.bind(room_id.to_string()).bind(viewer.to_string());
    }
    if let Some(p) = bound {
        query = query.bind(p);
    }
    let rows = query.bind(limit + 1).fetch_all(pool).await?;
    let reacted: Vec<Uuid> = rows
        .iter()
        .take(limit as usize)
        .filter(|r| r.try_get::<i64, _>("reaction_count").unwrap_or(0) > 0)
        .map(|r| parse_uuid(&r.try_get::<String, _>("message_id")?))
        .collect::<Result<_, sqlx::Error>>()?;
    let more = rows.len() as i64 > limit;
    let mut messages = rows
        .iter()
        .take(limit as usize)
        .map(|r| {
            Ok(MessageView {
                message_id: parse_uuid(&r.try_get::<String, _>("message_id")?)?,
                room_id: parse_uuid(&r.try_get::<String, _>("room_id")?)?,
                sender_id: parse_uuid(&r.try_get::<String, _>("sender_id")?)?,
                body: r.try_get("body")?,
                sent_at: from_micros(r.try_get("sent_at")?),
                edited_at: r.try_get::<Option<i64>, _>("edited_at")?.map(from_micros),
                redacted: r.try_get::<i64, _>("redacted")? != 0,
                reactions: Vec::new(),
                reply_to: r
                    .try_get::<Option<String>, _>("reply_to")?
                    .map(|s| parse_uuid(&s))
                    .transpose()?,
                position: r.try_get("position")?,
                delivered_count: 0,
                read_count: 0,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    if !matches!(request, PageRequest::After(_)) {
        messages.reverse();
    }
    attach_reactions(pool, &mut messages, &reacted, viewer).await?;

    let oldest = messages.first().map(|m| m.position);
    let newest = messages.last().map(|m| m.position);
    let (before, after) = match request {
        PageRequest::Newest => (if more { oldest } else { None }, None),
        PageRequest::Before(_) => (if more { oldest } else { None }, newest),
        PageRequest::After(p) => (
            oldest.or(Some(p + 1)).filter(|_| !messages.is_empty()),
            if more { newest } else { None },
        ),
    };
    Ok(HistoryPage {
        messages,
        before: before.map(encode_cursor),
        after: after.map(encode_cursor),
    })
}

/// The body each of `ids` shows today: `None` for a redacted message; ids the
/// model does not hold are left out. Lets a reader that replays old events
/// (a stream resume) show no text a redaction or an edit has since replaced.
pub async fn current_bodies(
    pool: &AnyPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Option<String>>, sqlx::Error> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(256) {
        let placeholders: Vec<String> = (0..padded_len(chunk.len()))
            .map(|i| format!("${}", i + 1))
            .collect();
        let sql = format!(
            "SELECT message_id, body, redacted FROM history_messages WHERE message_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in padded(chunk) {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(pool).await? {
            let id = parse_uuid(&row.try_get::<String, _>("message_id")?)?;
            let redacted = row.try_get::<i64, _>("redacted")? != 0;
            let body: Option<String> = row.try_get("body")?;
            found.insert(id, body.filter(|_| !redacted));
        }
    }
    Ok(found)
}

/// Looks up the reactions of the messages in `reacted` (those with any).
async fn attach_reactions(
    pool: &AnyPool,
    messages: &mut [MessageView],
    reacted: &[Uuid],
    viewer: Uuid,
) -> Result<(), sqlx::Error> {
    if reacted.is_empty() {
        return Ok(());
    }
    // At most a page of messages, so within one padded list.
    let placeholders: Vec<String> = (0..padded_len(reacted.len()))
        .map(|i| format!("${}", i + 2))
        .collect();
    let sql = format!(
        "SELECT message_id, emoji, COUNT(*) AS n, MAX(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS me
         FROM history_reactions WHERE message_id IN ({}) GROUP BY message_id, emoji ORDER BY message_id, emoji",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(viewer.to_string());
    for id in padded(reacted) {
        query = query.bind(id.to_string());
    }
    for row in query.fetch_all(pool).await? {
        let id = parse_uuid(&row.try_get::<String, _>("message_id")?)?;
        if let Some(m) = messages.iter_mut().find(|m| m.message_id == id) {
            m.reactions.push(ReactionCount {
                emoji: row.try_get("emoji")?,
                count: row.try_get("n")?,
                me: row.try_get::<i64, _>("me")? != 0,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("nonsense!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x12")), None);
    }
}
