//! Calls: start one in a room, answer, decline, leave; and the sweeper that
//! turns a call nobody answered in time into a missed call.
//!
//! The ring timeout is a deadline beside the log ([`parley_event_log::Deadlines`]),
//! set before the call's first event is appended: whichever replica is up
//! when it falls due sends the call `Expire`, which changes nothing once
//! someone answered.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use parley_domain::call::{Call, CallCommand, CallKind};
use parley_event_log::Metadata;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::answers::CallRef;
use crate::engine::{Accepted, CommandContext};
use crate::meta::RequestMeta;
use crate::routes::on_aggregate;
use crate::AppState;
use parley_http_kit::{ApiError, ApiJson, ApiPath, Caller, Problem};

/// The deadlines' kind for ringing calls.
const RINGING: &str = "call_ring";

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct StartCallRequest {
    /// "audio" or "video".
    #[schema(pattern = "^(audio|video)$")]
    pub kind: String,
}

/// Starts a call in a room; it rings for the room's other members until one
/// answers, or becomes a missed call after the ring timeout (45 s by default).
#[utoipa::path(post, path = "/v1/rooms/{room_id}/calls", tag = "calls", request_body = StartCallRequest,
    security(("bearer" = [])), params(("room_id" = Uuid, Path)), responses(
    (status = 201, description = "Ringing", body = crate::answers::CallAccepted),
    (status = 403, description = "Not a member of the room", body = Problem),
    (status = 404, description = "No such room", body = Problem),
    (status = 422, description = "`kind` is not audio or video", body = Problem),
    (status = 429, description = "More than 3 calls at once, or one per 10 s after that", body = Problem)))]
pub async fn start(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(room_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<StartCallRequest>,
) -> Result<Accepted, ApiError> {
    let kind = match request.kind.as_str() {
        "audio" => CallKind::Audio,
        "video" => CallKind::Video,
        _ => {
            return Err(ApiError::unprocessable(
                "kind",
                "must be \"audio\" or \"video\"",
            ))
        }
    };
    let room = state.engine.room_for_check(room_id).await?;
    if !room.state.exists() {
        return Err(ApiError::NotFound(format!("room {room_id} not found")));
    }
    // Checked here as well as by the domain, so that refused starts leave no
    // deadline behind.
    if !room.state.is_member(me) {
        return Err(ApiError::Forbidden(
            "you are not a member of this room".into(),
        ));
    }
    state.call_limiter.check(me)?;
    let ctx = meta.context(Some(me), &request);
    let now = ctx.now;
    let call_id = Uuid::now_v7();
    // The deadline first: a crash before the append leaves a deadline whose
    // `Expire` finds no call, never a call that rings for ever.
    let due = now + state.ring_timeout;
    state
        .engine
        .log()
        .set_deadline(RINGING, call_id, due)
        .await?;
    let user_is_member = room.state.is_member(me);
    on_aggregate::<Call, _>(
        &state,
        &ctx,
        call_id,
        StatusCode::CREATED,
        CallRef { call_id, room_id },
        |_| {
            Ok(CallCommand::Start {
                call_id,
                room_id,
                user_id: me,
                kind,
                user_is_member,
                at: now,
            })
        },
    )
    .await
}

/// What a member does with a call.
#[derive(Clone, Copy)]
enum Step {
    Accept,
    Decline,
    Leave,
}

/// Answers a ringing (or active) call: the caller joins it.
#[utoipa::path(post, path = "/v1/calls/{call_id}/accept", tag = "calls", security(("bearer" = [])),
    params(("call_id" = Uuid, Path)), responses(
    (status = 200, description = "In the call (already or now)", body = crate::answers::CallAccepted),
    (status = 404, description = "No such call, or not a member of its room", body = Problem),
    (status = 409, description = "The call is over", body = Problem)))]
pub async fn accept(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(call_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    on_call(state, me, meta, call_id, Step::Accept).await
}

/// Declines a call; in a direct room that ends it.
#[utoipa::path(post, path = "/v1/calls/{call_id}/decline", tag = "calls", security(("bearer" = [])),
    params(("call_id" = Uuid, Path)), responses(
    (status = 200, description = "Declined (already or now)", body = crate::answers::CallAccepted),
    (status = 404, description = "No such call, or not a member of its room", body = Problem),
    (status = 409, description = "The call is over, or the caller is in it (leave instead)", body = Problem)))]
