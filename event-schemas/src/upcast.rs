//! Today's shape of any stored payload, at the JSON level.
//!
//! The domain codec (`parley_domain::codec`) upcasts old versions while decoding into
//! Rust types; readers that pass JSON through without decoding it (exports, the
//! topic tail) use [`upcast`] instead. `tests/upcast.rs` checks that both agree on
//! every golden example, so an analyst sees exactly what a projector sees.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// One step: turns a payload of `(event_type, from)` into `from + 1`.
struct Step {
    event_type: &'static str,
    from: u32,
    apply: fn(&mut Map<String, Value>),
}

/// Every upcast step, oldest first. A new version of an event adds its step here
/// (and a `legacy` arm in the domain codec); the tests fail until both exist.
const STEPS: &[Step] = &[
    Step {
        event_type: "MessageSent",
        from: 1,
        // v2 added the body's format; every message before it was plain text.
        apply: |payload| {
            payload
                .entry("format")
                .or_insert_with(|| Value::from("plain"));
        },
    },
    Step {
        event_type: "UserRegistered",
        from: 1,
        // v2 dropped the password hash: it lives in the credentials store.
        apply: |payload| {
            payload.remove("password_hash");
        },
    },
];

/// The version today's code writes, per event type.
fn latest() -> &'static HashMap<&'static str, u32> {
    static LATEST: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    LATEST.get_or_init(|| {
        let mut map = HashMap::new();
        for d in parley_domain::codec::all_events() {
            let v = map.entry(d.event_type).or_insert(d.version);
            *v = (*v).max(d.version);
        }
        map
    })
}

/// The version of `event_type` written today, or `None` for a type this release
/// does not know.
pub fn latest_version(event_type: &str) -> Option<u32> {
    latest().get(event_type).copied()
}

/// Whether this release knows `event_type` at `version`.
pub fn is_known(event_type: &str, version: u32) -> bool {
    latest_version(event_type).is_some_and(|latest| (1..=latest).contains(&version))
}

/// Brings a stored payload to today's version of its type, in place, and returns
/// that version. `None` (payload untouched) when the type or version is unknown to
/// this release, or the payload is not an object: the caller passes it on as stored.
pub fn upcast(event_type: &str, version: u32, payload: &mut Value) -> Option<u32> {
    if !is_known(event_type, version) {
        return None;
    }
    let latest = latest_version(event_type)?;
    if version == latest {
        return Some(version);
    }
    let object = payload.as_object_mut()?;
    let mut at = version;
    while at < latest {
        let step = STEPS
            .iter()
            .find(|s| s.event_type == event_type && s.from == at)?;
        (step.apply)(object);
        at += 1;
    }
    Some(at)
}

/// Whether every old version of every event has a path to today's (tested).
pub fn missing_steps() -> Vec<(String, u32)> {
    parley_domain::codec::all_events()
        .iter()
        .filter(|d| Some(d.version) != latest_version(d.event_type))
        .filter(|d| {
            !STEPS
                .iter()
                .any(|s| s.event_type == d.event_type && s.from == d.version)
        })
        .map(|d| (d.event_type.to_owned(), d.version))
        .collect()
}
