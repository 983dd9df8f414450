//! Projector spans that join the trace of the request that wrote each event.
//!
//! The command API stores its request span's W3C `traceparent` in each event's
//! metadata (and the relay copies it into a Kafka header). When the process
//! exports traces (`PARLEY_OTLP_ENDPOINT`), every committed batch gives one
//! `project <projection>` span per event that carries one, as a child of that
//! request's span. Off (one atomic load per batch) otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::Extractor;
use parley_event_log::EventEnvelope;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns projector spans on (the process installed an OpenTelemetry layer and
/// the W3C propagator).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A lone `traceparent` value, as the propagator reads headers.
struct TraceParent<'a>(&'a str);

impl Extractor for TraceParent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The span context a `traceparent` value names (invalid values give an empty
/// context: the span then starts a trace of its own).
pub fn parent_of(traceparent: &str) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&TraceParent(traceparent)))
}

/// After `projection` committed `batch` (in `took`): a span per traced event.
pub(crate) fn projected(projection: &str, batch: &[EventEnvelope], took: Duration) {
    if !enabled() {
        return;
    }
    for event in batch {
        let Some(traceparent) = event.metadata.traceparent.as_deref() else {
            continue;
        };
        let span = tracing::info_span!(
            "project",
            otel.name = %format!("project {projection}"),
            otel.kind = "consumer",
            projection,
            event_type = %event.event_type,
            event_id = %event.event_id,
            position = event.position,
            batch_size = batch.len(),
            batch_ms = took.as_millis() as u64,
        );
        if span.set_parent(parent_of(traceparent)).is_err() {
            tracing::debug!("projector span could not join its trace");
        }
    }
}
