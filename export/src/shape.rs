//! What an analyst receives for each stored event: secrets redacted, and (unless
//! the stored shape is asked for) the payload upcast to today's version.

use std::collections::HashSet;

use parley_event_log::EventEnvelope;
use parley_event_schemas::{redact, upcast};

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
        if redact::redact(&event.event_type, &mut event.payload) {
            self.redacted += 1;
        }
        let version = u32::try_from(event.event_version).unwrap_or(0);
        if !upcast::is_known(&event.event_type, version) {
            self.unknown += 1;
            if self
                .warned
                .insert((event.event_type.clone(), event.event_version))
            {
                tracing::warn!(
                    event_type = %event.event_type,
                    event_version = event.event_version,
                    position = event.position,
                    "event type unknown to this release, exported as stored"
                );
            }
            return;
        }
        if self.stored_shape {
            return;
        }
        if let Some(now) = upcast::upcast(&event.event_type, version, &mut event.payload) {
            if now != version {
                self.upcast += 1;
                event.event_version = now as i32;
            }
        }
    }
}
