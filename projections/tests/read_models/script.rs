//! Scripts of domain events turned into envelopes (with sequences per
//! aggregate and growing positions, as the log hands them out), and the busy
//! little world most invariant tests run.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use parley_domain::call::CallEnd;
use parley_domain::codec::EventCodec;
use parley_domain::friendship::*;
use parley_domain::ids;
use parley_domain::message::*;
use parley_domain::presence::*;
use parley_domain::read_marker::*;
use parley_domain::room::*;
use parley_domain::user::*;
use parley_domain::values::*;
use parley_event_log::{EventEnvelope, Metadata};
use uuid::Uuid;

/// The base time of every script: events happen one second apart after it.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

/// Builds envelopes from domain events, with sequences per aggregate and growing
/// global positions, as the log would hand them out.
#[derive(Default)]
pub struct Script {
    pub events: Vec<EventEnvelope>,
    sequences: HashMap<Uuid, i64>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// The time of the next event (one second per event after [`t0`]).
    pub fn now(&self) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(self.events.len() as i64 + 1)
    }

    /// Appends an event of `aggregate_type`/`aggregate_id`.
    pub fn push<E: EventCodec>(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        event: E,
    ) -> EventEnvelope {
        self.push_raw(
            aggregate_type,
            aggregate_id,
            event.event_type(),
            event.event_version() as i32,
            event.to_payload(),
        )
    }

    /// Appends an envelope with any type and payload (corrupt ones included).
    pub fn push_raw(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        event_type: &str,
        version: i32,
        payload: serde_json::Value,
    ) -> EventEnvelope {
        let sequence = self.sequences.entry(aggregate_id).or_default();
        *sequence += 1;
        let envelope = EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_string(),
            event_version: version,
            aggregate_type: aggregate_type.to_string(),
            aggregate_id,
            sequence: *sequence,
            position: self.events.len() as i64 + 1,
            recorded_at: self.now(),
            metadata: Metadata::default(),
            payload,
            tx_id: 0,
        };
        self.events.push(envelope.clone());
        envelope
    }

    pub fn register(&mut self, username: &str) -> Uuid {
        let user_id = Uuid::now_v7();
        let event = UserEvent::from(UserRegistered {
            user_id,
            username: Username::parse(username).unwrap(),
            display_name: DisplayName::parse(username.to_uppercase()).unwrap(),
            registered_at: self.now(),
        });
        self.push("user", user_id, event);
        user_id
    }

    pub fn create_room(&mut self, creator: Uuid, name: &str, visibility: Visibility) -> Uuid {
        let room_id = Uuid::now_v7();
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(RoomCreated {
                room_id,
                name: RoomName::parse(name).unwrap(),
                topic: Some(Topic::parse(format!("about {name}")).unwrap()),
                visibility,
                creator_id: creator,
                created_at: at,
            }),
        );
        self.push(
            "room",
            room_id,
            RoomEvent::from(MemberJoined {
                room_id,
                user_id: creator,
                role: Role::Owner,
                at,
            }),
        );
        room_id
    }

    pub fn direct_room(&mut self, a: Uuid, b: Uuid) -> Uuid {
        let pair = parley_domain::UserPair::new(a, b).unwrap();
        let room_id = pair.direct_room_id();
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(DirectRoomCreated {
                room_id,
                user_ids: pair.as_array(),
                created_at: at,
            }),
        );
        for user_id in pair.as_array() {
            self.push(
                "room",
                room_id,
                RoomEvent::from(MemberJoined {
                    room_id,
                    user_id,
                    role: Role::Member,
                    at,
                }),
            );
        }
        room_id
    }

    pub fn invite(&mut self, room_id: Uuid, user_id: Uuid, invited_by: Uuid) {
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(MemberInvited {
                room_id,
                user_id,
                invited_by,
                at,
            }),
        );
    }

    pub fn join(&mut self, room_id: Uuid, user_id: Uuid) {
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(MemberJoined {
                room_id,
                user_id,
                role: Role::Member,
                at,
            }),
        );
    }

    pub fn leave(&mut self, room_id: Uuid, user_id: Uuid) {
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(MemberLeft {
                room_id,
                user_id,
                at,
            }),
        );
    }

    pub fn kick(&mut self, room_id: Uuid, user_id: Uuid, kicked_by: Uuid) {
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(MemberKicked {
                room_id,
                user_id,
                kicked_by,
                at,
            }),
        );
    }

    pub fn ban(&mut self, room_id: Uuid, user_id: Uuid, banned_by: Uuid) {
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(MemberBanned {
                room_id,
                user_id,
                banned_by,
                at,
            }),
        );
    }

    pub fn change_role(&mut self, room_id: Uuid, user_id: Uuid, role: Role, changed_by: Uuid) {
        let at = self.now();
        self.push(
            "room",
            room_id,
            RoomEvent::from(MemberRoleChanged {
                room_id,
                user_id,
                role,
                changed_by,
                at,
            }),
        );
    }

    pub fn send(&mut self, room_id: Uuid, sender_id: Uuid, body: &str) -> Uuid {
        self.send_reply(room_id, sender_id, body, None)
    }

    pub fn send_reply(
        &mut self,
        room_id: Uuid,
        sender_id: Uuid,
        body: &str,
        reply_to: Option<Uuid>,
    ) -> Uuid {
        let message_id = Uuid::now_v7();
        let sent_at = self.now();
        self.push(
            "message",
            message_id,
            MessageEvent::from(MessageSent {
                message_id,
                room_id,
                sender_id,
                body: MessageBody::parse(body).unwrap(),
                reply_to,
                sent_at,
                format: Default::default(),
            }),
        );
        message_id
    }

    pub fn edit(&mut self, message_id: Uuid, room_id: Uuid, editor_id: Uuid, body: &str) {
        let edited_at = self.now();
        self.push(
            "message",
            message_id,
            MessageEvent::from(MessageEdited {
                message_id,
                room_id,
                editor_id,
                body: MessageBody::parse(body).unwrap(),
                edited_at,
            }),
        );
    }

    pub fn redact(&mut self, message_id: Uuid, room_id: Uuid, redacted_by: Uuid) {
        let redacted_at = self.now();
        self.push(
            "message",
            message_id,
            MessageEvent::from(MessageRedacted {
                message_id,
                room_id,
                redacted_by,
                redacted_at,
            }),
        );
    }

    pub fn react(&mut self, message_id: Uuid, room_id: Uuid, user_id: Uuid, emoji: &str) {
        let at = self.now();
        self.push(
            "message",
            message_id,
            MessageEvent::from(ReactionAdded {
                message_id,
                room_id,
                user_id,
                emoji: Emoji::parse(emoji).unwrap(),
                at,
            }),
        );
    }

    pub fn unreact(&mut self, message_id: Uuid, room_id: Uuid, user_id: Uuid, emoji: &str) {
        let at = self.now();
        self.push(
            "message",
            message_id,
            MessageEvent::from(ReactionRemoved {
                message_id,
                room_id,
                user_id,
                emoji: Emoji::parse(emoji).unwrap(),
                at,
            }),
        );
    }

    /// A call in `room_id` started by `by`: joined by each of `joined`, then
    /// ended for `reason` (everyone still in it leaving first when completed).
    pub fn call(&mut self, room_id: Uuid, by: Uuid, joined: &[Uuid], reason: CallEnd) -> Uuid {
        use parley_domain::call::*;
        let call_id = Uuid::now_v7();
        let at = self.now();
        self.push(
            "call",
            call_id,
            CallEvent::from(CallStarted {
                call_id,
                room_id,
                started_by: by,
                kind: CallKind::Video,
                at,
            }),
        );
        for &user_id in joined {
            let at = self.now();
            self.push(
                "call",
                call_id,
                CallEvent::from(CallJoined {
                    call_id,
                    room_id,
                    user_id,
                    at,
                }),
            );
        }
        if reason == CallEnd::Completed {
            for &user_id in std::iter::once(&by).chain(joined) {
                let at = self.now();
                self.push(
                    "call",
                    call_id,
                    CallEvent::from(CallLeft {
                        call_id,
                        room_id,
                        user_id,
                        at,
                    }),
                );
            }
        }
        let at = self.now();
        self.push(
            "call",
            call_id,
            CallEvent::from(CallEnded {
                call_id,
                room_id,
                reason,
                at,
            }),
        );
        call_id
    }

    pub fn read(&mut self, room_id: Uuid, user_id: Uuid, message_id: Uuid) {
        let at = self.now();
        self.push(
            "read_marker",
            ids::read_marker_id(room_id, user_id),
            ReadMarkerEvent::from(ReadMarkerMoved {
                room_id,
                user_id,
                message_id,
                at,
            }),
        );
    }

    pub fn deliver(&mut self, room_id: Uuid, user_id: Uuid, message_id: Uuid) {
        let at = self.now();
        self.push(
            "read_marker",
            ids::read_marker_id(room_id, user_id),
            ReadMarkerEvent::from(DeliveryMarkerMoved {
                room_id,
                user_id,
                message_id,
                at,
            }),
        );
    }

    pub fn presence(
        &mut self,
        user_id: Uuid,
        status: PresenceStatus,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) {
        let status_message = message.map(|m| StatusMessage::parse(m).unwrap());
        self.push(
            "presence",
            ids::presence_id(user_id),
            PresenceEvent::from(PresenceChanged {
                user_id,
                status,
                status_message,
                at,
            }),
        );
    }

    pub fn heartbeat(&mut self, user_id: Uuid, at: DateTime<Utc>) {
        self.push(
            "presence",
            ids::presence_id(user_id),
            PresenceEvent::from(PresenceHeartbeat { user_id, at }),
        );
    }

    fn friendship<E: Into<FriendshipEvent>>(&mut self, a: Uuid, b: Uuid, event: E) {
        self.push("friendship", ids::friendship_id(a, b), event.into());
    }

    pub fn request_friend(&mut self, from: Uuid, to: Uuid) {
        let (request_id, at) = (ids::friendship_id(from, to), self.now());
        self.friendship(
            from,
            to,
            FriendRequestSent {
                request_id,
                from_user_id: from,
                to_user_id: to,
                at,
            },
        );
    }

    /// `from` is the original requester.
    pub fn accept_friend(&mut self, from: Uuid, to: Uuid) {
        let (request_id, at) = (ids::friendship_id(from, to), self.now());
        self.friendship(
            from,
            to,
            FriendRequestAccepted {
                request_id,
                from_user_id: from,
                to_user_id: to,
                at,
            },
        );
    }

    pub fn decline_friend(&mut self, from: Uuid, to: Uuid) {
        let (request_id, at) = (ids::friendship_id(from, to), self.now());
        self.friendship(
            from,
            to,
            FriendRequestDeclined {
                request_id,
                from_user_id: from,
                to_user_id: to,
                at,
            },
        );
    }

    pub fn cancel_friend(&mut self, from: Uuid, to: Uuid) {
        let (request_id, at) = (ids::friendship_id(from, to), self.now());
        self.friendship(
            from,
            to,
            FriendRequestCancelled {
                request_id,
                from_user_id: from,
                to_user_id: to,
                at,
            },
        );
    }

    pub fn unfriend(&mut self, user_id: Uuid, friend_id: Uuid) {
        let at = self.now();
        self.friendship(
            user_id,
            friend_id,
            FriendRemoved {
                user_id,
                friend_id,
                at,
            },
        );
    }

    pub fn block(&mut self, blocker_id: Uuid, blocked_id: Uuid) {
        let at = self.now();
        self.friendship(
            blocker_id,
            blocked_id,
            UserBlocked {
                blocker_id,
                blocked_id,
                at,
            },
        );
    }

    pub fn unblock(&mut self, blocker_id: Uuid, blocked_id: Uuid) {
        let at = self.now();
        self.friendship(
            blocker_id,
            blocked_id,
            UserUnblocked {
                blocker_id,
                blocked_id,
                at,
            },
        );
    }

    /// The time of the event at `position` (1-based), as the script stamped it.
    pub fn time_of(position: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(position)
    }
}

