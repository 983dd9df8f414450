use axum::extract::State;
use axum::http::StatusCode;
use parley_domain::friendship::Friendship;
use parley_domain::ids::{direct_room_id, friendship_id, UserPair};
use parley_domain::room::{Room, RoomCommand};
use parley_domain::values::{Role, RoomName, Topic, Visibility};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::answers::{RoomMemberRef, RoomRef};
use crate::engine::{decide, stream, Accepted, CommandContext, Decision, Loaded};
use crate::meta::RequestMeta;
use crate::AppState;
use parley_http_kit::Caller;
use parley_http_kit::{ApiError, Problem};
use parley_http_kit::{ApiJson, ApiPath};

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CreateRoomRequest {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    pub topic: Option<String>,
    /// `public` (anyone may join) or `private` (by invite).
    #[schema(pattern = "^(public|private)$")]
    pub visibility: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UserRef {
    pub user_id: Uuid,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RoleRequest {
    /// `admin` or `member`.
    #[schema(pattern = "^(admin|member)$")]
    pub role: String,
}

/// Runs a command on a room: the room comes from the engine's cache (a stale copy
/// only costs a version conflict, which is retried).
async fn on_room<F>(
    state: &AppState,
    ctx: &CommandContext,
    room_id: Uuid,
    status: StatusCode,
    result: impl Serialize,
    make: F,
) -> Result<Accepted, ApiError>
where
    F: Fn(&Loaded<Room>) -> RoomCommand,
{
    let engine = &*state.engine;
    let make = &make;
    let result = &serde_json::to_value(&result).map_err(ApiError::internal)?;
    engine
        .run(ctx, Some(room_id), move || async move {
            let room = engine.room_for_check(room_id).await?;
            let (next, events) = decide(&room, make(&room))?;
            Ok(Decision {
                streams: vec![stream(&room, &events)],
                status,
                result: result.clone(),
                head: Some((room_id, next.version)),
                room: Some(next),
            })
        })
        .await
}

/// Creates a room; the creator is its owner.
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", request_body = CreateRoomRequest,
    security(("bearer" = [])), responses(
    (status = 201, description = "Created", body = crate::answers::RoomAccepted),
    (status = 422, description = "Invalid field", body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateRoomRequest>,
) -> Result<Accepted, ApiError> {
    let name = RoomName::parse(body.name.clone())?;
    let topic = body.topic.clone().map(Topic::parse).transpose()?;
    let visibility: Visibility = body
        .visibility
        .parse()
        .map_err(|_| ApiError::unprocessable("visibility", "must be \"public\" or \"private\""))?;
    let ctx = meta.context(Some(me), &body);
    let room_id = Uuid::now_v7();
    let now = ctx.now;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::CREATED,
        RoomRef { room_id },
        |_| RoomCommand::CreateRoom {
            room_id,
            name: name.clone(),
            topic: topic.clone(),
            visibility,
            creator_id: me,
            at: now,
        },
    )
    .await
}

/// Joins a public room, or a private one the caller was invited to.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/join", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = Uuid, Path)), responses(
    (status = 200, description = "Member (already or now)", body = crate::answers::RoomAccepted),
    (status = 403, description = "Private room without an invite", body = Problem),
    (status = 404, description = "No such room", body = Problem)))]
pub async fn join(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(room_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::OK,
        RoomRef { room_id },
        |_| RoomCommand::Join {
            user_id: me,
            at: now,
        },
    )
    .await
}

/// Leaves a room.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/leave", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = Uuid, Path)), responses(
    (status = 200, description = "Left", body = crate::answers::RoomAccepted),
    (status = 404, description = "No such room", body = Problem),
    (status = 422, description = "Not a member, or a direct room", body = Problem)))]
pub async fn leave(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(room_id): ApiPath<Uuid>,
) -> Result<Accepted, ApiError> {
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::OK,
        RoomRef { room_id },
        |_| RoomCommand::Leave {
            user_id: me,
            at: now,
        },
    )
    .await
}

/// Invites a user into a room.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/invites", tag = "rooms", request_body = UserRef,
    security(("bearer" = [])), params(("room_id" = Uuid, Path)), responses(
    (status = 200, description = "Invited (already or now)", body = crate::answers::RoomMemberAccepted),
    (status = 403, description = "Not allowed to invite here, or a block stands between the two", body = Problem),
    (status = 404, description = "No such room", body = Problem),
    (status = 422, description = "`user_id` names no user", body = Problem)))]
pub async fn invite(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(room_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UserRef>,
) -> Result<Accepted, ApiError> {
    // The room in the path exists or not (404); a body naming nobody is a bad
    // field, not a missing room.
    state
        .engine
        .require_user(body.user_id)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::unprocessable("user_id", "no such user"),
            other => other,
        })?;
    if body.user_id != me {
        crate::routes::refuse_across_a_block(&state, me, body.user_id).await?;
    }
    let ctx = meta.context(Some(me), &body);
    let now = ctx.now;
    let user_id = body.user_id;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::OK,
        RoomMemberRef { room_id, user_id },
        |_| RoomCommand::Invite {
            user_id,
            invited_by: me,
            at: now,
        },
    )
    .await
}

