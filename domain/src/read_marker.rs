//! How far a user has read in a room, and how far their devices have received
//! (id = [`crate::ids::read_marker_id`]): the two markers behind receipts.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{event_enum, examples, Example};
use crate::error::DomainError;

/// A user's read marker in a room moved to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReadMarkerMoved {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub message_id: Uuid,
    pub at: DateTime<Utc>,
}

impl Example for ReadMarkerMoved {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            message_id: examples::id(20),
            at: examples::at(),
        }
    }
}

/// A user's devices received a room's messages up to a message. Clients say so
/// over the WebSocket (`delivered` frames), which records at most about one of
/// these per user and room per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryMarkerMoved {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub message_id: Uuid,
    pub at: DateTime<Utc>,
}

impl Example for DeliveryMarkerMoved {
    fn example() -> Self {
        Self {
            room_id: examples::id(10),
            user_id: examples::id(2),
            message_id: examples::id(20),
            at: examples::at(),
        }
    }
}

event_enum! {
    /// Events of the `read_marker` aggregate.
    pub enum ReadMarkerEvent for "read_marker";
    { ReadMarkerMoved = 1, DeliveryMarkerMoved = 1 }
}

/// Commands of the `read_marker` aggregate.
#[derive(Debug, Clone)]
pub enum ReadMarkerCommand {
    /// Move the marker to a message; membership and the message's room are looked up
    /// by the caller.
    MoveReadMarker {
        room_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        user_is_member: bool,
        message_in_room: bool,
        at: DateTime<Utc>,
    },
    /// Move the delivery marker to a message, checked like a read marker.
    MoveDeliveryMarker {
        room_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        user_is_member: bool,
        message_in_room: bool,
        at: DateTime<Utc>,
    },
}

/// A user's markers in a room: the last message they read, and the last one
/// their devices received.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadMarker {
    message_id: Option<Uuid>,
    #[serde(default)]
    delivered_id: Option<Uuid>,
}

impl ReadMarker {
    /// The last read message, if any.
    pub fn message_id(&self) -> Option<Uuid> {
        self.message_id
    }

    /// The last message the user's devices received, if any.
    pub fn delivered_id(&self) -> Option<Uuid> {
        self.delivered_id
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(&self, command: ReadMarkerCommand) -> Result<Vec<ReadMarkerEvent>, DomainError> {
        match command {
            ReadMarkerCommand::MoveReadMarker {
                room_id,
                user_id,
                message_id,
                user_is_member,
                message_in_room,
                at,
            } => {
                check(user_is_member, message_in_room)?;
                if self.message_id == Some(message_id) {
                    return Ok(vec![]);
                }
                Ok(vec![ReadMarkerMoved {
                    room_id,
                    user_id,
                    message_id,
                    at,
                }
                .into()])
            }
            ReadMarkerCommand::MoveDeliveryMarker {
                room_id,
                user_id,
                message_id,
                user_is_member,
                message_in_room,
                at,
            } => {
                check(user_is_member, message_in_room)?;
                // Read implies received: a message already read, or already
                // marked, records nothing (devices repeat these often).
                if self.delivered_id == Some(message_id) || self.message_id == Some(message_id) {
                    return Ok(vec![]);
                }
                Ok(vec![DeliveryMarkerMoved {
                    room_id,
                    user_id,
                    message_id,
                    at,
                }
                .into()])
            }
        }
    }

    fn evolve(&mut self, event: ReadMarkerEvent) {
        match event {
            ReadMarkerEvent::ReadMarkerMoved(e) => self.message_id = Some(e.message_id),
            ReadMarkerEvent::DeliveryMarkerMoved(e) => self.delivered_id = Some(e.message_id),
        }
    }
}

/// Both markers need a member and a message of the room.
fn check(user_is_member: bool, message_in_room: bool) -> Result<(), DomainError> {
    if !user_is_member {
        return Err(DomainError::forbidden("you are not a member of this room"));
    }
    if !message_in_room {
        return Err(DomainError::validation(
            "message_id",
            "no such message in this room",
        ));
    }
    Ok(())
}

impl_aggregate!(
    ReadMarker,
    "read_marker",
    ReadMarkerCommand,
    ReadMarkerEvent
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::examples::{at, id};
    use cqrs_es::test::TestFramework;

    fn move_to(message: u8, is_member: bool, in_room: bool) -> ReadMarkerCommand {
        ReadMarkerCommand::MoveReadMarker {
            room_id: id(10),
            user_id: id(2),
            message_id: id(message),
            user_is_member: is_member,
            message_in_room: in_room,
            at: at(),
        }
    }

    fn moved(message: u8) -> ReadMarkerEvent {
        ReadMarkerMoved {
            room_id: id(10),
            user_id: id(2),
            message_id: id(message),
            at: at(),
        }
        .into()
    }

    #[test]
    fn a_member_moves_the_marker() {
        TestFramework::<ReadMarker>::with(())
            .given(vec![moved(20)])
            .when(move_to(21, true, true))
            .then_expect_events(vec![moved(21)]);
    }

    #[test]
    fn a_non_member_cannot() {
        TestFramework::<ReadMarker>::with(())
            .given_no_previous_events()
            .when(move_to(20, false, true))
            .then_expect_error(DomainError::forbidden("you are not a member of this room"));
    }

    #[test]
    fn the_message_must_be_in_the_room() {
        TestFramework::<ReadMarker>::with(())
            .given_no_previous_events()
            .when(move_to(20, true, false))
            .then_expect_error(DomainError::validation(
                "message_id",
                "no such message in this room",
            ));
    }

    fn deliver(message: u8, is_member: bool, in_room: bool) -> ReadMarkerCommand {
        ReadMarkerCommand::MoveDeliveryMarker {
            room_id: id(10),
            user_id: id(2),
            message_id: id(message),
            user_is_member: is_member,
            message_in_room: in_room,
            at: at(),
        }
    }

    fn delivered(message: u8) -> ReadMarkerEvent {
        DeliveryMarkerMoved {
            room_id: id(10),
            user_id: id(2),
            message_id: id(message),
            at: at(),
        }
        .into()
    }

    #[test]
    fn a_member_marks_a_message_delivered() {
        TestFramework::<ReadMarker>::with(())
            .given(vec![moved(20), delivered(21)])
            .when(deliver(22, true, true))
            .then_expect_events(vec![delivered(22)]);
    }

    #[test]
    fn delivery_is_checked_like_reading() {
        TestFramework::<ReadMarker>::with(())
            .given_no_previous_events()
            .when(deliver(20, false, true))
            .then_expect_error(DomainError::forbidden("you are not a member of this room"));
        TestFramework::<ReadMarker>::with(())
            .given_no_previous_events()
            .when(deliver(20, true, false))
            .then_expect_error(DomainError::validation(
                "message_id",
                "no such message in this room",
            ));
    }

    #[test]
    fn a_message_delivered_or_read_already_records_nothing() {
        TestFramework::<ReadMarker>::with(())
            .given(vec![delivered(21)])
            .when(deliver(21, true, true))
            .then_expect_events(vec![]);
        TestFramework::<ReadMarker>::with(())
            .given(vec![moved(21)])
            .when(deliver(21, true, true))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_same_message_again_is_a_no_op() {
        TestFramework::<ReadMarker>::with(())
            .given(vec![moved(20)])
            .when(move_to(20, true, true))
            .then_expect_events(vec![]);
    }
}
