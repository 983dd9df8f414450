//! The event contract: committed schemas and golden examples match today's code.
//!
//! `UPDATE_SCHEMAS=1 cargo test -p parley-event-schemas` writes missing or changed
//! schema files and missing example files. Never use it to change a committed version's
//! schema: a change of shape needs a new version (see README.md).

use std::collections::BTreeSet;
use std::fs;

use parley_domain::codec::{all_events, AnyEvent, EventCodec, EventDescriptor};
use parley_event_schemas::{
    example_path, examples_dir, parse_file_name, render_json, render_schema, schema_dir,
    schema_path,
};

const UPDATE_HINT: &str = "run `UPDATE_SCHEMAS=1 cargo test -p parley-event-schemas` \
     (only for a NEW event version: a committed version's schema must never change)";

fn updating() -> bool {
    std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v != "0" && !v.is_empty())
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn committed_files(dir: &std::path::Path) -> BTreeSet<(String, u32)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .map(|name| {
            let (event_type, version) = parse_file_name(&name)
                .unwrap_or_else(|| panic!("{name}: expected <EventType>.v<N>.json"));
            (event_type.to_owned(), version)
        })
        .collect()
}

fn descriptor_keys() -> BTreeSet<(String, u32)> {
    all_events()
        .iter()
        .map(|d| (d.event_type.to_owned(), d.version))
        .collect()
}

#[test]
fn committed_schemas_match_the_rust_types() {
    let mut stale = Vec::new();
    for descriptor in all_events() {
        let path = schema_path(&descriptor);
        let fresh = render_schema(&descriptor);
        let committed = fs::read_to_string(&path).ok();
        if committed.as_deref() == Some(fresh.as_str()) {
            continue;
        }
        if updating() {
            fs::create_dir_all(schema_dir()).unwrap();
            fs::write(&path, fresh).unwrap();
            eprintln!("wrote {}", path.display());
        } else {
            stale.push(format!(
                "{} v{} ({})",
                descriptor.event_type,
                descriptor.version,
                if committed.is_some() {
                    "changed"
                } else {
                    "missing"
                }
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "event schemas differ from the committed files: {}.\n\
         If you added an event or a version, {UPDATE_HINT}.\n\
         If you changed the shape of an existing version, revert it and add a new version.",
        stale.join(", ")
    );
}

#[test]
fn golden_examples_exist_for_every_event_version() {
    let mut missing = Vec::new();
    for descriptor in all_events() {
        let path = example_path(&descriptor);
        if path.exists() {
            continue;
        }
        if updating() {
            // Written once from the fixed example values; never overwritten.
            fs::create_dir_all(examples_dir()).unwrap();
            fs::write(&path, render_json(&(descriptor.example)())).unwrap();
            eprintln!("wrote {}", path.display());
        } else {
            missing.push(format!("{} v{}", descriptor.event_type, descriptor.version));
        }
    }
    assert!(
        missing.is_empty(),
        "golden examples missing: {}; {UPDATE_HINT}",
        missing.join(", ")
    );
}

#[test]
fn no_committed_file_lacks_a_descriptor() {
    // Old versions stay readable: their descriptors must not disappear.
    let known = descriptor_keys();
    for (dir, what) in [(schema_dir(), "schema"), (examples_dir(), "example")] {
        let orphans: Vec<_> = committed_files(&dir)
            .difference(&known)
            .map(|(t, v)| format!("{t}.v{v}.json"))
            .collect();
        assert!(
            orphans.is_empty(),
            "committed {what} files without an event descriptor in \
             parley_domain::codec::all_events(): {orphans:?}. An event version that was \
             ever written must stay decodable (keep it and upcast it)."
        );
    }
}

#[test]
fn versions_have_no_gaps() {
    // v(N) committed means v1..v(N-1) are still there: old versions are never dropped.
    let committed = committed_files(&schema_dir());
    for (event_type, version) in &committed {
        for older in 1..*version {
            assert!(
                committed.contains(&(event_type.clone(), older)),
                "{event_type}.v{older}.json is missing but v{version} exists"
            );
        }
    }
}

fn validator(descriptor: &EventDescriptor) -> jsonschema::Validator {
    let schema = read_json(&schema_path(descriptor));
    jsonschema::validator_for(&schema).unwrap_or_else(|e| {
        panic!(
            "{} is not a valid JSON Schema: {e}",
            schema_path(descriptor).display()
        )
    })
}

fn validation_errors(validator: &jsonschema::Validator, value: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn golden_examples_decode_and_match_their_schema() {
    for descriptor in all_events() {
        let path = example_path(&descriptor);
        if !path.exists() {
            continue; // reported by golden_examples_exist_for_every_event_version
        }
        let example = read_json(&path);
        let event = AnyEvent::from_payload(descriptor.event_type, descriptor.version, &example)
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
        assert_eq!(event.aggregate_type(), descriptor.aggregate_type);
        if !schema_path(&descriptor).exists() {
            continue; // reported by committed_schemas_match_the_rust_types
        }
        let errors = validation_errors(&validator(&descriptor), &example);
        assert!(
            errors.is_empty(),
            "{} breaks its schema: {errors:?}",
            path.display()
        );
    }
}

#[test]
fn todays_payloads_match_the_committed_schema() {
    // What the code writes now must be valid under the schema readers rely on.
    for descriptor in all_events() {
        if !schema_path(&descriptor).exists() {
            continue;
        }
        let payload = (descriptor.example)();
        let errors = validation_errors(&validator(&descriptor), &payload);
        assert!(
            errors.is_empty(),
            "{} v{}: {errors:?}",
            descriptor.event_type,
            descriptor.version
        );
    }
}

#[test]
fn schemas_reject_payloads_missing_a_required_field() {
    // Guards against schemas that accept anything (e.g. an empty schema).
    for descriptor in all_events() {
        if !schema_path(&descriptor).exists() {
            continue;
        }
        let validator = validator(&descriptor);
        let example = (descriptor.example)();
        let required = read_json(&schema_path(&descriptor))["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !required.is_empty(),
            "{} has no required fields",
            descriptor.event_type
        );
        for field in required {
            let mut payload = example.clone();
            payload
                .as_object_mut()
                .unwrap()
                .remove(field.as_str().unwrap());
            assert!(
                !validator.is_valid(&payload),
                "{} accepts a payload without {field}",
                descriptor.event_type
            );
        }
    }
}