/// Removes a member (room owners and admins only).
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/members/{user_id}", tag = "rooms",
    security(("bearer" = [])), params(("room_id" = Uuid, Path), ("user_id" = Uuid, Path)), responses(
    (status = 200, description = "Kicked", body = crate::answers::RoomMemberAccepted),
    (status = 403, description = "Not a moderator, or the target outranks the caller", body = Problem),
    (status = 404, description = "No such room or member", body = Problem)))]
pub async fn kick(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Accepted, ApiError> {
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::OK,
        RoomMemberRef { room_id, user_id },
        |_| RoomCommand::Kick {
            user_id,
            kicked_by: me,
            at: now,
        },
    )
    .await
}

/// Bans a user from a room (owners and admins): removed if a member, and
/// unable to join or be invited until the ban is lifted.
#[utoipa::path(put, path = "/v1/rooms/{room_id}/bans/{user_id}", tag = "rooms",
    security(("bearer" = [])), params(("room_id" = Uuid, Path), ("user_id" = Uuid, Path)), responses(
    (status = 200, description = "Banned (already or now)", body = crate::answers::RoomMemberAccepted),
    (status = 403, description = "Not a moderator, the target outranks the caller, or a direct room", body = Problem),
    (status = 404, description = "No such room or user", body = Problem),
    (status = 422, description = "Banning yourself", body = Problem)))]
pub async fn ban(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Accepted, ApiError> {
    state.engine.require_user(user_id).await?;
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::OK,
        RoomMemberRef { room_id, user_id },
        |_| RoomCommand::Ban {
            user_id,
            banned_by: me,
            at: now,
        },
    )
    .await
}

/// Lifts a ban (owners and admins).
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/bans/{user_id}", tag = "rooms",
    security(("bearer" = [])), params(("room_id" = Uuid, Path), ("user_id" = Uuid, Path)), responses(
    (status = 200, description = "Not banned (any more)", body = crate::answers::RoomMemberAccepted),
    (status = 403, description = "Not a moderator", body = Problem),
    (status = 404, description = "No such room", body = Problem)))]
pub async fn unban(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Accepted, ApiError> {
    let ctx = meta.context(Some(me), &json!({}));
    let now = ctx.now;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::OK,
        RoomMemberRef { room_id, user_id },
        |_| RoomCommand::Unban {
            user_id,
            unbanned_by: me,
            at: now,
        },
    )
    .await
}

/// Changes a member's role (the owner only).
#[utoipa::path(put, path = "/v1/rooms/{room_id}/members/{user_id}/role", tag = "rooms",
    request_body = RoleRequest, security(("bearer" = [])),
    params(("room_id" = Uuid, Path), ("user_id" = Uuid, Path)), responses(
    (status = 200, description = "Role set", body = crate::answers::RoomMemberAccepted),
    (status = 403, description = "Not the owner", body = Problem),
    (status = 422, description = "Invalid role", body = Problem)))]
pub async fn change_role(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, user_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<RoleRequest>,
) -> Result<Accepted, ApiError> {
    let role: Role = body
        .role
        .parse()
        .map_err(|_| ApiError::unprocessable("role", "must be \"admin\" or \"member\""))?;
    let ctx = meta.context(Some(me), &body);
    let now = ctx.now;
    on_room(
        &state,
        &ctx,
        room_id,
        StatusCode::OK,
        RoomMemberRef { room_id, user_id },
        |_| RoomCommand::ChangeRole {
            user_id,
            role,
            changed_by: me,
            at: now,
        },
    )
    .await
}

/// Opens the direct room with another user: the same room every time.
#[utoipa::path(post, path = "/v1/direct-rooms", tag = "rooms", request_body = UserRef,
    security(("bearer" = [])), responses(
    (status = 201, description = "Created", body = crate::answers::RoomAccepted),
    (status = 200, description = "Already existed", body = crate::answers::RoomAccepted),
    (status = 403, description = "One of the two blocked the other", body = Problem),
    (status = 404, description = "No such user", body = Problem),
    (status = 422, description = "A direct room with yourself", body = Problem)))]
pub async fn direct(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiJson(body): ApiJson<UserRef>,
) -> Result<Accepted, ApiError> {
    let pair = UserPair::new(me, body.user_id)?;
    state.engine.require_user(body.user_id).await?;
    let room_id = direct_room_id(me, body.user_id);
    let ctx = meta.context(Some(me), &body);
    let now = ctx.now;
    let engine = &*state.engine;
    let pair = &pair;
    engine
        .run(&ctx, Some(room_id), move || async move {
            let friendship = engine
                .load::<Friendship>(friendship_id(pair.low(), pair.high()))
                .await?;
            let room = engine.room_for_check(room_id).await?;
            let existed = room.state.exists();
            let (next, events) = decide(
                &room,
                RoomCommand::CreateDirectRoom {
                    room_id,
                    pair: *pair,
                    blocked: friendship.state.is_blocked_either_way(),
                    at: now,
                },
            )?;
            Ok(Decision {
                streams: vec![stream(&room, &events)],
                status: if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                result: json!(RoomRef { room_id }),
                head: Some((room_id, next.version)),
                room: Some(next),
            })
        })
        .await
}
