//! Limits every HTTP service puts in front of its routes, so that slow or
//! numerous clients cannot hold the process: a deadline per request (a body
//! trickled byte by byte included) and a bound on requests in flight, past
//! which new ones are shed with 503 at once instead of queueing.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;

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

/// Wraps `router` in the limits.
///
/// The bound is one semaphore for the whole router: `Router::layer` wraps each
/// route on its own, so a plain concurrency limit would bound each route apart.
pub fn limit(router: Router, limits: ServiceLimits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overloaded))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(
                limits.max_in_flight.max(1),
            ))
            .timeout(limits.request_timeout),
    )
}

async fn overloaded(error: BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        return ApiError::RequestTimeout.into_response();
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return ApiError::Unavailable(
            "the server is at its limit of requests in flight; retry".into(),
        )
        .into_response();
    }
    ApiError::internal(anyhow::anyhow!("{error}")).into_response()
}
