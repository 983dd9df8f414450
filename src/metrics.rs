//! What every service adds to its router: `GET /metrics` (Prometheus text, from
//! the recorder [`crate::telemetry::install_metrics`] installed), and one
//! middleware that gives each request an id, a span and a log line, and counts
//! and times it. Also the samplers of what only the binary can see: database
//! pools (at each scrape) and projection lag (every few seconds).
//!
//! The library crates record their own metrics through the `metrics` facade; the
//! names are listed in docs/metrics.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parley_event_log::{PoolStats, SharedLog};
use parley_projections::ReadStore;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::Instrument;

/// HTTP requests answered, by service, route template, method and status.
pub const HTTP_REQUESTS_TOTAL: &str = "parley_http_requests_total";
/// Time to answer (for `/v1/stream`: to open the stream), by service, route and method.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "parley_http_request_duration_seconds";
/// Connections of a database pool, by pool (`log`, `read`) and state (`in_use`, `idle`).
pub const DB_POOL_CONNECTIONS: &str = "parley_db_pool_connections";
/// The most connections a pool opens, by pool.
pub const DB_POOL_MAX_CONNECTIONS: &str = "parley_db_pool_max_connections";
/// How long taking a connection from a pool waited (every pool of the process).
pub const DB_POOL_ACQUIRE_SECONDS: &str = "parley_db_pool_acquire_seconds";

/// How often projection lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// The route label of requests no route matched (never the raw path: cardinality).
const UNMATCHED: &str = "unmatched";

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
    router
        .route(
            "/metrics",
            get(move || {
                let pools = pools.clone();
                async move { scrape(&pools) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(service, track))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
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

/// A request id for requests that came without `X-Request-Id`: a UUIDv7, so ids
/// sort by time like the events they end up in.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn header_value(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A method label with few values: the standard methods, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Makes `span` a child of the caller's W3C `traceparent` (if any), and puts
/// `span`'s own context into the request's `traceparent` header, which the
/// command API stores in event metadata: the projectors' spans then hang under
/// this request.
fn continue_trace(span: &tracing::Span, request: &mut Request) {
    use opentelemetry_http::{HeaderExtractor, HeaderInjector};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(request.headers()))
    });
    if span.set_parent(parent).is_err() {
        tracing::debug!("request span could not join the caller's trace");
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(request.headers_mut()))
    });
}

/// The request middleware: a span carrying the request and correlation ids, the
/// route and (recorded by the authenticating extractors) the user id; one log
/// line when the answer is ready; the request counter and latency histogram.
async fn track(State(service): State<&'static str>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |p| p.as_str())
        .to_string();
    let request_id = header_value(&request, "x-request-id").unwrap_or_default();
    // The command API puts the same default into event metadata (see its `meta`).
    let correlation_id =
        header_value(&request, "x-correlation-id").unwrap_or_else(|| request_id.clone());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        service,
        request_id,
        correlation_id,
        method,
        route = %route,
        user_id = tracing::field::Empty,
    );
    if parley_projections::traces::enabled() {
        continue_trace(&span, &mut request);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    metrics::counter!(
        HTTP_REQUESTS_TOTAL,
        "service" => service,
        "route" => route.clone(),
        "method" => method,
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        "service" => service,
        "route" => route.clone(),
        "method" => method
    )
    .record(took.as_secs_f64());
    // Whole microseconds, so the line reads 4.213 rather than 4.213000000000001.
    let latency_ms = took.as_micros() as f64 / 1000.0;
    span.in_scope(|| {
        // Probes and scrapes come every few seconds: only at debug level.
        if route == "/metrics" || route.starts_with("/health") {
            tracing::debug!(status, latency_ms, "request");
        } else {
            tracing::info!(status, latency_ms, "request");
        }
    });
    response
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
