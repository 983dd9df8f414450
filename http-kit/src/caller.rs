//! Who is calling: the user (and session) of a valid `Authorization: Bearer`
//! access token. Extracting the caller also spends one token of their rate
//! limit, so no authenticated route can forget it.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::ratelimit::RateLimiter;
use crate::tokens::TokenKeys;

/// What a service's state must offer for [`Caller`] and [`CallerSession`].
pub trait Authenticates {
    /// The keys access tokens are checked with.
    fn token_keys(&self) -> &TokenKeys;
    /// The per-user request budget.
    fn user_limiter(&self) -> &RateLimiter;
}

/// The caller's user id.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Uuid);

/// The caller and the session of their access token (`None` for a token
/// minted outside a session, as tests and load tools do).
#[derive(Debug, Clone, Copy)]
pub struct CallerSession {
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
}

impl<S: Authenticates + Send + Sync> FromRequestParts<S> for CallerSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("expected 'Authorization: Bearer <token>'".into())
            })?;
        let (user_id, session_id) = state.token_keys().verify_access_session(token.trim())?;
        // The request's log line names the caller (a field of the request span).
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        state.user_limiter().check(user_id)?;
        Ok(CallerSession {
            user_id,
            session_id,
        })
    }
}

impl<S: Authenticates + Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = CallerSession::from_request_parts(parts, state).await?;
        Ok(Caller(session.user_id))
    }
}
