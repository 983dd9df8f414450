//! One error type for every HTTP service, answered as RFC 9457 problem+json,
//! and the one mapping from the errors below it (domain, event log, store,
//! extractors) to statuses.
//!
//! Domain errors map to 4xx, conflicts to 409 (after server-side retries), and
//! infrastructure errors to an opaque 500 that is logged with its cause.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parley_domain::error::DomainError;
use parley_event_log::LogError;
use serde::Serialize;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// Asked for something no longer kept (a stream resume past its window).
    #[error("{0}")]
    ResumeWindowPassed(String),
    /// An id already names a resource of another kind (409): ids never change kind.
    #[error("id {0} is already used by another kind of resource")]
    IdOfAnotherKind(uuid::Uuid),
    #[error("the request took longer than the server allows; retry")]
    RequestTimeout,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unprocessable {
        field: Option<String>,
        message: String,
    },
    #[error("rate limit exceeded, retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// A read with a consistency token whose write the read models had not
    /// applied in time.
    #[error("the read model has not caught up with this write within {waited_ms} ms; retry")]
    NotCaughtUp { waited_ms: u64 },
    /// Logged with its cause; the client only sees an opaque message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, for 422 answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::IdOfAnotherKind(_) => StatusCode::CONFLICT,
            ApiError::ResumeWindowPassed(_) => StatusCode::GONE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotCaughtUp { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::IdOfAnotherKind(_) => "id-of-another-kind",
            ApiError::ResumeWindowPassed(_) => "resume-window-passed",
            ApiError::RequestTimeout => "request-timeout",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Unprocessable { .. } => "validation",
            ApiError::TooManyRequests { .. } => "rate-limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NotCaughtUp { .. } => "not-caught-up",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error");
        }
        let problem = Problem {
            kind: format!("https://parley.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            field: match &self {
                ApiError::Unprocessable { field, .. } => field.clone(),
                _ => None,
            },
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unavailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Validation { field, message } => ApiError::Unprocessable {
                field: Some(field),
                message,
            },
            DomainError::Rule { field, message } => ApiError::Unprocessable { field, message },
            DomainError::Forbidden(m) => ApiError::Forbidden(m),
            DomainError::NotFound(m) => ApiError::NotFound(m),
            DomainError::Conflict(m) => ApiError::Conflict(m),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(err: LogError) -> Self {
        match err {
            LogError::Conflict { .. } => {
                ApiError::Conflict("the resource changed concurrently; retry the request".into())
            }
            LogError::Busy => ApiError::Unavailable(
                "the event log has more appends waiting than it takes; retry".into(),
            ),
            LogError::AggregateTypeMismatch { aggregate_id } => {
                ApiError::IdOfAnotherKind(aggregate_id)
            }
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "the event log's database does not answer");
                ApiError::Unavailable(DATABASE_AWAY.into())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a request body with content-type application/json".into(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable {
                field: None,
                message: e.body_text(),
            },
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge {
                    limit: crate::extract::BODY_LIMIT_BYTES,
                }
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path parameter: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_missing_table(&e) {
            // A read API started before any projector made the models' tables
            // (a fresh deployment): nothing is broken, it is just early.
            tracing::warn!(error = %e, "read model tables missing");
            return ApiError::Unavailable(
                "the read models are not set up yet: no projector has run against this read database; retry once one has"
                    .into(),
            );
        }
        if parley_event_log::database_unreachable(&e) {
            tracing::warn!(error = %e, "the database does not answer");
            return ApiError::Unavailable(DATABASE_AWAY.into());
        }
        ApiError::Internal(e.into())
    }
}

/// What a client hears while a database is away (stopped, restarting, failing
/// over): nothing of its request was done, or a retry finds the first answer.
const DATABASE_AWAY: &str = "the database does not answer just now; retry shortly";

/// Whether the store answered that a table does not exist (Postgres SQLSTATE
/// 42P01; SQLite "no such table").
pub fn is_missing_table(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code().as_deref() == Some("42P01") || db.message().starts_with("no such table")
}
