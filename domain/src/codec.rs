//! The wire contract of events: type, version and payload of every event.
//!
//! The payload is the plain JSON object of the event struct (no enum tag); the envelope
//! carries the type and version. Readers tolerate unknown fields, so adding an optional
//! field is compatible; any other change of shape needs a new version (see
//! `event-schemas/README.md`), with an arm in `from_payload` that upcasts the old one.

use serde_json::Value;

/// Encodes and decodes an aggregate's events to and from their versioned payloads.
pub trait EventCodec: Sized {
    /// The event type written in the envelope, e.g. `"MessageSent"`.
    fn event_type(&self) -> &'static str;
    /// The version of the payload's shape written by this code.
    fn event_version(&self) -> u32;
    /// The payload: the event struct as a plain JSON object.
    fn to_payload(&self) -> Value;
    /// Decodes a payload of any known type and version into today's event
    /// (borrowed: a reader decodes straight from the envelope it holds).
    fn from_payload(
        event_type: &str,
        event_version: u32,
        payload: &Value,
    ) -> Result<Self, DecodeError>;
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No event of this type and version exists (for this aggregate).
    #[error("unknown event type {event_type} v{version}")]
    UnknownType { event_type: String, version: u32 },
    /// The type is known but the payload does not match it.
    #[error("invalid payload for {event_type} v{version}: {source}")]
    Invalid {
        event_type: String,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
}

/// One event type at one version, with its schema and an example payload.
#[derive(Clone, Copy)]
pub struct EventDescriptor {
    /// The `Aggregate::TYPE` of the aggregate that emits it.
    pub aggregate_type: &'static str,
    /// The event type, e.g. `"MessageSent"`.
    pub event_type: &'static str,
    /// The payload version.
    pub version: u32,
    /// The JSON Schema of the payload, generated from the Rust type.
    pub schema: fn() -> schemars::Schema,
    /// An example payload with fixed values.
    pub example: fn() -> Value,
}

impl std::fmt::Debug for EventDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventDescriptor")
            .field("aggregate_type", &self.aggregate_type)
            .field("event_type", &self.event_type)
            .field("version", &self.version)
            .finish()
    }
}

/// A fixed example value of an event struct, used for docs and golden files.
pub trait Example {
    /// The example.
    fn example() -> Self;
}

/// Every event type and version of every aggregate.
pub fn all_events() -> Vec<EventDescriptor> {
    [
        crate::user::UserEvent::descriptors(),
        crate::user::UsernameClaimEvent::descriptors(),
        crate::room::RoomEvent::descriptors(),
        crate::message::MessageEvent::descriptors(),
        crate::read_marker::ReadMarkerEvent::descriptors(),
        crate::friendship::FriendshipEvent::descriptors(),
        crate::presence::PresenceEvent::descriptors(),
        crate::call::CallEvent::descriptors(),
    ]
    .concat()
}

/// Any event of any aggregate, for readers that handle the whole stream (projectors,
/// exports, contract tests). Event types are unique across aggregates (tested), so the
/// type alone picks the aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    /// An event of `user`.
    User(crate::user::UserEvent),
    /// An event of `username`.
    UsernameClaim(crate::user::UsernameClaimEvent),
    /// An event of `room`.
    Room(crate::room::RoomEvent),
    /// An event of `message`.
    Message(crate::message::MessageEvent),
    /// An event of `read_marker`.
    ReadMarker(crate::read_marker::ReadMarkerEvent),
    /// An event of `call`.
    Call(crate::call::CallEvent),
    /// An event of `friendship`.
    Friendship(crate::friendship::FriendshipEvent),
    /// An event of `presence`.
    Presence(crate::presence::PresenceEvent),
}

/// Calls `$body` with the inner event of each `AnyEvent` variant bound to `$e`.
macro_rules! any_event_dispatch {
    ($value:expr, $e:ident => $body:expr) => {
        match $value {
            AnyEvent::User($e) => $body,
            AnyEvent::UsernameClaim($e) => $body,
            AnyEvent::Room($e) => $body,
            AnyEvent::Message($e) => $body,
            AnyEvent::ReadMarker($e) => $body,
            AnyEvent::Call($e) => $body,
            AnyEvent::Friendship($e) => $body,
            AnyEvent::Presence($e) => $body,
        }
    };
}

impl AnyEvent {
    /// The `Aggregate::TYPE` of the aggregate that emitted this event.
    pub fn aggregate_type(&self) -> &'static str {
        use cqrs_es::Aggregate;
        match self {
            AnyEvent::User(_) => crate::user::User::TYPE,
            AnyEvent::UsernameClaim(_) => crate::user::UsernameClaim::TYPE,
            AnyEvent::Room(_) => crate::room::Room::TYPE,
            AnyEvent::Message(_) => crate::message::Message::TYPE,
            AnyEvent::ReadMarker(_) => crate::read_marker::ReadMarker::TYPE,
            AnyEvent::Call(_) => crate::call::Call::TYPE,
            AnyEvent::Friendship(_) => crate::friendship::Friendship::TYPE,
            AnyEvent::Presence(_) => crate::presence::Presence::TYPE,
        }
    }
}

