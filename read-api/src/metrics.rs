//! The read API's metrics, recorded through the `metrics` facade (the `parley`
//! binary installs the Prometheus recorder; docs/metrics.md lists every name).

/// Server-Sent Event streams (`GET /v1/stream`) open now.
pub const SSE_CONNECTIONS: &str = "parley_sse_connections";

/// Describes these metrics (Prometheus `HELP` lines); call once the recorder is
/// installed.
pub fn describe() {
    metrics::describe_gauge!(SSE_CONNECTIONS, "Server-Sent Event streams open now.");
    metrics::gauge!(SSE_CONNECTIONS).set(0.0);
}

/// Counts one open stream while it lives.
pub(crate) struct OpenStream(());

impl OpenStream {
    pub(crate) fn new() -> Self {
        metrics::gauge!(SSE_CONNECTIONS).increment(1.0);
        Self(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(SSE_CONNECTIONS).decrement(1.0);
    }
}
