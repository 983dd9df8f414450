//! Friends: friendships (stored in both directions), pending friend requests and
//! blocks (directional), from the `friendship` aggregate of each pair of users.
//!
//! A block ends the pair's friendship and pending request without separate events
//! (the domain's rule, applied here too). Each pair's stream remembers the last
//! sequence applied; an event at or below it changes nothing.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parley_domain::friendship::FriendshipEvent;
use parley_domain::ids::friendship_id;
use parley_event_log::EventEnvelope;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::parse_uuid;
use super::Model;
use crate::projection::{decode, ApplyError, Projection};
use crate::store::{from_micros, micros};

/// The friends read model; `suffix` names a second set of tables for rebuilds.
pub struct Friends {
    streams: String,
    friends: String,
    requests: String,
    blocks: String,
    suffix: String,
}

impl Model for Friends {
    const NAME: &'static str = "friends";

    fn with_suffix(suffix: &str) -> Self {
        Self {
            streams: format!("friendship_streams{suffix}"),
            friends: format!("friends{suffix}"),
            requests: format!("friend_requests{suffix}"),
            blocks: format!("blocks{suffix}"),
            suffix: suffix.to_string(),
        }
    }
}

impl Friends {
    /// Marks the pair's stream as applied up to `sequence`; false when the event was
    /// applied before (a replay or a duplicate delivery).
    async fn advance(
        &self,
        conn: &mut AnyConnection,
        friendship_id: Uuid,
        sequence: i64,
    ) -> Result<bool, sqlx::Error> {
        let s = &self.streams;
        let done = sqlx::query(&format!(
            "INSERT INTO {s} (friendship_id, last_sequence) VALUES ($1, $2)
             ON CONFLICT (friendship_id) DO UPDATE SET last_sequence = excluded.last_sequence
               WHERE {s}.last_sequence < excluded.last_sequence"
        ))
        .bind(friendship_id.to_string())
        .bind(sequence)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn unfriend(
        &self,
        conn: &mut AnyConnection,
        a: Uuid,
        b: Uuid,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $3 AND friend_id = $4)",
            self.friends
        ))
        .bind(a.to_string())
        .bind(b.to_string())
        .bind(b.to_string())
        .bind(a.to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn drop_request(
        &self,
        conn: &mut AnyConnection,
        request_id: Uuid,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE request_id = $1",
            self.requests
        ))
        .bind(request_id.to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for Friends {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(&["friendship"])
    }

    fn schema(&self) -> Vec<String> {
        let (st, f, r, b, s) = (
            &self.streams,
            &self.friends,
            &self.requests,
            &self.blocks,
            &self.suffix,
        );
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {st} (
                    friendship_id TEXT   PRIMARY KEY,
                    last_sequence BIGINT NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {f} (
                    user_id   TEXT   NOT NULL,
                    friend_id TEXT   NOT NULL,
                    since     BIGINT NOT NULL,
                    PRIMARY KEY (user_id, friend_id)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {r} (
                    request_id   TEXT   PRIMARY KEY,
                    from_user_id TEXT   NOT NULL,
                    to_user_id   TEXT   NOT NULL,
                    sent_at      BIGINT NOT NULL
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS friend_requests_from{s} ON {r} (from_user_id)"),
            format!("CREATE INDEX IF NOT EXISTS friend_requests_to{s} ON {r} (to_user_id)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {b} (
                    blocker_id TEXT   NOT NULL,
                    blocked_id TEXT   NOT NULL,
                    since      BIGINT NOT NULL,
                    PRIMARY KEY (blocker_id, blocked_id)
                )"
            ),
            // Who blocks a user, for typing indicators (see the read API's
            // WebSocket).
            format!("CREATE INDEX IF NOT EXISTS blocks_blocked{s} ON {b} (blocked_id)"),
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        if !self.consumes(&event.aggregate_type) {
            return Ok(());
        }
        let decoded: FriendshipEvent = decode(event)?;
        if !self
            .advance(conn, event.aggregate_id, event.sequence)
            .await?
        {
            return Ok(());
        }
        let (f, r, b) = (&self.friends, &self.requests, &self.blocks);
        match decoded {
            FriendshipEvent::FriendRequestSent(e) => {
                // One pending request per pair, under the pair's id.
                sqlx::query(&format!(
                    "INSERT INTO {r} (request_id, from_user_id, to_user_id, sent_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (request_id) DO UPDATE
                       SET from_user_id = excluded.from_user_id, to_user_id = excluded.to_user_id, sent_at = excluded.sent_at"
                ))
                .bind(e.request_id.to_string())
                .bind(e.from_user_id.to_string())
                .bind(e.to_user_id.to_string())
                .bind(micros(&e.at))
                .execute(&mut *conn)
                .await?;
            }
            FriendshipEvent::FriendRequestAccepted(e) => {
                self.drop_request(conn, e.request_id).await?;
                for (user, friend) in [
                    (e.from_user_id, e.to_user_id),
                    (e.to_user_id, e.from_user_id),
                ] {
                    sqlx::query(&format!(
                        "INSERT INTO {f} (user_id, friend_id, since) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id, friend_id) DO NOTHING"
                    ))
                    .bind(user.to_string())
                    .bind(friend.to_string())
                    .bind(micros(&e.at))
                    .execute(&mut *conn)
                    .await?;
                }
            }
            FriendshipEvent::FriendRequestDeclined(e) => {
                self.drop_request(conn, e.request_id).await?
            }
            FriendshipEvent::FriendRequestCancelled(e) => {
                self.drop_request(conn, e.request_id).await?
            }
            FriendshipEvent::FriendRemoved(e) => {
                self.unfriend(conn, e.user_id, e.friend_id).await?
            }
            FriendshipEvent::UserBlocked(e) => {
                self.unfriend(conn, e.blocker_id, e.blocked_id).await?;
                self.drop_request(conn, friendship_id(e.blocker_id, e.blocked_id))
                    .await?;
                sqlx::query(&format!(
                    "INSERT INTO {b} (blocker_id, blocked_id, since) VALUES ($1, $2, $3)
                     ON CONFLICT (blocker_id, blocked_id) DO NOTHING"
                ))
                .bind(e.blocker_id.to_string())
                .bind(e.blocked_id.to_string())
                .bind(micros(&e.at))
                .execute(&mut *conn)
                .await?;
            }
            FriendshipEvent::UserUnblocked(e) => {
                sqlx::query(&format!(
                    "DELETE FROM {b} WHERE blocker_id = $1 AND blocked_id = $2"
                ))
                .bind(e.blocker_id.to_string())
                .bind(e.blocked_id.to_string())
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// A friend of the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FriendView {
    pub user_id: Uuid,
    /// When the friendship began (the request was accepted).
    pub since: DateTime<Utc>,
}

/// A pending friend request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FriendRequestView {
    /// The pair's friendship id (what accept/decline/cancel address).
    pub request_id: Uuid,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub sent_at: DateTime<Utc>,
}

/// A user the caller blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BlockView {
    pub user_id: Uuid,
    pub since: DateTime<Utc>,
}

/// Which of a user's pending requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Sent to the user.
    Incoming,
    /// Sent by the user.
    Outgoing,
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "incoming" => Ok(Self::Incoming),
            "outgoing" => Ok(Self::Outgoing),
            other => Err(format!(
                "direction must be incoming or outgoing, not {other:?}"
            )),
        }
    }
}

