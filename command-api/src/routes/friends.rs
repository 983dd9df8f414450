use axum::extract::State;
use axum::http::StatusCode;
use parley_domain::friendship::{Friendship, FriendshipCommand};
use parley_domain::ids::{friendship_id, UserPair};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::answers::{FriendRequestRef, UserRef};
use crate::engine::Accepted;
use crate::meta::RequestMeta;
use crate::routes::on_aggregate;
use crate::AppState;
use parley_http_kit::Caller;
use parley_http_kit::{ApiError, Problem};
use parley_http_kit::{ApiJson, ApiPath};

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct FriendRequestBody {
    pub to_user_id: Uuid,
}

/// Sends a friend request. A request to someone who already asked you accepts theirs.
///
/// The request id names the pair's pending request: there is at most one at a time.
#[utoipa::path(post, path = "/v1/friend-requests", tag = "friends", request_body = FriendRequestBody,
    security(("bearer" = [])), responses(
    (status = 201, description = "Requested (or accepted a mutual request)", body = crate::answers::FriendRequestAccepted),
    (status = 403, description = "A block stands between the two", body = Problem),
    (status = 404, description = "No such user", body = Problem),
    (status = 422, description = "To yourself, or already friends", body = Problem)))]
pub async fn request(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiJson(body): ApiJson<FriendRequestBody>,
) -> Result<Accepted, ApiError> {
    let pair = UserPair::new(me, body.to_user_id).map_err(|_| {
        ApiError::unprocessable("to_user_id", "cannot send a friend request to yourself")
    })?;
    state.engine.require_user(body.to_user_id).await?;
    let id = friendship_id(pair.low(), pair.high());
    let ctx = meta.context(Some(me), &body);
    let now = ctx.now;
    let to = body.to_user_id;
    on_aggregate::<Friendship, _>(
        &state,
        &ctx,
        id,
        StatusCode::CREATED,
        FriendRequestRef { request_id: id },
        |_| {
            Ok(FriendshipCommand::SendFriendRequest {
                from: me,
                to,
                at: now,
            })
        },
    )
    .await
}

async fn on_request(
    state: &AppState,
    meta: RequestMeta,
    me: Uuid,
    request_id: Uuid,
    command: fn(Uuid, chrono::DateTime<chrono::Utc>) -> FriendshipCommand,
) -> Result<Accepted, ApiError> {
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_aggregate::<Friendship, _>(
        state,
        &ctx,
        request_id,
        StatusCode::OK,
        FriendRequestRef { request_id },
        |f| {
            if f.version == 0 {
                return Err(ApiError::NotFound(format!(
                    "friend request {request_id} not found"
                )));
            }
            Ok(command(me, now))
        },
    )
    .await
}

/// Accepts a friend request (its recipient only).
#[utoipa::path(post, path = "/v1/friend-requests/{request_id}/accept", tag = "friends",
    security(("bearer" = [])), params(("request_id" = Uuid, Path)), responses(
    (status = 200, description = "Now friends", body = crate::answers::FriendRequestAccepted),
    (status = 403, description = "Not the recipient", body = Problem),
    (status = 404, description = "No pending request", body = Problem)))]
pub async fn accept(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(request_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    on_request(&state, meta, me, request_id, |actor, at| {
        FriendshipCommand::AcceptFriendRequest { actor, at }
    })
    .await
}

/// Declines a friend request (its recipient only).
#[utoipa::path(post, path = "/v1/friend-requests/{request_id}/decline", tag = "friends",
    security(("bearer" = [])), params(("request_id" = Uuid, Path)), responses(
    (status = 200, description = "Declined", body = crate::answers::FriendRequestAccepted),
    (status = 403, description = "Not the recipient", body = Problem),
    (status = 404, description = "No pending request", body = Problem)))]
pub async fn decline(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(request_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    on_request(&state, meta, me, request_id, |actor, at| {
        FriendshipCommand::DeclineFriendRequest { actor, at }
    })
    .await
}

/// Cancels a friend request (its sender only).
#[utoipa::path(delete, path = "/v1/friend-requests/{request_id}", tag = "friends",
    security(("bearer" = [])), params(("request_id" = Uuid, Path)), responses(
    (status = 200, description = "Cancelled", body = crate::answers::FriendRequestAccepted),
    (status = 403, description = "Not the sender", body = Problem),
    (status = 404, description = "No pending request", body = Problem)))]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(request_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    on_request(&state, meta, me, request_id, |actor, at| {
        FriendshipCommand::CancelFriendRequest { actor, at }
    })
    .await
}

fn pair_with(me: Uuid, other: Uuid) -> Result<Uuid, ApiError> {
    let pair = UserPair::new(me, other)
        .map_err(|_| ApiError::unprocessable("user_id", "cannot do this with yourself"))?;
    Ok(friendship_id(pair.low(), pair.high()))
}

/// Ends a friendship.
#[utoipa::path(delete, path = "/v1/friends/{user_id}", tag = "friends",
    security(("bearer" = [])), params(("user_id" = Uuid, Path)), responses(
    (status = 200, description = "No longer friends", body = crate::answers::UserAccepted),
    (status = 404, description = "Not friends", body = Problem)))]
pub async fn unfriend(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(user_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    let id = pair_with(me, user_id)?;
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_aggregate::<Friendship, _>(
        &state,
        &ctx,
        id,
        StatusCode::OK,
        UserRef { user_id },
        |_| {
            Ok(FriendshipCommand::RemoveFriend {
                actor: me,
                friend: user_id,
                at: now,
            })
        },
    )
    .await
}

/// Blocks a user: ends any friendship and pending request, and refuses their
/// requests and direct rooms.
#[utoipa::path(put, path = "/v1/blocks/{user_id}", tag = "friends",
    security(("bearer" = [])), params(("user_id" = Uuid, Path)), responses(
    (status = 200, description = "Blocked (already or now)", body = crate::answers::UserAccepted),
    (status = 404, description = "No such user", body = Problem),
    (status = 422, description = "Blocking yourself", body = Problem)))]
pub async fn block(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(user_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    let id = pair_with(me, user_id)?;
    state.engine.require_user(user_id).await?;
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_aggregate::<Friendship, _>(
        &state,
        &ctx,
        id,
        StatusCode::OK,
        UserRef { user_id },
        |_| {
            Ok(FriendshipCommand::BlockUser {
                blocker: me,
                blocked: user_id,
                at: now,
            })
        },
    )
    .await
}

/// Lifts the caller's block on a user.
#[utoipa::path(delete, path = "/v1/blocks/{user_id}", tag = "friends",
    security(("bearer" = [])), params(("user_id" = Uuid, Path)), responses(
    (status = 200, description = "Unblocked", body = crate::answers::UserAccepted),
    (status = 404, description = "Not blocked by the caller", body = Problem)))]
pub async fn unblock(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(user_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    let id = pair_with(me, user_id)?;
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_aggregate::<Friendship, _>(
        &state,
        &ctx,
        id,
        StatusCode::OK,
        UserRef { user_id },
        |_| {
            Ok(FriendshipCommand::UnblockUser {
                blocker: me,
                blocked: user_id,
                at: now,
            })
        },
    )
    .await
}
