//! What every service adds to its router: `GET /metrics` (Prometheus text, from
//! the recorder [`crate::telemetry::install_metrics`] installed), and the
//! request middleware of `parley_http_kit::observe` (an id, a span and a log
//! line per request, counted and timed). Also the samplers of what only the
//! binary can see: database pools (at each scrape) and projection lag (every
//! few seconds).
//!
//! The library crates record their own metrics through the `metrics` facade; the
//! names are listed in docs/metrics.md.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parley_event_log::{PoolStats, SharedLog};
use parley_projections::ReadStore;

pub use parley_http_kit::observe::{HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS};
/// Connections of a database pool, by pool (`log`, `read`) and state (`in_use`, `idle`).
pub const DB_POOL_CONNECTIONS: &str = "parley_db_pool_connections";
/// The most connections a pool opens, by pool.
pub const DB_POOL_MAX_CONNECTIONS: &str = "parley_db_pool_max_connections";
/// How long taking a connection from a pool waited (every pool of the process).
pub const DB_POOL_ACQUIRE_SECONDS: &str = "parley_db_pool_acquire_seconds";

/// How often projection lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// A database pool whose connections are sampled at each scrape.
#[derive(Clone)]
pub enum Pool {
    /// The event log's pool (`pool="log"`).
    Log(SharedLog),
    /// The read models' pool (`pool="read"`).
    Read(ReadStore),
}

impl Pool {
    fn sample(&self) -> Option<(&'static str, PoolStats)> {
        match self {
            Pool::Log(log) => log.pool_stats().map(|stats| ("log", stats)),
            Pool::Read(store) => Some(("read", PoolStats::of(store.pool()))),
        }
    }
}

/// Describes the metrics this module records (Prometheus `HELP` lines).
pub fn describe() {
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
    metrics::describe_histogram!(
        DB_POOL_ACQUIRE_SECONDS,
        metrics::Unit::Seconds,
        "Time a query waited for a database pool connection."
    );
}

/// The services, for what their `/metrics` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Dev,
    CommandApi,
    ReadApi,
    Projector,
    Relay,
}

/// Describes (Prometheus `HELP`) and starts at 0 the metrics `service` records,
/// and only those: a read API does not show the command API's counters.
pub fn describe_service(service: Service) {
    use Service::*;
    if matches!(service, Dev | CommandApi) {
        parley_command_api::metrics::describe();
    }
    if matches!(service, Dev | ReadApi) {
        parley_read_api::metrics::describe();
    }
    if matches!(service, Dev | Projector) {
        parley_projections::metrics::describe();
    }
    if service == Relay {
        parley_kafka::metrics::describe();
    }
}

/// Gives `router` its `GET /metrics` and the request middleware, labelling its
/// requests with `service`; `pools` are sampled at each scrape.
pub fn instrument(router: Router, service: &'static str, pools: Vec<Pool>) -> Router {
    let pools = Arc::new(pools);
    let router = router.route(
        "/metrics",
        get(move || {
            let pools = pools.clone();
            async move { scrape(&pools) }
        }),
    );
    parley_http_kit::observe::track_requests(router, service, parley_projections::traces::enabled())
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
    let body = crate::telemetry::render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Every few seconds, sets each projection's lag behind the log's head
/// (`partition="log"`) until the process ends.
pub fn report_log_lag(log: SharedLog, store: ReadStore, projections: Vec<&'static str>) {
    tokio::spawn(async move {
        loop {
            match (
                log.last_position().await,
                store.checkpoints(&projections).await,
            ) {
                (Ok(head), Ok(checkpoints)) => {
                    for (name, at) in projections.iter().zip(checkpoints) {
                        parley_projections::metrics::set_lag(name, "log", head - at.position);
                    }
                }
                (Err(e), _) => tracing::debug!(error = %e, "cannot read the log head for lag"),
                (_, Err(e)) => tracing::debug!(error = %e, "cannot read checkpoints for lag"),
            }
            tokio::time::sleep(LAG_EVERY).await;
        }
    });
}

/// Every few seconds, sets each projection's lag per Kafka partition (end
/// offset minus next offset, as `parley projections status` prints it) until
/// the process ends. Every member reports every partition, owned or not, so
/// one live member is enough to see a stuck partition; aggregate with `max`.
pub fn report_kafka_lag(
    settings: parley_kafka::KafkaSettings,
    store: ReadStore,
    projections: Vec<&'static str>,
) {
    tokio::spawn(async move {
        loop {
            match parley_kafka::status::partition_lag(&settings, &store, &projections).await {
                Ok(rows) => {
                    for row in rows {
                        parley_projections::metrics::set_lag(
                            &row.projection,
                            &row.partition.to_string(),
                            row.lag,
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the partition lag"),
            }
            tokio::time::sleep(LAG_EVERY).await;
        }
    });
}
