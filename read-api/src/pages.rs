//! What the read API answers, typed: the handlers return these and the OpenAPI
//! document describes these, so the two cannot drift. The rows are the read
//! models' own views.

use chrono::{DateTime, Utc};
use parley_projections::models::{friends, history, presence, rooms, users};
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// `GET /v1/rooms`: the caller's rooms, most recent activity first.
#[derive(Serialize, ToSchema)]
pub struct RoomsPage {
    pub rooms: Vec<rooms::RoomSummary>,
}

/// A member of a room, with the name they go by.
#[derive(Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
    /// "owner", "admin" or "member".
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

/// `GET /v1/rooms/{room_id}`: a room and its members, in the order they joined.
#[derive(Serialize, ToSchema)]
pub struct RoomPage {
    pub room_id: Uuid,
    /// Null for direct rooms.
    pub name: Option<String>,
    pub topic: Option<String>,
    /// "public" or "private".
    pub visibility: String,
    pub is_direct: bool,
    pub created_at: DateTime<Utc>,
    pub member_count: i64,
    pub members: Vec<MemberView>,
}

impl RoomPage {
    /// The room with each member's name from `names` (absent: null).
    pub fn new(room: rooms::RoomDetails, names: &HashMap<Uuid, users::UserView>) -> Self {
        let members = room
            .members
            .into_iter()
            .map(|m| MemberView {
                username: names.get(&m.user_id).map(|u| u.username.clone()),
                display_name: names.get(&m.user_id).map(|u| u.display_name.clone()),
                user_id: m.user_id,
                role: m.role,
                joined_at: m.joined_at,
            })
            .collect();
        Self {
            room_id: room.room_id,
            name: room.name,
            topic: room.topic,
            visibility: room.visibility,
            is_direct: room.is_direct,
            created_at: room.created_at,
            member_count: room.member_count,
            members,
        }
    }
}

/// `GET /v1/rooms/{room_id}/messages`: one page of history (the model's page).
pub type HistoryPage = history::HistoryPage;

/// A row with the name of the user it is about (absent when the users model
/// does not know them yet).
#[derive(Serialize, ToSchema)]
pub struct Named<T> {
    #[serde(flatten)]
    pub row: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// Each of `rows` with the name of the user `about` it is.
pub fn with_names<T>(
    rows: Vec<T>,
    about: impl Fn(&T) -> Uuid,
    names: &HashMap<Uuid, users::UserView>,
) -> Vec<Named<T>> {
    rows.into_iter()
        .map(|row| {
            let user = names.get(&about(&row));
            Named {
                username: user.map(|u| u.username.clone()),
                display_name: user.map(|u| u.display_name.clone()),
                row,
            }
        })
        .collect()
}

/// `GET /v1/friends`.
#[derive(Serialize, ToSchema)]
pub struct FriendsPage {
    pub friends: Vec<Named<friends::FriendView>>,
}

/// `GET /v1/friend-requests`: each request with the other user's name.
#[derive(Serialize, ToSchema)]
pub struct FriendRequestsPage {
    pub requests: Vec<Named<friends::FriendRequestView>>,
}

/// `GET /v1/blocks`.
#[derive(Serialize, ToSchema)]
pub struct BlocksPage {
    pub blocks: Vec<friends::BlockView>,
}

/// `GET /v1/presence`.
#[derive(Serialize, ToSchema)]
pub struct PresencePage {
    pub presence: Vec<presence::PresenceView>,
}
