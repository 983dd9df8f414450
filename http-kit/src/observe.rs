//! The request middleware every service runs: each request gets an id
//! (`X-Request-Id`, made when missing and sent back), a span carrying it, the
//! correlation id, the route and (recorded by the `Caller` extractor) the user,
//! joined to the caller's W3C trace when traces are exported; one log line
//! when the answer is ready; and the request counter and latency histogram.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::Instrument;

/// HTTP requests answered, by service, route template, method and status.
pub const HTTP_REQUESTS_TOTAL: &str = "parley_http_requests_total";
/// Time to answer (for `/v1/stream`: to open the stream), by service, route and method.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "parley_http_request_duration_seconds";

/// The route label of requests no route matched (never the raw path: cardinality).
const UNMATCHED: &str = "unmatched";

/// Wraps `router` in the middleware, labelling its requests with `service`;
/// `join_traces` when the process exports traces (the request span then
/// continues the caller's `traceparent` and passes its own on).
pub fn track_requests(router: Router, service: &'static str, join_traces: bool) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            Tracking {
                service,
                join_traces,
            },
            track,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
}

#[derive(Clone, Copy)]
struct Tracking {
    service: &'static str,
    join_traces: bool,
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
async fn track(State(tracking): State<Tracking>, mut request: Request, next: Next) -> Response {
    let service = tracking.service;
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
    if tracking.join_traces {
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
