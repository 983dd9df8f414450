//! Old versions read as today's: the JSON upcaster (exports, tail) and the domain
//! codec (projectors, command side) agree on every golden example, and what they
//! produce is valid under today's committed schema.

use std::fs;

use parley_domain::codec::{all_events, AnyEvent, EventCodec};
use parley_event_schemas::redact::{looks_secret, redact, REDACTED_FIELDS};
use parley_event_schemas::upcast::{is_known, latest_version, missing_steps, upcast};
use parley_event_schemas::{example_path, file_name, schema_dir, schema_path};
use serde_json::{json, Value};

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn latest_schema(event_type: &str) -> jsonschema::Validator {
    let latest = latest_version(event_type).unwrap();
    let schema = read_json(&schema_dir().join(file_name(event_type, latest)));
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn every_old_version_has_an_upcast_path() {
    assert!(
        missing_steps().is_empty(),
        "old event versions without a JSON upcast step in event-schemas/src/upcast.rs: {:?}",
        missing_steps()
    );
}

#[test]
fn golden_examples_of_every_version_read_as_todays_shape() {
    for descriptor in all_events() {
        let stored = read_json(&example_path(&descriptor));
        let mut upcast_json = stored.clone();
        let version = upcast(descriptor.event_type, descriptor.version, &mut upcast_json)
            .unwrap_or_else(|| panic!("{} v{}", descriptor.event_type, descriptor.version));
        assert_eq!(version, latest_version(descriptor.event_type).unwrap());
        // The codec's reading of the same stored payload, written back out.
        let decoded =
            AnyEvent::from_payload(descriptor.event_type, descriptor.version, &stored).unwrap();
        assert_eq!(decoded.event_version(), version);
        assert_eq!(
            upcast_json,
            decoded.to_payload(),
            "{} v{}: the JSON upcaster and the codec disagree",
            descriptor.event_type,
            descriptor.version
        );
        let validator = latest_schema(descriptor.event_type);
        let errors: Vec<String> = validator
            .iter_errors(&upcast_json)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{} v{} upcast breaks today's schema: {errors:?}",
            descriptor.event_type,
            descriptor.version
        );
    }
}

#[test]
fn golden_message_sent_v1_reads_as_v2() {
    let v1 = read_json(&schema_dir().join("../examples/MessageSent.v1.json"));
    assert!(v1.get("format").is_none());
    let mut payload = v1.clone();
    assert_eq!(upcast("MessageSent", 1, &mut payload), Some(2));
    assert_eq!(payload["format"], json!("plain"));
    // Everything else is as stored.
    payload.as_object_mut().unwrap().remove("format");
    assert_eq!(payload, v1);
    // A v2 payload is left as it is.
    let v2 = read_json(&schema_dir().join("../examples/MessageSent.v2.json"));
    let mut same = v2.clone();
    assert_eq!(upcast("MessageSent", 2, &mut same), Some(2));
    assert_eq!(same, v2);
}

#[test]
fn unknown_types_and_versions_are_left_as_stored() {
    let mut payload = json!({"x": 1});
    assert_eq!(upcast("RoomExploded", 1, &mut payload), None);
    assert_eq!(upcast("MessageSent", 99, &mut payload), None);
    assert_eq!(upcast("MessageSent", 0, &mut payload), None);
    assert_eq!(payload, json!({"x": 1}));
    assert!(is_known("MessageSent", 1) && is_known("MessageSent", 2));
    assert!(!is_known("MessageSent", 3));
}

#[test]
fn password_hashes_are_redacted() {
    let mut payload = read_json(&schema_dir().join("../examples/UserRegistered.v1.json"));
    assert!(payload["password_hash"].is_string());
    assert!(redact("UserRegistered", &mut payload));
    assert_eq!(payload["password_hash"], Value::Null);
    assert_eq!(payload["username"], json!("alice"));
    // Other types are untouched.
    let mut other = json!({"password_hash": "x"});
    assert!(!redact("MessageSent", &mut other));
}

#[test]
fn every_secret_looking_field_is_redacted() {
    // A new event field named like a secret must be added to REDACTED_FIELDS (or
    // this list of reviewed exceptions) before it can reach an export.
    let reviewed_not_secret: &[(&str, &str)] = &[];
    for descriptor in all_events() {
        let schema = read_json(&schema_path(&descriptor));
        let Some(properties) = schema["properties"].as_object() else {
            continue;
        };
        for field in properties.keys() {
            if !looks_secret(field) {
                continue;
            }
            let pair = (descriptor.event_type, field.as_str());
            assert!(
                REDACTED_FIELDS.contains(&pair) || reviewed_not_secret.contains(&pair),
                "{}.{} looks secret but is not redacted from exports",
                descriptor.event_type,
                field
            );
        }
    }
}
