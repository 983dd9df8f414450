//! What each command answers, typed. A handler builds the answer (`RoomRef`);
//! the engine adds the receipt every command carries (`positions`,
//! `consistency_token`). Each answer and its documented receipt
//! (`RoomAccepted`, in the OpenAPI document) are made from one field list, so
//! the document and the answers cannot drift.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Fields every accepted command answers with.
#[derive(Serialize, ToSchema)]
pub struct CommandReceipt {
    /// Global positions of the events the command appended (empty if it changed nothing).
    pub positions: Vec<i64>,
    /// Present this to the read API (`X-Consistency-Token`) to read your own write.
    pub consistency_token: Option<String>,
}

macro_rules! answer {
    ($(#[$doc:meta])* $receipt:ident, $answer:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize)]
        pub struct $answer {
            $(pub $field: $ty,)*
        }

        $(#[$doc])*
        #[derive(Serialize, ToSchema)]
        pub struct $receipt {
            $(pub $field: $ty,)*
            /// Global positions of the events the command appended (empty if it changed nothing).
            pub positions: Vec<i64>,
            /// Present this to the read API (`X-Consistency-Token`) to read your own write.
            pub consistency_token: Option<String>,
        }
    };
}

answer!(/// A registered user, or the other user of a friend or block command.
    UserAccepted, UserRef { user_id: Uuid });
answer!(/// A room command's answer.
    RoomAccepted, RoomRef { room_id: Uuid });
answer!(/// A command on a member of a room (invite, kick, ban, unban, role).
    RoomMemberAccepted, RoomMemberRef { room_id: Uuid, user_id: Uuid });
answer!(/// A sent message: `sequence` and `position` are those of its `MessageSent` event.
    MessageAccepted, SentMessage { message_id: Uuid, room_id: Uuid, sequence: i64, position: i64 });
answer!(/// A command on a message.
    MessageRefAccepted, MessageRef { message_id: Uuid, room_id: Uuid });
answer!(/// A friend request command's answer.
    FriendRequestAccepted, FriendRequestRef { request_id: Uuid });
answer!(/// A call command's answer.
    CallAccepted, CallRef { call_id: Uuid, room_id: Uuid });
answer!(/// A presence update.
    PresenceAccepted, PresenceSet { user_id: Uuid, status: String });
