//! Fields that never leave Parley in an export or a tail.
//!
//! The event log keeps them (the write side needs `password_hash` to log users in),
//! but an analyst's file must not: each is replaced by `null`.

use serde_json::Value;

/// `(event type, payload field)` pairs that are redacted, in every version.
pub const REDACTED_FIELDS: &[(&str, &str)] = &[("UserRegistered", "password_hash")];

/// Replaces the secret fields of a payload of `event_type` with `null`; returns
/// whether anything was redacted.
pub fn redact(event_type: &str, payload: &mut Value) -> bool {
    let mut redacted = false;
    for (t, field) in REDACTED_FIELDS {
        if *t != event_type {
            continue;
        }
        if let Some(value) = payload.get_mut(*field) {
            if !value.is_null() {
                *value = Value::Null;
                redacted = true;
            }
        }
    }
    redacted
}

/// Whether a field name looks like a secret (used by the test that keeps
/// [`REDACTED_FIELDS`] complete).
pub fn looks_secret(field: &str) -> bool {
    let field = field.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "hash",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|word| field.contains(word))
}