/// The user's friends, newest friendship first.
pub async fn friends_of(pool: &AnyPool, user_id: Uuid) -> Result<Vec<FriendView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT friend_id, since FROM friends WHERE user_id = $1 ORDER BY since DESC, friend_id",
    )
    .bind(user_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FriendView {
                user_id: parse_uuid(&r.try_get::<String, _>("friend_id")?)?,
                since: from_micros(r.try_get("since")?),
            })
        })
        .collect()
}

/// The user's pending requests in one direction, newest first.
pub async fn requests_of(
    pool: &AnyPool,
    user_id: Uuid,
    direction: Direction,
) -> Result<Vec<FriendRequestView>, sqlx::Error> {
    let column = match direction {
        Direction::Incoming => "to_user_id",
        Direction::Outgoing => "from_user_id",
    };
    let rows = sqlx::query(&format!(
        "SELECT request_id, from_user_id, to_user_id, sent_at FROM friend_requests
         WHERE {column} = $1 ORDER BY sent_at DESC, request_id"
    ))
    .bind(user_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FriendRequestView {
                request_id: parse_uuid(&r.try_get::<String, _>("request_id")?)?,
                from_user_id: parse_uuid(&r.try_get::<String, _>("from_user_id")?)?,
                to_user_id: parse_uuid(&r.try_get::<String, _>("to_user_id")?)?,
                sent_at: from_micros(r.try_get("sent_at")?),
            })
        })
        .collect()
}

/// The users `user_id` blocks, newest block first.
pub async fn blocks_of(pool: &AnyPool, user_id: Uuid) -> Result<Vec<BlockView>, sqlx::Error> {
    let rows = sqlx::query("SELECT blocked_id, since FROM blocks WHERE blocker_id = $1 ORDER BY since DESC, blocked_id")
        .bind(user_id.to_string())
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(BlockView {
                user_id: parse_uuid(&r.try_get::<String, _>("blocked_id")?)?,
                since: from_micros(r.try_get("since")?),
            })
        })
        .collect()
}

/// The users `user_id` blocks and those who block `user_id`.
pub async fn blocked_either_way(pool: &AnyPool, user_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT blocked_id AS other FROM blocks WHERE blocker_id = $1
         UNION SELECT blocker_id AS other FROM blocks WHERE blocked_id = $2",
    )
    .bind(user_id.to_string())
    .bind(user_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| parse_uuid(&r.try_get::<String, _>("other")?))
        .collect()
}

/// Whether `a` blocks `b` or `b` blocks `a`.
pub async fn is_blocked_either_way(pool: &AnyPool, a: Uuid, b: Uuid) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM blocks
         WHERE (blocker_id = $1 AND blocked_id = $2) OR (blocker_id = $3 AND blocked_id = $4)",
    )
    .bind(a.to_string())
    .bind(b.to_string())
    .bind(b.to_string())
    .bind(a.to_string())
    .fetch_one(pool)
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}
