//! Parley's event contracts: a committed JSON Schema and a golden example payload for
//! every event type and version (see `README.md`). The tests in `tests/contract.rs`
//! keep them in step with `parley_domain::codec::all_events()`.

use std::path::{Path, PathBuf};

pub mod redact;
pub mod upcast;

use parley_domain::codec::EventDescriptor;

/// The folder of committed schemas, `schemas/<EventType>.v<N>.json`.
pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// The AsyncAPI document of the Kafka topic, `asyncapi.yaml`.
pub fn asyncapi_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("asyncapi.yaml")
}

/// The folder of golden example payloads, `examples/<EventType>.v<N>.json`.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The file name of an event version: `<EventType>.v<N>.json`.
pub fn file_name(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}.json")
}

/// The committed schema file of `descriptor`.
pub fn schema_path(descriptor: &EventDescriptor) -> PathBuf {
    schema_dir().join(file_name(descriptor.event_type, descriptor.version))
}

/// The golden example file of `descriptor`.
pub fn example_path(descriptor: &EventDescriptor) -> PathBuf {
    examples_dir().join(file_name(descriptor.event_type, descriptor.version))
}

/// The schema of `descriptor` as committed: pretty JSON with a trailing newline.
///
/// Descriptions (from doc comments) are left out: the committed file pins the shape of
/// a version, and rewording a doc comment must not look like a change of shape.
pub fn render_schema(descriptor: &EventDescriptor) -> String {
    let mut schema = serde_json::Value::from((descriptor.schema)());
    strip_descriptions(&mut schema);
    render_json(&schema)
}

fn strip_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            // Only the keyword: a property that happens to be named "description" is
            // a key of "properties", whose value is a schema object, not a string.
            if map.get("description").is_some_and(|d| d.is_string()) {
                map.remove("description");
            }
            map.values_mut().for_each(strip_descriptions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// Pretty JSON with a trailing newline, the format of every committed file.
pub fn render_json(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values always serialize");
    text.push('\n');
    text
}

/// Splits `<EventType>.v<N>.json` into its type and version.
pub fn parse_file_name(name: &str) -> Option<(&str, u32)> {
    let stem = name.strip_suffix(".json")?;
    let (event_type, version) = stem.rsplit_once(".v")?;
    Some((event_type, version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name("MessageSent", 1), "MessageSent.v1.json");
        assert_eq!(
            parse_file_name("MessageSent.v12.json"),
            Some(("MessageSent", 12))
        );
        assert_eq!(parse_file_name("MessageSent.json"), None);
        assert_eq!(parse_file_name("README.md"), None);
    }

    #[test]
    fn doc_comments_do_not_reach_committed_schemas() {
        for d in parley_domain::codec::all_events() {
            assert!(
                !render_schema(&d).contains("\"description\""),
                "{}",
                d.event_type
            );
        }
    }

    #[test]
    fn rendered_schemas_end_with_a_newline() {
        let all = parley_domain::codec::all_events();
        let text = render_schema(&all[0]);
        assert!(text.ends_with("}\n"));
    }
}
