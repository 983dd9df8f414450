use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::error::ReadError;
use crate::ReadState;

/// The caller, from a valid `Authorization: Bearer` access token (same keys as the
/// command API); spends one token of the caller's rate-limit bucket.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Uuid);

impl FromRequestParts<ReadState> for Caller {
    type Rejection = ReadError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ReadState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ReadError::Unauthorized("missing bearer token".into()))?;
        let user = state.keys.verify_access(token.trim())?;
        // The request's log line names the caller (a field of the binary's request span).
        tracing::Span::current().record("user_id", tracing::field::display(user));
        state.limiter.check(user)?;
        Ok(Caller(user))
    }
}
