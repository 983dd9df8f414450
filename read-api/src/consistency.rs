//! Read-your-writes (invariant 6): a query that presents a command's consistency
//! token waits, bounded, until the projections it reads have applied that write.

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use parley_event_log::ConsistencyToken;
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
pub async fn wait_for(
    store: &ReadStore,
    token: Option<ConsistencyToken>,
    projections: &[&str],
    limit: Duration,
) -> Result<(), ReadError> {
    let Some(token) = token else { return Ok(()) };
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let mut behind = false;
        for name in projections {
            if store.checkpoint(name).await? < token.cursor {
                behind = true;
                break;
            }
        }
        if !behind {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(ReadError::NotCaughtUp {
                waited_ms: limit.as_millis() as u64,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
