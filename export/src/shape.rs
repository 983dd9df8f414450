//! What an analyst receives for each stored event: secrets redacted, and (unless
//! the stored shape is asked for) the payload upcast to today's version.

use std::collections::HashSet;

use parley_event_log::EventEnvelope;
use parley_event_schemas::{redact, upcast};
use serde_json::Value;

use crate::event::ExportEvent;

/// Shapes events one by one and counts what it did.
#[derive(Debug, Default)]
pub struct Shaper {
    stored_shape: bool,
    warned: HashSet<(String, i32)>,
    /// Events of a type or version this release does not know (passed on as stored).
    pub unknown: u64,
    /// Events that had a field redacted.
    pub redacted: u64,
    /// Events upcast from an older version.
    pub upcast: u64,
}

impl Shaper {
    /// `stored_shape`: keep each payload at the version it was stored with.
    pub fn new(stored_shape: bool) -> Self {
        Self {
            stored_shape,
            ..Self::default()
        }
    }

    /// Redacts secrets, then upcasts a known event to today's version. An unknown
    /// type or version is left as stored, with one warning per type and version.
    pub fn shape(&mut self, event: &mut EventEnvelope) {
        self.shape_payload(
            &event.event_type,
            &mut event.event_version,
            event.position,
            &mut event.payload,
        );
    }

    /// [`shape`](Self::shape) for a payload in JSON text: the payload is parsed
    /// (and encoded again) only when shaping may change it, that is when its type
    /// has a redacted field or it is upcast.
    pub fn shape_text(&mut self, event: &mut ExportEvent) -> anyhow::Result<()> {
        let e = &mut event.envelope;
        let version = u32::try_from(e.event_version).unwrap_or(0);
        let redacts = redact::REDACTED_FIELDS
            .iter()
            .any(|(t, _)| *t == e.event_type);
        let upcasts = !self.stored_shape
            && upcast::is_known(&e.event_type, version)
            && upcast::latest_version(&e.event_type) != Some(version);
        if !redacts && !upcasts {
            self.known(&e.event_type, e.event_version, e.position);
            return Ok(());
        }
        let mut payload: Value = serde_json::from_str(&event.payload)
            .map_err(|err| anyhow::anyhow!("corrupt payload at position {}: {err}", e.position))?;
        self.shape_payload(
            &e.event_type,
            &mut e.event_version,
            e.position,
            &mut payload,
        );
        event.payload = serde_json::to_string(&payload)?;
        Ok(())
    }

    fn shape_payload(
        &mut self,
        event_type: &str,
        event_version: &mut i32,
        position: i64,
        payload: &mut Value,
    ) {
        if redact::redact(event_type, payload) {
            self.redacted += 1;
        }
        if !self.known(event_type, *event_version, position) || self.stored_shape {
            return;
        }
        let version = u32::try_from(*event_version).unwrap_or(0);
        if let Some(now) = upcast::upcast(event_type, version, payload) {
            if now != version {
                self.upcast += 1;
                *event_version = now as i32;
            }
        }
    }

    /// Whether this release knows the type and version; counts (and warns once
    /// per type and version about) the ones it does not.
    fn known(&mut self, event_type: &str, event_version: i32, position: i64) -> bool {
        let version = u32::try_from(event_version).unwrap_or(0);
        if upcast::is_known(event_type, version) {
            return true;
        }
        self.unknown += 1;
        if self.warned.insert((event_type.to_string(), event_version)) {
            tracing::warn!(
                event_type = %event_type,
                event_version = event_version,
                position = position,
                "event type unknown to this release, exported as stored"
            );
        }
        false
    }
}
