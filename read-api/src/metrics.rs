//! The read API's metrics, recorded through the `metrics` facade (the `parley`
//! binary installs the Prometheus recorder; docs/metrics.md lists every name).

/// Server-Sent Event streams (`GET /v1/stream`) open now.
pub const SSE_CONNECTIONS: &str = "parley_sse_connections";

/// WebSockets (`GET /v1/ws`) open now.
pub const WS_CONNECTIONS: &str = "parley_ws_connections";

/// WebSockets the server closed, by `reason`: `slow` (a slow consumer, closed
/// with a resume hint), `idle`, `abuse` (too many refused frames),
/// `shutdown`, `auth`.
pub const WS_CLOSED: &str = "parley_ws_closed_total";

/// The reasons of [`WS_CLOSED`].
const WS_CLOSE_REASONS: [&str; 5] = ["slow", "idle", "abuse", "shutdown", "auth"];

/// Counts one socket the server closed.
pub(crate) fn ws_closed(reason: &'static str) {
    metrics::counter!(WS_CLOSED, "reason" => reason).increment(1);
}

/// Pages asked of the read API's cache (see [`crate::cache`]), by `page`
/// (`history`, `rooms`) and `result`: `hit` (served from memory), `miss` (read
/// from the database and kept) or `bypass` (a request the cache may not serve:
/// with a consistency token, an older page, or no commit notifications).
pub const CACHE_LOOKUPS: &str = "parley_read_cache_lookups_total";

/// Counts one answer of a cacheable kind of page.
pub(crate) fn cache_lookup(page: &'static str, result: &'static str) {
    metrics::counter!(CACHE_LOOKUPS, "page" => page, "result" => result).increment(1);
}

/// Describes these metrics (Prometheus `HELP` lines); call once the recorder is
/// installed.
pub fn describe() {
    metrics::describe_gauge!(SSE_CONNECTIONS, "Server-Sent Event streams open now.");
    metrics::gauge!(SSE_CONNECTIONS).set(0.0);
    metrics::describe_gauge!(WS_CONNECTIONS, "WebSockets open now.");
    metrics::gauge!(WS_CONNECTIONS).set(0.0);
    metrics::describe_counter!(
        WS_CLOSED,
        "WebSockets the server closed, by reason (slow, idle, abuse, shutdown, auth)."
    );
    // Every reason from the start, so that a rate over them has a series
    // before the first close (the slow-consumer alert reads one).
    for reason in WS_CLOSE_REASONS {
        metrics::counter!(WS_CLOSED, "reason" => reason).absolute(0);
    }
    metrics::describe_counter!(
        CACHE_LOOKUPS,
        "Cacheable pages asked for, by page kind and result (hit, miss, bypass)."
    );
}

/// Counts one open stream (`gauge`: SSE or WebSocket) while it lives.
pub(crate) struct OpenStream(&'static str);

impl OpenStream {
    pub(crate) fn new() -> Self {
        Self::of(SSE_CONNECTIONS)
    }

    pub(crate) fn of(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}
