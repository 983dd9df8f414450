//! Read-your-writes (invariant 6): a query that presents a command's consistency
//! token waits, bounded, until the projections it reads have applied that write.

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use parley_event_log::ConsistencyToken;
use parley_projections::partitions::applied_sequence;
use parley_projections::ReadStore;

use crate::error::ReadError;

/// The `X-Consistency-Token` header, if the client sent one.
pub struct Consistency(pub Option<ConsistencyToken>);

impl<S: Send + Sync> FromRequestParts<S> for Consistency {
    type Rejection = ReadError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-consistency-token") {
            None => Ok(Consistency(None)),
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| ReadError::BadRequest("malformed X-Consistency-Token".into()))?;
                ConsistencyToken::decode(text.trim())
                    .map(|t| Consistency(Some(t)))
                    .map_err(|_| ReadError::BadRequest("malformed X-Consistency-Token".into()))
            }
        }
    }
}

/// Waits until every named projection's checkpoint has passed the token's write.
/// Projectors announce their commits, so a waiting request wakes as soon as the
/// write is applied; the short timeout only covers a lost notification link.
pub async fn wait_for(
    store: &ReadStore,
    token: Option<ConsistencyToken>,
    projections: &[&str],
    limit: Duration,
) -> Result<(), ReadError> {
    let Some(token) = token else { return Ok(()) };
    let deadline = Instant::now() + limit;
    let mut committed = store.committed();
    loop {
        committed.borrow_and_update();
        if caught_up(store, &token, projections).await? {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::NotCaughtUp {
                waited_ms: limit.as_millis() as u64,
            });
        }
        let nap = (deadline - now).min(FALLBACK_POLL);
        let _ = tokio::time::timeout(nap, committed.changed()).await;
    }
}

/// Whether every projection has applied the token's write: by log cursor (fed by
/// the log), or by every written aggregate's sequence (fed by Kafka, where partitions
/// advance independently and a log cursor means nothing).
async fn caught_up(
    store: &ReadStore,
    token: &ConsistencyToken,
    projections: &[&str],
) -> Result<bool, sqlx::Error> {
    let checkpoints = store.checkpoints(projections).await?;
    for (name, checkpoint) in projections.iter().zip(checkpoints) {
        if checkpoint >= token.cursor {
            continue;
        }
        for stream in &token.streams {
            if applied_sequence(store, name, stream.aggregate_id).await? < stream.sequence {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// How long a waiting request sleeps without a commit notification.
const FALLBACK_POLL: Duration = Duration::from_millis(50);
