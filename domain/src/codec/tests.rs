use super::*;
use crate::message::MessageEvent;
use crate::presence::PresenceEvent;
use crate::room::RoomEvent;
use crate::user::UserEvent;
use std::collections::HashSet;

/// The version today's code writes for `event_type`.
fn latest(event_type: &str) -> u32 {
    all_events()
        .iter()
        .filter(|d| d.event_type == event_type)
        .map(|d| d.version)
        .max()
        .unwrap()
}

fn decode(d: &EventDescriptor, payload: Value) -> Result<(), DecodeError> {
    let event = AnyEvent::from_payload(d.event_type, d.version, &payload)?;
    assert_eq!(event.aggregate_type(), d.aggregate_type);
    assert_eq!(event.event_type(), d.event_type);
    // Old versions decode into today's event (upcast), which writes today's version.
    assert_eq!(event.event_version(), latest(d.event_type));
    if d.version == latest(d.event_type) {
        assert_eq!(
            event.to_payload(),
            payload,
            "{} does not round-trip",
            d.event_type
        );
    }
    Ok(())
}

#[test]
fn every_event_round_trips_through_its_payload() {
    let all = all_events();
    assert_eq!(all.len(), 34);
    for d in &all {
        decode(d, (d.example)()).unwrap();
    }
}

#[test]
fn payloads_are_plain_objects_without_an_enum_tag() {
    let payload = (all_events()[0].example)();
    let object = payload.as_object().expect("an object");
    assert!(object.contains_key("user_id"));
    assert!(!object.contains_key("UserRegistered"));
}

#[test]
fn event_types_are_unique_across_aggregates() {
    let all = all_events();
    let types: HashSet<_> = all.iter().map(|d| (d.event_type, d.version)).collect();
    assert_eq!(types.len(), all.len());
}

#[test]
fn aggregate_types_match_the_aggregates() {
    use cqrs_es::Aggregate;
    let types: HashSet<_> = all_events().iter().map(|d| d.aggregate_type).collect();
    let expected: HashSet<_> = [
        crate::user::User::TYPE,
        crate::user::UsernameClaim::TYPE,
        crate::room::Room::TYPE,
        crate::message::Message::TYPE,
        crate::read_marker::ReadMarker::TYPE,
        crate::call::Call::TYPE,
        crate::friendship::Friendship::TYPE,
        crate::presence::Presence::TYPE,
    ]
    .into_iter()
    .collect();
    assert_eq!(types, expected);
}

#[test]
fn unknown_type_or_version_is_reported() {
    let err = RoomEvent::from_payload("RoomExploded", 1, &serde_json::json!({})).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnknownType { ref event_type, version: 1 } if event_type == "RoomExploded"
    ));
    let err = RoomEvent::from_payload("RoomCreated", 99, &serde_json::json!({})).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownType { version: 99, .. }));
    // An event of another aggregate is unknown to this codec.
    let err = RoomEvent::from_payload("MessageSent", 1, &serde_json::json!({})).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownType { .. }));
    let err = AnyEvent::from_payload("RoomExploded", 1, &serde_json::json!({})).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownType { .. }));
}

#[test]
fn invalid_payload_is_reported() {
    let err = PresenceEvent::from_payload("PresenceHeartbeat", 1, &serde_json::json!({"at": 1}))
        .unwrap_err();
    assert!(matches!(err, DecodeError::Invalid { .. }));
    // A value that breaks a value type's rule is invalid too.
    let mut payload = (MessageEvent::descriptors()[0].example)();
    payload["body"] = serde_json::json!("   ");
    assert!(matches!(
        MessageEvent::from_payload("MessageSent", 1, &payload),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn unknown_fields_are_tolerated() {
    let mut payload = (all_events()[0].example)();
    payload["added_in_a_later_release"] = serde_json::json!(true);
    UserEvent::from_payload("UserRegistered", 2, &payload).unwrap();
}

#[test]
fn cqrs_domain_event_uses_the_same_type_and_version() {
    use cqrs_es::DomainEvent;
    let event = PresenceEvent::from_payload(
        "PresenceHeartbeat",
        1,
        &(PresenceEvent::descriptors()[1].example)(),
    )
    .unwrap();
    assert_eq!(DomainEvent::event_type(&event), "PresenceHeartbeat");
    assert_eq!(DomainEvent::event_version(&event), "1");
}

mod legacy {
    //! A made-up aggregate showing how an old version is kept and upcast.
    use super::super::Example;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Pinged {
        pub count: u32,
        pub note: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct PingedV1 {
        pub count: u32,
    }

    impl From<PingedV1> for Pinged {
        fn from(old: PingedV1) -> Self {
            Self {
                count: old.count,
                note: String::new(),
            }
        }
    }

    impl Example for Pinged {
        fn example() -> Self {
            Self {
                count: 2,
                note: "hi".into(),
            }
        }
    }

    impl Example for PingedV1 {
        fn example() -> Self {
            Self { count: 1 }
        }
    }

    event_enum! {
        pub enum PingEvent for "ping";
        { Pinged = 2 }
        legacy { Pinged = 1 => PingedV1 }
    }
}

#[test]
fn old_versions_are_upcast_and_listed() {
    use legacy::{PingEvent, Pinged};
    let old = PingEvent::from_payload("Pinged", 1, &serde_json::json!({"count": 7})).unwrap();
    assert_eq!(
        old,
        PingEvent::Pinged(Pinged {
            count: 7,
            note: String::new()
        })
    );
    // Today's code writes the new version only.
    assert_eq!(old.event_version(), 2);
    let versions: Vec<_> = PingEvent::descriptors().iter().map(|d| d.version).collect();
    assert_eq!(versions, [2, 1]);
    assert!(PingEvent::from_payload("Pinged", 3, &serde_json::json!({})).is_err());
}

#[test]
fn message_sent_v1_is_upcast_to_v2_with_plain_format() {
    use crate::message::MessageSent;
    use crate::values::MessageFormat;
    let v1 = serde_json::json!({
        "message_id": "00000000-0000-4000-8000-000000000014",
        "room_id": "00000000-0000-4000-8000-00000000000a",
        "sender_id": "00000000-0000-4000-8000-000000000001",
        "body": "Hello, world!",
        "reply_to": null,
        "sent_at": "2024-05-01T12:00:00Z"
    });
    let event = AnyEvent::from_payload("MessageSent", 1, &v1).unwrap();
    let AnyEvent::Message(MessageEvent::MessageSent(MessageSent { format, .. })) = &event else {
        panic!("not a MessageSent: {event:?}");
    };
    assert_eq!(*format, MessageFormat::Plain);
    // Read back, it is today's version: v2, with the default written out.
    assert_eq!(event.event_version(), 2);
    let mut expected = v1;
    expected["format"] = serde_json::json!("plain");
    assert_eq!(event.to_payload(), expected);
    // A v2 payload without its format is not a valid v2.
    let mut missing = expected.clone();
    missing.as_object_mut().unwrap().remove("format");
    assert!(matches!(
        AnyEvent::from_payload("MessageSent", 2, &missing),
        Err(DecodeError::Invalid { .. })
    ));
}
