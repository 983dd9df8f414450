//! The read API's error type, answered as RFC 9457 problem+json.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parley_command_api::problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// Asked for something no longer kept (a stream resume past its window).
    #[error("{0}")]
    Gone(String),
    #[error("rate limit exceeded, retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("the read model has not caught up with this write within {waited_ms} ms; retry")]
    NotCaughtUp { waited_ms: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ReadError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ReadError::Internal(e.into())
    }

    fn status_and_slug(&self) -> (StatusCode, &'static str) {
        match self {
            ReadError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ReadError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ReadError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            ReadError::Gone(_) => (StatusCode::GONE, "resume-window-passed"),
            ReadError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ReadError::NotCaughtUp { .. } => (StatusCode::GATEWAY_TIMEOUT, "not-caught-up"),
            ReadError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ReadError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        if is_missing_table(&e) {
            // A read API started before any projector made the models' tables
            // (a fresh deployment): nothing is broken, it is just early.
            tracing::warn!(error = %e, "read model tables missing");
            return ReadError::Unavailable(
                "the read models are not set up yet: no projector has run against this read database; retry once one has"
                    .into(),
            );
        }
        ReadError::Internal(e.into())
    }
}

/// Whether the store answered that a table does not exist (Postgres SQLSTATE
/// 42P01; SQLite "no such table").
pub(crate) fn is_missing_table(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code().as_deref() == Some("42P01") || db.message().starts_with("no such table")
}

impl From<parley_command_api::ApiError> for ReadError {
    fn from(e: parley_command_api::ApiError) -> Self {
        match e {
            parley_command_api::ApiError::Unauthorized(m) => ReadError::Unauthorized(m),
            parley_command_api::ApiError::TooManyRequests { retry_after_secs } => {
                ReadError::TooManyRequests { retry_after_secs }
            }
            other => ReadError::Internal(other.into()),
        }
    }
}

impl From<QueryRejection> for ReadError {
    fn from(r: QueryRejection) -> Self {
        ReadError::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ReadError {
    fn from(r: PathRejection) -> Self {
        ReadError::BadRequest(format!("invalid path parameter: {}", r.body_text()))
    }
}

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        let (status, slug) = self.status_and_slug();
        if let ReadError::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error");
        }
        let problem = Problem {
            kind: format!("https://parley.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            field: None,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ReadError::TooManyRequests { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// `axum::extract::Path`, rejecting with a 400 problem (axum's own answer is
/// plain text).
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ReadError))]
pub struct ReadPath<T>(pub T);

/// `axum::extract::Query`, rejecting with a 400 problem.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ReadError))]
pub struct ReadQuery<T>(pub T);
