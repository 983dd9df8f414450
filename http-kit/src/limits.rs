//! Limits every HTTP service puts in front of its routes, so that slow or
//! numerous clients cannot hold the process: a deadline per request (a body
//! trickled byte by byte included) and a bound on requests in flight, past
//! which new ones are shed with 503 at once instead of queueing.

use std::future::Future;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::problem::ApiError;

/// What the limits are.
#[derive(Debug, Clone, Copy)]
pub struct ServiceLimits {
    /// How long one request may take until its answer starts (reading its body
    /// included); 408 after. A live stream's body is not counted. A command
    /// already handed to the event log may still commit after its 408: retry
    /// with the same message id or `Idempotency-Key`.
    pub request_timeout: Duration,
    /// Requests handled at once; more are answered 503 with `Retry-After`.
    pub max_in_flight: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
        }
    }
}

/// Counts requests refused by the limits (they never reach the routes, so
/// `parley_http_requests_total` does not see them), by `reason`: `in_flight`
/// (503) or `timeout` (408).
pub const REQUESTS_REFUSED_TOTAL: &str = "parley_http_requests_refused_total";

/// The limits of one process, applied once per request around the whole
/// router by the accept loop.
///
/// Not tower's timeout, load-shed and concurrency-limit layers on the router:
/// `Router::layer` wraps every route apart, and the wrapping alone (cloning
/// and boxing per request) cost about 8% of the read API's throughput in
/// `parley-bench queries`, an empty middleware as much as the full one.
#[derive(Debug)]
pub struct Limiter {
    in_flight: Semaphore,
    request_timeout: Duration,
}

impl Limiter {
    pub fn new(limits: ServiceLimits) -> Self {
        Self {
            in_flight: Semaphore::new(limits.max_in_flight.max(1)),
            request_timeout: limits.request_timeout,
        }
    }

    /// Runs `answer` (the router's handling of one request) within the limits:
    /// 503 at once when too many are in flight, 408 when the answer has not
    /// started by the deadline (the body's upload counts, as the handler reads
    /// it). The slot is held until the answer starts.
    pub async fn run(&self, answer: impl Future<Output = Response>) -> Response {
        let Ok(_slot) = self.in_flight.try_acquire() else {
            metrics::counter!(REQUESTS_REFUSED_TOTAL, "reason" => "in_flight").increment(1);
            return ApiError::Unavailable(
                "the server is at its limit of requests in flight; retry".into(),
            )
            .into_response();
        };
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(response) => response,
            Err(_) => {
                metrics::counter!(REQUESTS_REFUSED_TOTAL, "reason" => "timeout").increment(1);
                ApiError::RequestTimeout.into_response()
            }
        }
    }
}
