//! HTTP handlers, one module per resource.

pub mod calls;
pub mod friends;
pub mod health;
pub mod messages;
pub mod presence;
pub mod rooms;
pub mod sessions;
pub mod users;

use axum::http::StatusCode;
use cqrs_es::Aggregate;
use parley_domain::codec::EventCodec;
use parley_domain::Decide;
use serde::Serialize;
use uuid::Uuid;

use crate::engine::{decide, stream, Accepted, CommandContext, Decision, Loaded};
use crate::AppState;
use parley_http_kit::ApiError;

/// Unknown routes answer with a problem too.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// A known path with a method it does not serve (axum adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this endpoint does not support that method".into())
}

/// Runs a command against one aggregate (loaded from the log under its lock),
/// answering `status` with `result`.
pub(crate) async fn on_aggregate<A, F>(
    state: &AppState,
    ctx: &CommandContext,
    id: Uuid,
    status: StatusCode,
    result: impl Serialize,
    make: F,
) -> Result<Accepted, ApiError>
where
    A: Decide + Aggregate<Services = ()> + Clone,
    A::Event: EventCodec,
    F: Fn(&Loaded<A>) -> Result<A::Command, ApiError>,
{
    let engine = &*state.engine;
    let make = &make;
    let result = &serde_json::to_value(&result).map_err(ApiError::internal)?;
    engine
        .run(ctx, Some(id), move || async move {
            let loaded = engine.load::<A>(id).await?;
            let command = make(&loaded)?;
            let (next, events) = decide(&loaded, command)?;
            Ok(Decision {
                streams: vec![stream(&loaded, &events)],
                status,
                result: result.clone(),
                head: Some((id, next.version)),
                room: None,
            })
        })
        .await
}

/// 403 when either of two users blocks the other: a block stops direct
/// messages and invites both ways. The answer does not say who blocked whom.
pub(crate) async fn refuse_across_a_block(
    state: &AppState,
    me: Uuid,
    other: Uuid,
) -> Result<(), ApiError> {
    use parley_domain::friendship::Friendship;
    let friendship = state
        .engine
        .load::<Friendship>(parley_domain::ids::friendship_id(me, other))
        .await?;
    if friendship.state.is_blocked_either_way() {
        return Err(ApiError::Forbidden(
            "a block stands between you and this user".into(),
        ));
    }
    Ok(())
}