impl EventCodec for AnyEvent {
    fn event_type(&self) -> &'static str {
        any_event_dispatch!(self, e => e.event_type())
    }

    fn event_version(&self) -> u32 {
        any_event_dispatch!(self, e => e.event_version())
    }

    fn to_payload(&self) -> Value {
        any_event_dispatch!(self, e => e.to_payload())
    }

    fn from_payload(
        event_type: &str,
        event_version: u32,
        payload: &Value,
    ) -> Result<Self, DecodeError> {
        fn attempt<E: EventCodec>(
            event_type: &str,
            event_version: u32,
            payload: &Value,
            wrap: fn(E) -> AnyEvent,
        ) -> Option<Result<AnyEvent, DecodeError>> {
            match E::from_payload(event_type, event_version, payload) {
                Err(DecodeError::UnknownType { .. }) => None,
                other => Some(other.map(wrap)),
            }
        }
        let (t, v, p) = (event_type, event_version, payload);
        attempt(t, v, p, AnyEvent::User)
            .or_else(|| attempt(t, v, p, AnyEvent::UsernameClaim))
            .or_else(|| attempt(t, v, p, AnyEvent::Room))
            .or_else(|| attempt(t, v, p, AnyEvent::Message))
            .or_else(|| attempt(t, v, p, AnyEvent::ReadMarker))
            .or_else(|| attempt(t, v, p, AnyEvent::Call))
            .or_else(|| attempt(t, v, p, AnyEvent::Friendship))
            .or_else(|| attempt(t, v, p, AnyEvent::Presence))
            .unwrap_or_else(|| {
                Err(DecodeError::UnknownType {
                    event_type: event_type.to_owned(),
                    version: event_version,
                })
            })
    }
}

/// Fixed values for [`Example`] impls.
pub(crate) mod examples {
    use chrono::{DateTime, TimeZone, Utc};
    use uuid::Uuid;

    /// A fixed, readable uuid: `00000000-0000-4000-8000-00000000000n`.
    pub fn id(n: u8) -> Uuid {
        Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | u128::from(n))
    }

    /// 2024-05-01T12:00:00Z.
    pub fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }
}

/// Declares an aggregate's event enum (one tuple variant per event struct, named like
/// the struct) with its `EventCodec`, `cqrs_es::DomainEvent`, `From` impls and
/// descriptors. `Variant = N` is the version written today. Older versions that must
/// stay readable go in an optional `legacy { Variant = N => OldStruct, ... }` block:
/// `OldStruct` is decoded and upcast with `From<OldStruct> for Variant`.
macro_rules! event_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident for $aggregate_type:expr;
        { $($variant:ident = $version:literal),+ $(,)? }
        $(legacy { $($lvariant:ident = $lversion:literal => $lstruct:ty),+ $(,)? })?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(
                #[doc = concat!("See [`", stringify!($variant), "`].")]
                $variant($variant),
            )+
        }

        $(
            impl From<$variant> for $name {
                fn from(event: $variant) -> Self {
                    Self::$variant(event)
                }
            }
        )+

        impl $name {
            /// The descriptor of every event type of this aggregate.
            pub fn descriptors() -> Vec<$crate::codec::EventDescriptor> {
                vec![$(
                    $crate::codec::EventDescriptor {
                        aggregate_type: $aggregate_type,
                        event_type: stringify!($variant),
                        version: $version,
                        schema: || schemars::schema_for!($variant),
                        example: || {
                            serde_json::to_value(<$variant as $crate::codec::Example>::example())
                                .expect("event structs serialize to JSON")
                        },
                    },
                )+
                $($(
                    $crate::codec::EventDescriptor {
                        aggregate_type: $aggregate_type,
                        event_type: stringify!($lvariant),
                        version: $lversion,
                        schema: || schemars::schema_for!($lstruct),
                        example: || {
                            serde_json::to_value(<$lstruct as $crate::codec::Example>::example())
                                .expect("event structs serialize to JSON")
                        },
                    },
                )+)?
                ]
            }
        }

        impl $crate::codec::EventCodec for $name {
            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)+
                }
            }

            fn event_version(&self) -> u32 {
                match self {
                    $(Self::$variant(_) => $version,)+
                }
            }

            fn to_payload(&self) -> serde_json::Value {
                let value = match self {
                    $(Self::$variant(event) => serde_json::to_value(event),)+
                };
                value.expect("event structs serialize to JSON")
            }

            fn from_payload(
                event_type: &str,
                event_version: u32,
                payload: &serde_json::Value,
            ) -> Result<Self, $crate::codec::DecodeError> {
                match (event_type, event_version) {
                    $(
                        (stringify!($variant), $version) => <$variant as serde::Deserialize>::deserialize(payload)
                            .map(Self::$variant)
                            .map_err(|source| $crate::codec::DecodeError::Invalid {
                                event_type: event_type.to_owned(),
                                version: event_version,
                                source,
                            }),
                    )+
                    $($(
                        (stringify!($lvariant), $lversion) => <$lstruct as serde::Deserialize>::deserialize(payload)
                            .map(|old| Self::$lvariant(old.into()))
                            .map_err(|source| $crate::codec::DecodeError::Invalid {
                                event_type: event_type.to_owned(),
                                version: event_version,
                                source,
                            }),
                    )+)?
                    _ => Err($crate::codec::DecodeError::UnknownType {
                        event_type: event_type.to_owned(),
                        version: event_version,
                    }),
                }
            }
        }

        impl cqrs_es::DomainEvent for $name {
            fn event_type(&self) -> String {
                $crate::codec::EventCodec::event_type(self).to_owned()
            }

            fn event_version(&self) -> String {
                $crate::codec::EventCodec::event_version(self).to_string()
            }
        }
    };
}
pub(crate) use event_enum;

#[cfg(test)]
mod tests;
