//! What every service serves at `GET /metrics`: the Prometheus text of the
//! process's one recorder ([`install_recorder`]), with the database pools
//! sampled at each scrape.
//!
//! metrics-exporter-prometheus is used render-only: each service already has an
//! HTTP server, so `/metrics` is one more axum route instead of a second
//! listener. The library crates record through the `metrics` facade; the names
//! are listed in docs/metrics.md.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parley_event_log::{PoolStats, SharedLog};

/// Connections of a database pool, by pool (`log`, `read`) and state (`in_use`, `idle`).
pub const DB_POOL_CONNECTIONS: &str = "parley_db_pool_connections";
/// The most connections a pool opens, by pool.
pub const DB_POOL_MAX_CONNECTIONS: &str = "parley_db_pool_max_connections";
/// How long taking a connection from a pool waited (every pool of the process).
pub const DB_POOL_ACQUIRE_SECONDS: &str = "parley_db_pool_acquire_seconds";

/// Histogram buckets (seconds) of every latency Parley records: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// How often histogram samples are folded in when nothing scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder: from now on every
/// `metrics::counter!` (in any crate) lands in what `/metrics` serves. Must run
/// inside the tokio runtime (a task folds in histogram samples between
/// scrapes, so they never pile up).
pub fn install_recorder() -> anyhow::Result<()> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            upkeep.run_upkeep();
        }
    });
    let _ = RECORDER.set(handle);
    describe();
    Ok(())
}

/// The Prometheus text exposition of every metric recorded so far (empty
/// without a recorder).
pub fn render() -> String {
    RECORDER
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Describes the metrics every service records (Prometheus `HELP` lines).
fn describe() {
    use crate::observe::{HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS};
    metrics::describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests answered.");
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request (to open it, for a stream)."
    );
    metrics::describe_gauge!(DB_POOL_CONNECTIONS, "Connections of a database pool.");
    metrics::describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        "The most connections a database pool opens."
    );
    metrics::describe_gauge!(
        parley_event_log::pg::horizon::LOG_TAIL_HELD_SECONDS,
        metrics::Unit::Seconds,
        "How long the oldest transaction that may still append events has run (0: none)."
    );
    metrics::describe_histogram!(
        DB_POOL_ACQUIRE_SECONDS,
        metrics::Unit::Seconds,
        "Time a query waited for a database pool connection."
    );
}

/// A database pool whose connections are sampled at each scrape.
#[derive(Clone)]
pub enum Pool {
    /// The event log's pool (`pool="log"`).
    Log(SharedLog),
    /// The read models' pool (`pool="read"`).
    Read(sqlx::AnyPool),
}

impl Pool {
    fn sample(&self) -> Option<(&'static str, PoolStats)> {
        match self {
            Pool::Log(log) => log.pool_stats().map(|stats| ("log", stats)),
            Pool::Read(pool) => Some(("read", PoolStats::of(pool))),
        }
    }
}

/// Gives `router` its `GET /metrics`, sampling `pools` at each scrape.
pub fn route(router: Router, pools: Vec<Pool>) -> Router {
    let pools = Arc::new(pools);
    router.route(
        "/metrics",
        get(move || {
            let pools = pools.clone();
            async move { scrape(&pools) }
        }),
    )
}

/// The Prometheus text exposition of everything recorded, pools sampled first.
fn scrape(pools: &[Pool]) -> Response {
    for (name, stats) in pools.iter().filter_map(Pool::sample) {
        metrics::gauge!(DB_POOL_CONNECTIONS, "pool" => name, "state" => "in_use")
            .set(f64::from(stats.in_use));
        metrics::gauge!(DB_POOL_CONNECTIONS, "pool" => name, "state" => "idle")
            .set(f64::from(stats.idle));
        metrics::gauge!(DB_POOL_MAX_CONNECTIONS, "pool" => name).set(f64::from(stats.max));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        render(),
    )
        .into_response()
}
