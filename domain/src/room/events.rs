//! The events of the `room` aggregate.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{event_enum, examples, Example};
use crate::values::{Role, RoomName, Topic, Visibility};

/// A group room was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoomCreated {
    pub room_id: Uuid,
    pub name: RoomName,
    pub topic: Option<Topic>,
    pub visibility: Visibility,
    pub creator_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// The direct room of two users was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DirectRoomCreated {
    pub room_id: Uuid,
    /// The two users, sorted.
    pub user_ids: [Uuid; 2],
    pub created_at: DateTime<Utc>,
}

/// A user was invited into a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberInvited {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub invited_by: Uuid,
    pub at: DateTime<Utc>,
}

/// A user became a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberJoined {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
    pub at: DateTime<Utc>,
}

/// A member left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberLeft {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A member was removed by a moderator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberKicked {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub kicked_by: Uuid,
    pub at: DateTime<Utc>,
}

/// A member's role was changed by the owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberRoleChanged {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
    pub changed_by: Uuid,
    pub at: DateTime<Utc>,
}

/// A user was banned by a moderator: removed if a member, and unable to join
/// or be invited until unbanned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberBanned {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub banned_by: Uuid,
    pub at: DateTime<Utc>,
}

/// A ban was lifted by a moderator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberUnbanned {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub unbanned_by: Uuid,
    pub at: DateTime<Utc>,
}

event_enum! {
    /// Events of the `room` aggregate.
    pub enum RoomEvent for "room";
    {
        RoomCreated = 1,
        DirectRoomCreated = 1,
        MemberInvited = 1,
        MemberJoined = 1,
        MemberLeft = 1,
        MemberKicked = 1,
        MemberRoleChanged = 1,
        MemberBanned = 1,
        MemberUnbanned = 1,
    }
}

impl Example for RoomCreated {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            name: RoomName::parse("general").unwrap(),
            topic: Some(Topic::parse("Anything goes").unwrap()),
            visibility: Visibility::Public,
            creator_id: examples::id(1),
            created_at: examples::at(),
        }
    }
}

impl Example for DirectRoomCreated {
    fn example() -> Self {
        Self {
            room_id: examples::id(11),
            user_ids: [examples::id(1), examples::id(2)],
            created_at: examples::at(),
        }
    }
}

impl Example for MemberInvited {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            invited_by: examples::id(1),
            at: examples::at(),
        }
    }
}

impl Example for MemberJoined {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            role: Role::Member,
            at: examples::at(),
        }
    }
}

impl Example for MemberLeft {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            at: examples::at(),
        }
    }
}

impl Example for MemberKicked {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            kicked_by: examples::id(1),
            at: examples::at(),
        }
    }
}

impl Example for MemberRoleChanged {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            role: Role::Admin,
            changed_by: examples::id(1),
            at: examples::at(),
        }
    }
}

impl Example for MemberBanned {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            banned_by: examples::id(1),
            at: examples::at(),
        }
    }
}

impl Example for MemberUnbanned {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            unbanned_by: examples::id(1),
            at: examples::at(),
        }
    }
}