pub async fn decline(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(call_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    on_call(state, me, meta, call_id, Step::Decline).await
}

/// Leaves a call; the last one out ends it.
#[utoipa::path(post, path = "/v1/calls/{call_id}/leave", tag = "calls", security(("bearer" = [])),
    params(("call_id" = Uuid, Path)), responses(
    (status = 200, description = "Left", body = crate::answers::CallAccepted),
    (status = 404, description = "No such call, or not a member of its room", body = Problem),
    (status = 409, description = "Not in the call", body = Problem)))]
pub async fn leave(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(call_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    on_call(state, me, meta, call_id, Step::Leave).await
}

async fn on_call(
    state: AppState,
    me: Uuid,
    meta: RequestMeta,
    call_id: Uuid,
    step: Step,
) -> Result<Accepted, ApiError> {
    let missing = || ApiError::NotFound(format!("call {call_id} not found"));
    let call = match state.engine.load::<Call>(call_id).await {
        Ok(call) => call,
        Err(ApiError::IdOfAnotherKind(_)) => return Err(missing()),
        Err(e) => return Err(e),
    };
    let room_id = call.state.room_id().ok_or_else(missing)?;
    let room = state.engine.room_for_check(room_id).await?;
    // A call is its room's members' business: to anyone else it does not exist.
    if !room.state.is_member(me) {
        return Err(missing());
    }
    let room_is_direct = room.state.is_direct();
    let ctx = meta.context(Some(me), &json!({}));
    let at = ctx.now;
    on_aggregate::<Call, _>(
        &state,
        &ctx,
        call_id,
        StatusCode::OK,
        CallRef { call_id, room_id },
        |_| {
            Ok(match step {
                Step::Accept => CallCommand::Accept {
                    user_id: me,
                    user_is_member: true,
                    at,
                },
                Step::Decline => CallCommand::Decline {
                    user_id: me,
                    user_is_member: true,
                    room_is_direct,
                    at,
                },
                Step::Leave => CallCommand::Leave { user_id: me, at },
            })
        },
    )
    .await
}

/// Sends `Expire` to every call whose ring timeout passed, about once a
/// second, until the state is dropped. A deadline is forgotten once its
/// command ran (whatever it decided) or found no call.
pub(crate) async fn expire_unanswered(state: std::sync::Weak<crate::Services>) {
    let every = Duration::from_secs(1);
    loop {
        tokio::time::sleep(every).await;
        let Some(services) = state.upgrade() else {
            return;
        };
        let state = AppState(services);
        let log = state.engine.log().clone();
        let due = match log.due_deadlines(RINGING, chrono::Utc::now(), 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading the calls' ring deadlines failed");
                continue;
            }
        };
        for call_id in due {
            match expire(&state, call_id).await {
                Ok(()) | Err(ApiError::NotFound(_)) | Err(ApiError::IdOfAnotherKind(_)) => {
                    if let Err(e) = log.clear_deadline(RINGING, call_id).await {
                        tracing::warn!(error = %e, %call_id, "forgetting a ring deadline failed");
                    }
                }
                // Kept: the next round tries again.
                Err(e) => {
                    tracing::warn!(error = %e, %call_id, "expiring an unanswered call failed")
                }
            }
        }
    }
}

async fn expire(state: &AppState, call_id: Uuid) -> Result<(), ApiError> {
    let call = state.engine.load::<Call>(call_id).await?;
    let Some(room_id) = call.state.room_id() else {
        return Err(ApiError::NotFound(format!("call {call_id} not found")));
    };
    let now = chrono::Utc::now();
    let ctx = CommandContext {
        actor_id: None,
        metadata: Metadata::default(),
        idempotency: None,
        now,
    };
    on_aggregate::<Call, _>(
        state,
        &ctx,
        call_id,
        StatusCode::OK,
        CallRef { call_id, room_id },
        |_| Ok(CallCommand::Expire { at: now }),
    )
    .await?;
    Ok(())
}
