//! The JSON Lines record of one event, written by hand.
//!
//! `serde_json` over the envelope spent most of a JSON Lines export's own CPU
//! time in generic formatting: the timestamp through `chrono`'s `Display`
//! machinery, each UUID through `collect_str`, each string through the escaper.
//! This writes the same bytes directly: the fields in the envelope's order, the
//! metadata's fields only when set, and the payload's JSON text as it is. The
//! tests check it against `serde_json` byte for byte.

use chrono::{DateTime, Datelike, Timelike, Utc};
use parley_event_log::{EventEnvelope, Metadata};
use uuid::Uuid;

/// Appends `envelope` as compact JSON, with `payload` (JSON text) as its
/// payload, exactly as `serde_json::to_writer` would write the envelope.
pub fn write_envelope(out: &mut Vec<u8>, envelope: &EventEnvelope, payload: &str) {
    let e = envelope;
    out.extend_from_slice(b"{\"event_id\":");
    uuid(out, &e.event_id);
    out.extend_from_slice(b",\"event_type\":");
    string(out, &e.event_type);
    out.extend_from_slice(b",\"event_version\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.event_version).as_bytes());
    out.extend_from_slice(b",\"aggregate_type\":");
    string(out, &e.aggregate_type);
    out.extend_from_slice(b",\"aggregate_id\":");
    uuid(out, &e.aggregate_id);
    out.extend_from_slice(b",\"sequence\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.sequence).as_bytes());
    out.extend_from_slice(b",\"position\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.position).as_bytes());
    out.extend_from_slice(b",\"recorded_at\":");
    timestamp(out, &e.recorded_at);
    out.extend_from_slice(b",\"metadata\":");
    metadata(out, &e.metadata);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.as_bytes());
    out.push(b'}');
}

fn metadata(out: &mut Vec<u8>, m: &Metadata) {
    out.push(b'{');
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    if let Some(actor) = &m.actor_id {
        key(out, "actor_id");
        uuid(out, actor);
    }
    for (name, value) in [
        ("correlation_id", &m.correlation_id),
        ("causation_id", &m.causation_id),
        ("idempotency_key", &m.idempotency_key),
        ("traceparent", &m.traceparent),
        ("request_id", &m.request_id),
    ] {
        if let Some(value) = value {
            key(out, name);
            string(out, value);
        }
    }
    out.push(b'}');
}

fn uuid(out: &mut Vec<u8>, id: &Uuid) {
    out.push(b'"');
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
}

/// A JSON string: copied as it is unless something in it needs escaping.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// As `chrono` serializes a UTC time: `2026-11-21T09:05:03.123456Z`, with 0, 3,
/// 6 or 9 digits of fraction, whichever shows it exactly.
fn timestamp(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    let (date, time) = (at.date_naive(), at.time());
    let nanos = time.nanosecond();
    if !(0..=9999).contains(&date.year()) || nanos >= 1_000_000_000 {
        // Years chrono writes with a sign, and leap seconds: the slow path.
        serde_json::to_writer(&mut *out, at).expect("writing to a Vec cannot fail");
        return;
    }
    out.push(b'"');
    digits(out, date.year() as u32, 4);
    out.push(b'-');
    digits(out, date.month(), 2);
    out.push(b'-');
    digits(out, date.day(), 2);
    out.push(b'T');
    digits(out, time.hour(), 2);
    out.push(b':');
    digits(out, time.minute(), 2);
    out.push(b':');
    digits(out, time.second(), 2);
    if nanos != 0 {
        out.push(b'.');
        if nanos % 1_000_000 == 0 {
            digits(out, nanos / 1_000_000, 3);
        } else if nanos % 1_000 == 0 {
            digits(out, nanos / 1_000, 6);
        } else {
            digits(out, nanos, 9);
        }
    }
    out.extend_from_slice(b"Z\"");
}

/// `n` in exactly `width` decimal digits, zero-padded (`n` must fit).
fn digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn envelope(recorded_at: DateTime<Utc>, metadata: Metadata) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: "MessageSent".into(),
            event_version: 2,
            aggregate_type: "message".into(),
            aggregate_id: Uuid::new_v4(),
            sequence: 7,
            position: 1_234_567_890_123,
            recorded_at,
            metadata,
            payload: json!({"body": "hé \"quoted\"\n", "n": [1, 2.5, null]}),
            tx_id: 42,
        }
    }

    fn by_hand(e: &EventEnvelope) -> String {
        let mut out = Vec::new();
        write_envelope(&mut out, e, &e.payload.to_string());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_what_serde_writes() {
        let base = Utc.with_ymd_and_hms(2026, 11, 21, 9, 5, 3).unwrap();
        let times = [
            base,
            base + chrono::Duration::milliseconds(120),
            base + chrono::Duration::microseconds(123_456),
            base + chrono::Duration::microseconds(100),
            base + chrono::Duration::nanoseconds(5),
            base + chrono::Duration::nanoseconds(999_999_999),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap(),
        ];
        let metadatas = [
            Metadata::default(),
            Metadata {
                actor_id: Some(Uuid::new_v4()),
                ..Metadata::default()
            },
            Metadata {
                correlation_id: Some("req \"1\"\t\\".into()),
                request_id: Some("r-1".into()),
                ..Metadata::default()
            },
            Metadata {
                actor_id: Some(Uuid::new_v4()),
                correlation_id: Some("c".into()),
                causation_id: Some("cause".into()),
                idempotency_key: Some("ключ \u{1}".into()),
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                request_id: Some("r".into()),
            },
        ];
        for at in times {
            for m in &metadatas {
                let e = envelope(at, m.clone());
                assert_eq!(by_hand(&e), serde_json::to_string(&e).unwrap());
            }
        }
        let mut odd = envelope(base, Metadata::default());
        odd.event_type = "Tab\there \"and\" back\\slash".into();
        odd.aggregate_type = "émoji 🎉".into();
        odd.event_version = -3;
        odd.sequence = i64::MIN;
        odd.position = i64::MAX;
        assert_eq!(by_hand(&odd), serde_json::to_string(&odd).unwrap());
    }
}
