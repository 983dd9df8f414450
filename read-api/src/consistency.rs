//! Read-your-writes (invariant 6): a query that presents a command's consistency
//! token waits, bounded, until the projections it reads have applied that write.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use parley_event_log::{ConsistencyToken, SharedLog, StreamHead};
use parley_projections::models;
use parley_projections::partitions::applied_sequence;
use parley_projections::ReadStore;
use uuid::Uuid;

use crate::{Feed, ReadState};
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
    let store = &state.store;
    let mut committed = store.committed();
    let mut check = Check {
        store,
        log: state.log.as_ref().filter(|_| state.feed == Feed::Kafka),
        types: HashMap::new(),
    };
    let mut waiting: Option<crate::slots::Slot> = None;
    loop {
        committed.borrow_and_update();
        if check.caught_up(&token, projections).await? {
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
            .map_err(|e| ApiError::Internal(e.into()))?
            .ok_or_else(forged)?;
        newest = newest.max(Some(cursor));
    }
    if newest != Some(token.cursor) {
        return Err(forged());
    }
    Ok(())
}

/// One request's wait.
struct Check<'a> {
    store: &'a ReadStore,
    /// The event log, fed by Kafka only: there it tells the token's aggregates'
    /// types (see [`Check::reads`]).
    log: Option<&'a SharedLog>,
    /// The aggregate types looked up so far (`None`: not in the log).
    types: HashMap<Uuid, Option<String>>,
}

impl Check<'_> {
    /// Whether every projection has applied the token's write: by log cursor
    /// (fed by the log), or by every written aggregate's sequence (fed by Kafka,
    /// where partitions advance independently and a log cursor means nothing).
    async fn caught_up(
        &mut self,
        token: &ConsistencyToken,
        projections: &[&str],
    ) -> Result<bool, ApiError> {
        let checkpoints = self.store.checkpoints(projections).await?;
        for (name, checkpoint) in projections.iter().zip(checkpoints) {
            if checkpoint >= token.cursor {
                continue;
            }
            for stream in &token.streams {
                if applied_sequence(self.store, name, stream.aggregate_id).await? >= stream.sequence
                {
                    continue;
                }
                if !self.reads(name, stream).await? {
                    continue;
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether projection `name` reads the aggregate of `stream`. Fed by Kafka,
    /// a model records no sequence for aggregate types it does not read (friends
    /// and messages), so a friends query with a send's token has nothing to wait
    /// for. Fed by the log the answer is always yes: there the checkpoint also
    /// orders the token's write after everything the client wrote before it.
    async fn reads(&mut self, name: &str, stream: &StreamHead) -> Result<bool, ApiError> {
        let (Some(log), Some(model)) = (self.log, models::by_name(name, "")) else {
            return Ok(true);
        };
        if model.aggregate_types().is_none() {
            return Ok(true);
        }
        let aggregate_type = match self.types.get(&stream.aggregate_id) {
            Some(known) => known.clone(),
            None => {
                let events = log
                    .load_stream(stream.aggregate_id, stream.sequence - 1)
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                let found = events.first().map(|e| e.aggregate_type.clone());
                self.types.insert(stream.aggregate_id, found.clone());
                found
            }
        };
        Ok(aggregate_type.is_none_or(|t| model.consumes(&t)))
    }
}

/// How long a waiting request sleeps without a commit notification.
const FALLBACK_POLL: Duration = Duration::from_millis(50);
