//! `asyncapi.yaml` describes the topic as it is: every event version has a
//! message whose payload is its committed schema, every reference resolves, and
//! the headers are the ones the relay writes.

use std::collections::BTreeSet;
use std::path::Path;

use parley_domain::codec::all_events;
use parley_event_schemas::{asyncapi_path, file_name, schema_dir};
use serde_json::Value;

fn document() -> Value {
    let text = std::fs::read_to_string(asyncapi_path()).expect("asyncapi.yaml");
    serde_yaml::from_str(&text).expect("asyncapi.yaml is YAML")
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    out.push(v.as_str().expect("$ref is a string").to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn it_is_an_asyncapi_3_document_for_the_events_topic() {
    let doc = document();
    assert!(doc["asyncapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["channels"]["events"]["address"], "parley.events");
    assert!(doc["operations"]["consumeEvents"]["action"] == "receive");
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50);
    let base = asyncapi_path();
    let base = base.parent().unwrap();
    for r in all {
        if let Some(pointer) = r.strip_prefix('#') {
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        } else {
            let path = base.join(&r);
            assert!(path.is_file(), "{r}: no such file");
            let _: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{r} is not JSON: {e}"));
        }
    }
}

#[test]
fn every_schema_file_is_referenced_and_every_event_version_described() {
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    let referenced: BTreeSet<String> = all
        .iter()
        .filter_map(|r| r.strip_prefix("./schemas/"))
        .map(String::from)
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(schema_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(
        files.difference(&referenced).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "schema files asyncapi.yaml does not reference"
    );
    let messages = doc["components"]["messages"].as_object().unwrap();
    let channel = doc["channels"]["events"]["messages"].as_object().unwrap();
    for d in all_events() {
        let key = file_name(d.event_type, d.version);
        let key = key.trim_end_matches(".json");
        let message = messages
            .get(key)
            .unwrap_or_else(|| panic!("no message {key} in asyncapi.yaml"));
        assert!(channel.contains_key(key), "{key} is not on the channel");
        assert_eq!(message["name"], d.event_type);
        let fixed = &message["payload"]["allOf"][1]["properties"];
        assert_eq!(fixed["event_type"]["const"], d.event_type, "{key}");
        assert_eq!(fixed["event_version"]["const"], d.version, "{key}");
        assert_eq!(fixed["aggregate_type"]["const"], d.aggregate_type, "{key}");
        assert_eq!(
            fixed["payload"]["$ref"],
            format!("./schemas/{}", file_name(d.event_type, d.version)),
            "{key}"
        );
    }
    assert_eq!(
        messages.len(),
        all_events().len(),
        "messages without an event"
    );
}

#[test]
fn headers_are_the_ones_the_relay_writes() {
    let publisher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/src/publisher.rs");
    let source = std::fs::read_to_string(publisher).expect("relay/src/publisher.rs");
    let written: BTreeSet<&str> = source
        .split("key: \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(written.contains("event_type"), "{written:?}");
    let doc = document();
    let described: BTreeSet<&str> = doc["components"]["schemas"]["Headers"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(described, written);
}