/// A busy little world touching every read model: users, rooms (group and direct),
/// invites, joins, leaves, kicks, role changes, messages with edits, redactions,
/// reactions and replies, read markers, presence, friendships and blocks.
pub fn world() -> Script {
    let mut s = Script::new();
    let alice = s.register("alice");
    let bob = s.register("bob");
    let carol = s.register("carol");
    let dave = s.register("dave");
    s.presence(alice, PresenceStatus::Online, None, t0());
    let general = s.create_room(alice, "general", Visibility::Public);
    let secret = s.create_room(bob, "secret", Visibility::Private);
    s.join(general, bob);
    s.join(general, carol);
    s.invite(secret, carol, bob);
    s.invite(secret, dave, bob);
    s.join(secret, carol);
    s.request_friend(alice, bob);
    s.request_friend(carol, dave);
    let dm = s.direct_room(alice, bob);
    let mut last = Uuid::nil();
    for i in 0..30 {
        let (room, sender) = match i % 4 {
            0 => (general, alice),
            1 => (general, bob),
            2 => (secret, carol),
            _ => (dm, bob),
        };
        let reply_to = (i % 5 == 4).then_some(last);
        let id = s.send_reply(
            room,
            sender,
            &format!("message {i} {}", "é".repeat(i * 7)),
            reply_to,
        );
        if i % 3 == 0 {
            s.react(id, room, carol, "👍");
            s.react(id, room, bob, "👍");
        }
        if i % 6 == 1 {
            s.edit(id, room, sender, &format!("message {i}, edited"));
        }
        if i % 7 == 2 {
            s.unreact(last, room, carol, "👍");
            s.redact(id, room, sender);
        }
        if i % 4 == 3 {
            s.read(general, carol, last);
            s.deliver(general, bob, id);
            s.heartbeat(alice, s.now());
        }
        last = id;
    }
    s.accept_friend(alice, bob);
    s.change_role(general, bob, Role::Admin, alice);
    s.kick(general, carol, bob);
    s.leave(secret, carol);
    s.join(general, dave);
    s.read(dm, alice, last);
    s.call(dm, alice, &[bob], CallEnd::Completed);
    s.call(general, bob, &[], CallEnd::Missed);
    s.block(carol, dave);
    s.request_friend(dave, alice);
    // alice asks dave too: the domain turns that into an accept of dave's request.
    s.accept_friend(dave, alice);
    s.presence(bob, PresenceStatus::Away, Some("lunch"), s.now());
    s.unfriend(bob, alice);
    s.block(alice, carol);
    s.unblock(alice, carol);
    s.request_friend(bob, carol);
    let twice = s.send(general, alice, "edited twice");
    s.edit(twice, general, alice, "edited once");
    s.edit(twice, general, alice, "edited twice, really");
    let gone = s.send(general, bob, "edited, then redacted");
    s.edit(gone, general, bob, "edited");
    s.redact(gone, general, bob);
    s.heartbeat(bob, s.now());
    s
}
