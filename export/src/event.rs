//! An event on its way out of the log, with its payload still as JSON text.
//!
//! Exports pass most payloads through untouched: decoding every payload into a
//! `serde_json::Value` and encoding it again was most of an export's CPU time.
//! Only the events that shaping changes are parsed ([`crate::shape::Shaper`]).

use parley_event_log::EventEnvelope;

/// An event read for export: the envelope, and the payload as JSON text.
///
/// `envelope.payload` is `null` and unused: the payload is `payload`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportEvent {
    pub envelope: EventEnvelope,
    /// The payload as compact JSON text (no whitespace between tokens).
    pub payload: String,
}

impl ExportEvent {
    /// An event with its payload moved out of the envelope into JSON text.
    pub fn from_envelope(mut envelope: EventEnvelope) -> Self {
        let payload = envelope.payload.take().to_string();
        Self { envelope, payload }
    }
}

/// `text` without the whitespace between JSON tokens: Postgres renders `jsonb` as
/// `{"a": 1, "b": 2}`, and a JSON Lines record must not contain a line break.
///
/// Strings are found with `str::find` (a fast byte search) and copied whole; only
/// the short runs between them are looked at byte by byte.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(quote) = rest.find('"') {
        push_without_whitespace(&mut out, &rest[..quote]);
        let end = quote + string_len(&rest[quote..]);
        out.push_str(&rest[quote..end]);
        rest = &rest[end..];
    }
    push_without_whitespace(&mut out, rest);
    out
}

/// The length of the JSON string at the start of `s` (which starts with `"`),
/// quotes included; all of `s` if it is not closed.
fn string_len(s: &str) -> usize {
    let mut from = 1;
    while let Some(at) = s[from..].find('"') {
        let quote = from + at;
        // Escaped when preceded by an odd number of backslashes.
        let backslashes = s.as_bytes()[..quote]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return quote + 1;
        }
        from = quote + 1;
    }
    s.len()
}

fn push_without_whitespace(out: &mut String, tokens: &str) {
    // Whitespace is ASCII, so this splits only at character boundaries.
    for token in tokens.split([' ', '\n', '\r', '\t']) {
        out.push_str(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_json_drops_whitespace_between_tokens_only() {
        let text = "{\"a b\": [1, 2],\n \"c\": \"x \\\" y\\\\\", \"d\": {\"e\": null}}";
        let compact = compact_json(text);
        assert_eq!(compact, r#"{"a b":[1,2],"c":"x \" y\\","d":{"e":null}}"#);
        let parsed: serde_json::Value = serde_json::from_str(&compact).unwrap();
        assert_eq!(
            parsed,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        assert_eq!(compact_json("\"héllo wörld\""), "\"héllo wörld\"");
        assert_eq!(compact_json(r#"["a\\", " b "]"#), r#"["a\\"," b "]"#);
        assert_eq!(compact_json(" \"open"), "\"open");
    }

    #[test]
    fn from_envelope_moves_the_payload_into_text() {
        let envelope = EventEnvelope {
            event_id: uuid::Uuid::nil(),
            event_type: "MemberLeft".into(),
            event_version: 1,
            aggregate_type: "room".into(),
            aggregate_id: uuid::Uuid::nil(),
            sequence: 1,
            position: 1,
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            metadata: Default::default(),
            payload: json!({"n": 1}),
            tx_id: 0,
        };
        let event = ExportEvent::from_envelope(envelope);
        assert_eq!(event.payload, r#"{"n":1}"#);
        assert!(event.envelope.payload.is_null());
    }
}
