//! The read API's metrics, recorded through the `metrics` facade (the `parley`
//! binary installs the Prometheus recorder; docs/metrics.md lists every name).

/// Server-Sent Event streams (`GET /v1/stream`) open now.
pub const SSE_CONNECTIONS: &str = "parley_sse_connections";

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
    metrics::describe_counter!(
        CACHE_LOOKUPS,
        "Cacheable pages asked for, by page kind and result (hit, miss, bypass)."
    );
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
