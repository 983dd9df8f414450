//! An event as the stream sends it: decoded once for every caller's routing,
//! and serialized once in the shape clients see.

use parley_domain::codec::EventCodec;
use parley_domain::{
    CallEvent, FriendshipEvent, MessageEvent, PresenceEvent, ReadMarkerEvent, RoomEvent,
};
use parley_event_log::EventEnvelope;

pub(super) fn decode<E: EventCodec>(event: &EventEnvelope) -> Option<E> {
    match E::from_payload(
        &event.event_type,
        event.event_version as u32,
        &event.payload,
    ) {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            tracing::debug!(event_id = %event.event_id, error = %e, "stream: undecodable event skipped");
            None
        }
    }
}

/// An event decoded once for every reader that routes it.
pub(super) enum Decoded {
    Message(MessageEvent),
    Room(RoomEvent),
    Friendship(FriendshipEvent),
    Presence(PresenceEvent),
    /// A member's read or delivery marker: a receipt.
    Marker(ReadMarkerEvent),
    /// A step of a call in a room.
    Call(CallEvent),
    /// Of a type no stream routes, or undecodable.
    Other,
}

pub(super) fn decoded(event: &EventEnvelope) -> Decoded {
    let as_other = |d: Option<Decoded>| d.unwrap_or(Decoded::Other);
    match event.aggregate_type.as_str() {
        "message" => as_other(decode(event).map(Decoded::Message)),
        "room" => as_other(decode(event).map(Decoded::Room)),
        "friendship" => as_other(decode(event).map(Decoded::Friendship)),
        "presence" => as_other(decode(event).map(Decoded::Presence)),
        "read_marker" => as_other(decode(event).map(Decoded::Marker)),
        "call" => as_other(decode(event).map(Decoded::Call)),
        _ => Decoded::Other,
    }
}

/// What the hub broadcasts: the event, decoded and serialized for clients
/// once, however many streams take it.
pub struct Published {
    pub(super) event: EventEnvelope,
    pub(super) decoded: Decoded,
    /// The event as clients see it ([`client_view`]), as JSON.
    pub(super) data: String,
}

impl Published {
    pub(super) fn new(event: EventEnvelope) -> Self {
        let data = serde_json::to_string(&client_view(&event)).unwrap_or_else(|_| "{}".into());
        Self {
            decoded: decoded(&event),
            event,
            data,
        }
    }
}

/// An event as clients see it: today's shape (an older stored version is upcast,
/// as for every other reader), and of its metadata only who acted. Request ids,
/// correlation ids, idempotency keys and trace context are the acting client's
/// own and never reach other users.
pub fn client_view(event: &EventEnvelope) -> EventEnvelope {
    let mut view = event.clone();
    view.metadata = parley_event_log::Metadata {
        actor_id: event.metadata.actor_id,
        ..Default::default()
    };
    let stale = parley_event_schemas::upcast::latest_version(&event.event_type)
        .is_some_and(|latest| latest != event.event_version as u32);
    if stale {
        if let Some(version) = parley_event_schemas::upcast::upcast(
            &view.event_type,
            view.event_version as u32,
            &mut view.payload,
        ) {
            view.event_version = version as i32;
        }
    }
    view
}
