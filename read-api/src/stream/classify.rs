//! What an event is to one caller: a change to their rooms or friends (with
//! the state before and after), news of one of their rooms or friends, or
//! nothing of theirs.

use parley_domain::friendship::{FriendRequestCancelled, FriendRequestDeclined, FriendRequestSent};
use parley_domain::{
    CallEvent, FriendshipEvent, MessageEvent, PresenceEvent, ReadMarkerEvent, RoomEvent,
};
use parley_event_log::EventEnvelope;
use uuid::Uuid;

use super::event::{decoded, Decoded};

/// A change to the caller's rooms or friends, with the state before and after.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change {
    pub(super) set: Set,
    pub(super) key: Uuid,
    pub(super) before: bool,
    pub(super) after: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Set {
    Rooms,
    Friends,
}

/// What an event is to one caller.
pub(super) enum Class {
    /// Of a room: for its members.
    Room(Uuid),
    /// Involves the caller directly; may change their rooms or friends.
    Mine(Option<Change>),
    /// A user's presence: for the user and their friends.
    Presence(Uuid),
    /// Not for this caller.
    Other,
}

pub(super) fn classify(me: Uuid, event: &EventEnvelope) -> Class {
    classify_decoded(me, &decoded(event))
}

pub(super) fn classify_decoded(me: Uuid, decoded: &Decoded) -> Class {
    let room = |key, before, after| Change {
        set: Set::Rooms,
        key,
        before,
        after,
    };
    let friend = |key, before, after| Change {
        set: Set::Friends,
        key,
        before,
        after,
    };
    let other_of = |a: Uuid, b: Uuid| if a == me { b } else { a };
    match decoded {
        Decoded::Message(message) => match message {
            MessageEvent::MessageSent(e) => Class::Room(e.room_id),
            MessageEvent::MessageEdited(e) => Class::Room(e.room_id),
            MessageEvent::MessageRedacted(e) => Class::Room(e.room_id),
            MessageEvent::ReactionAdded(e) => Class::Room(e.room_id),
            MessageEvent::ReactionRemoved(e) => Class::Room(e.room_id),
        },
        Decoded::Room(event) => match event {
            RoomEvent::RoomCreated(e) if e.creator_id == me => Class::Mine(None),
            RoomEvent::DirectRoomCreated(e) if e.user_ids.contains(&me) => Class::Mine(None),
            RoomEvent::MemberInvited(e) if e.user_id == me || e.invited_by == me => {
                Class::Mine(None)
            }
            RoomEvent::MemberJoined(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, false, true)))
            }
            RoomEvent::MemberLeft(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, true, false)))
            }
            RoomEvent::MemberKicked(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, true, false)))
            }
            // Whether they were a member before is not in the event: rewinding
            // assumes not (and so streams less, never more).
            RoomEvent::MemberBanned(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, false, false)))
            }
            RoomEvent::MemberUnbanned(e) if e.user_id == me => Class::Mine(None),
            RoomEvent::MemberBanned(e) => Class::Room(e.room_id),
            RoomEvent::MemberJoined(e) => Class::Room(e.room_id),
            RoomEvent::MemberLeft(e) => Class::Room(e.room_id),
            RoomEvent::MemberKicked(e) => Class::Room(e.room_id),
            RoomEvent::MemberRoleChanged(e) => Class::Room(e.room_id),
            _ => Class::Other,
        },
        Decoded::Friendship(event) => match event {
            FriendshipEvent::FriendRequestSent(FriendRequestSent {
                from_user_id,
                to_user_id,
                ..
            })
            | FriendshipEvent::FriendRequestDeclined(FriendRequestDeclined {
                from_user_id,
                to_user_id,
                ..
            })
            | FriendshipEvent::FriendRequestCancelled(FriendRequestCancelled {
                from_user_id,
                to_user_id,
                ..
            }) if *from_user_id == me || *to_user_id == me => Class::Mine(None),
            FriendshipEvent::FriendRequestAccepted(e)
                if e.from_user_id == me || e.to_user_id == me =>
            {
                let other = other_of(e.from_user_id, e.to_user_id);
                Class::Mine(Some(friend(other, false, true)))
            }
            FriendshipEvent::FriendRemoved(e) if e.user_id == me || e.friend_id == me => {
                let other = other_of(e.user_id, e.friend_id);
                Class::Mine(Some(friend(other, true, false)))
            }
            // Whether they were friends before a block is not in the event: rewinding
            // assumes not (and so streams less, never more).
            FriendshipEvent::UserBlocked(e) if e.blocker_id == me || e.blocked_id == me => {
                let other = other_of(e.blocker_id, e.blocked_id);
                Class::Mine(Some(friend(other, false, false)))
            }
            FriendshipEvent::UserUnblocked(e) if e.blocker_id == me || e.blocked_id == me => {
                Class::Mine(None)
            }
            _ => Class::Other,
        },
        Decoded::Presence(event) => match event {
            PresenceEvent::PresenceChanged(e) => Class::Presence(e.user_id),
            // Heartbeats repeat the status: not a change.
            _ => Class::Other,
        },
        // Receipts are for the room's members, as its messages are.
        Decoded::Marker(marker) => match marker {
            ReadMarkerEvent::ReadMarkerMoved(e) => Class::Room(e.room_id),
            ReadMarkerEvent::DeliveryMarkerMoved(e) => Class::Room(e.room_id),
        },
        // Calls ring, start and end for the room's members.
        Decoded::Call(call) => Class::Room(match call {
            CallEvent::CallStarted(e) => e.room_id,
            CallEvent::CallJoined(e) => e.room_id,
            CallEvent::CallDeclined(e) => e.room_id,
            CallEvent::CallLeft(e) => e.room_id,
            CallEvent::CallEnded(e) => e.room_id,
        }),
        Decoded::Other => Class::Other,
    }
}
