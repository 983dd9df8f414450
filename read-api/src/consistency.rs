//! Read-your-writes (invariant 6): a query that presents a command's consistency
//! token waits, bounded, until the projections it reads have applied that write.

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use parley_event_log::ConsistencyToken;
use parley_projections::ProgressError;
use uuid::Uuid;

use crate::ReadState;
use parley_http_kit::ApiError;

/// The `X-Consistency-Token` header, if the client sent one.
pub struct Consistency(pub Option<ConsistencyToken>);

impl<S: Send + Sync> FromRequestParts<S> for Consistency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-consistency-token") {
            None => Ok(Consistency(None)),
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| ApiError::BadRequest("malformed X-Consistency-Token".into()))?;
                ConsistencyToken::decode(text.trim())
                    .map(|t| Consistency(Some(t)))
                    .map_err(|_| ApiError::BadRequest("malformed X-Consistency-Token".into()))
            }
        }
    }
}

/// Waits until every named projection's checkpoint has passed the token's write.
/// Projectors announce their commits, so a waiting request wakes as soon as the
/// write is applied; the short timeout only covers a lost notification link.
///
/// A token naming a write the log does not hold (forged, or from another
/// deployment) is refused with 400 before any wait, and a caller may have at most
/// [`MAX_WAITS_PER_USER`] queries waiting at a time (429 past that): tokens
/// cannot be turned into a way to park many requests for the whole limit.
pub async fn wait_for(
    state: &ReadState,
    me: Uuid,
    token: Option<ConsistencyToken>,
    projections: &[&str],
    limit: Duration,
) -> Result<(), ApiError> {
    let Some(token) = token else { return Ok(()) };
    let deadline = Instant::now() + limit;
    let mut committed = state.store.committed();
    let mut check = state.progress.check();
    let mut waiting: Option<crate::slots::Slot> = None;
    loop {
        committed.borrow_and_update();
        if check.applied(&token, projections).await.map_err(answer)? {
            return Ok(());
        }
        if waiting.is_none() {
            // Only a token that would make the query wait costs these checks.
            check_genuine(state, &token).await?;
            waiting = Some(state.waiters.take(me).ok_or(ApiError::TooManyRequests {
                retry_after_secs: 1,
            })?);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ApiError::NotCaughtUp {
                waited_ms: limit.as_millis() as u64,
            });
        }
        let nap = (deadline - now).min(FALLBACK_POLL);
        let _ = tokio::time::timeout(nap, committed.changed()).await;
    }
}

/// How many queries of one caller may wait for a consistency token at once.
pub const MAX_WAITS_PER_USER: u32 = 8;

/// Refuses a token that names a write the log does not hold (forged, or from
/// another deployment): it would never be applied. A genuine token's cursor is
/// that of the newest event it names, and every event it names is in the log.
async fn check_genuine(state: &ReadState, token: &ConsistencyToken) -> Result<(), ApiError> {
    let Some(log) = &state.log else {
        return Ok(());
    };
    let forged = || {
        ApiError::BadRequest(
            "X-Consistency-Token names a write this deployment's event log does not hold".into(),
        )
    };
    let mut newest = None;
    for stream in &token.streams {
        let cursor = log
            .cursor_of(stream.aggregate_id, stream.sequence)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(forged)?;
        newest = newest.max(Some(cursor));
    }
    if newest != Some(token.cursor) {
        return Err(forged());
    }
    Ok(())
}

/// The store's errors as the read API answers them (a missing table or an
/// unreachable database is 503).
fn answer(e: ProgressError) -> ApiError {
    match e {
        ProgressError::Store(e) => e.into(),
        ProgressError::Log(e) => e.into(),
    }
}

/// How long a waiting request sleeps without a commit notification.
const FALLBACK_POLL: Duration = Duration::from_millis(50);
