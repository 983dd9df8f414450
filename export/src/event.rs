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
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            // Whitespace is ASCII, so `i` and `i + 1` are character boundaries.
            out.push_str(&text[start..i]);
            start = i + 1;
        }
    }
    out.push_str(&text[start..]);
    out
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
