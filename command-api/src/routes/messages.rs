use axum::extract::State;
use axum::http::StatusCode;
use parley_domain::ids::read_marker_id;
use parley_domain::message::{Message, MessageCommand};
use parley_domain::read_marker::{ReadMarker, ReadMarkerCommand};
use parley_domain::values::{Emoji, MessageBody};
use parley_event_log::AppendedEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::answers::{MessageRef, SentMessage};
use crate::engine::{Accepted, Loaded};
use crate::meta::RequestMeta;
use crate::routes::on_aggregate;
use crate::AppState;
use parley_http_kit::Caller;
use parley_http_kit::{ApiError, Problem};
use parley_http_kit::{ApiJson, ApiPath};

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct SendMessageRequest {
    /// 1 to 4,000 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 4000)]
    pub body: String,
    /// A message of the same room this one answers.
    pub reply_to: Option<Uuid>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct EditMessageRequest {
    /// 1 to 4,000 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 4000)]
    pub body: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ReadMarkerRequest {
    /// The last message the caller has read (or, for the delivery marker,
    /// received).
    pub message_id: Uuid,
}

/// Loads a message of `room_id`: `None` when there is no such message or it
/// belongs to another room. A failure to load it (storage, decoding) is an error,
/// never a `None`.
async fn find_in_room(
    state: &AppState,
    room_id: Uuid,
    message_id: Uuid,
) -> Result<Option<Loaded<Message>>, ApiError> {
    let message = match state.engine.load::<Message>(message_id).await {
        Ok(message) => message,
        // The id of another kind of resource is no message of this room.
        Err(ApiError::IdOfAnotherKind(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let in_room = message.state.exists() && message.state.room_id() == Some(room_id);
    Ok(in_room.then_some(message))
}

/// Loads a message and checks it belongs to `room_id` (404 otherwise).
async fn message_in_room(
    state: &AppState,
    room_id: Uuid,
    message_id: Uuid,
) -> Result<Loaded<Message>, ApiError> {
    find_in_room(state, room_id, message_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("message {message_id} not found in this room")))
}

/// Sends a message with a client-chosen id: a retry returns the first answer (200)
/// and appends nothing.
#[utoipa::path(put, path = "/v1/rooms/{room_id}/messages/{message_id}", tag = "messages",
    request_body = SendMessageRequest, security(("bearer" = [])),
    params(("room_id" = Uuid, Path), ("message_id" = Uuid, Path, description = "Chosen by the client: a random UUID, version 4 or 7 (7 recommended)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[47][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")),
    responses(
    (status = 201, description = "Sent", body = crate::answers::MessageAccepted),
    (status = 200, description = "Already sent by this caller: the first answer", body = crate::answers::MessageAccepted),
    (status = 403, description = "Not a member, or (in a direct room) a block stands between the two", body = Problem),
    (status = 404, description = "No such room", body = Problem),
    (status = 409, description = "The message id is taken by another message", body = Problem),
    (status = 413, description = "Body over 64 KiB", body = Problem),
    (status = 422, description = "Invalid body or reply, or a message id that is not a random UUID (version 4 or 7)", body = Problem)))]
pub async fn send(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, message_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(request): ApiJson<SendMessageRequest>,
) -> Result<Accepted, ApiError> {
    parley_domain::ids::client_chosen("message_id", message_id)?;
    let body = MessageBody::parse(request.body.clone())?;
    let ctx = meta.context(Some(me), &request);
    let room = state.engine.room_for_check(room_id).await?;
    if !room.state.exists() {
        return Err(ApiError::NotFound(format!("room {room_id} not found")));
    }
    if room.state.is_direct() && room.state.is_member(me) {
        if let Some((other, _)) = room.state.members().find(|(id, _)| *id != me) {
            crate::routes::refuse_across_a_block(&state, me, other).await?;
        }
    }
    let reply_in_room = match request.reply_to {
        Some(reply) => find_in_room(&state, room_id, reply).await?.is_some(),
        None => true,
    };
    let command = MessageCommand::SendMessage {
        message_id,
        room_id,
        sender_id: me,
        body,
        reply_to: request.reply_to,
        sender_is_member: room.state.is_member(me),
        reply_in_room,
        at: ctx.now,
    };
    let answer = |sent: &AppendedEvent| SentMessage {
        message_id,
        room_id,
        sequence: sent.sequence,
        position: sent.position,
    };
    // The message id is the send's idempotency key: a retry of this very send
    // (same sender, same room) gets the first answer; any other use clashes.
    let same_send = |taken: &Loaded<Message>| {
        if taken.state.sender_id() == Some(me) && taken.state.room_id() == Some(room_id) {
            Ok(())
        } else {
            Err(ApiError::Conflict(format!(
                "message id {message_id} is already used"
            )))
        }
    };
    state
        .engine
        .create::<Message, _>(ctx, message_id, command, answer, same_send)
        .await
}

/// Runs a command on a message of a room, with the caller's membership looked up.
async fn on_message<F>(
    state: &AppState,
    meta: RequestMeta,
    me: Uuid,
    room_id: Uuid,
    message_id: Uuid,
    body: &impl Serialize,
    make: F,
) -> Result<Accepted, ApiError>
where
    F: Fn(Option<parley_domain::values::Role>, chrono::DateTime<chrono::Utc>) -> MessageCommand,
{
    let room = state.engine.room_for_check(room_id).await?;
    if !room.state.exists() {
        return Err(ApiError::NotFound(format!("room {room_id} not found")));
    }
    message_in_room(state, room_id, message_id).await?;
    let ctx = meta.context(Some(me), body);
    let role = room.state.role_of(me);
    let now = ctx.now;
    on_aggregate::<Message, _>(
        state,
        &ctx,
        message_id,
        StatusCode::OK,
        MessageRef {
            message_id,
            room_id,
        },
        |_| Ok(make(role, now)),
    )
    .await
}

/// Edits a message (its author only).
#[utoipa::path(patch, path = "/v1/rooms/{room_id}/messages/{message_id}", tag = "messages",
    request_body = EditMessageRequest, security(("bearer" = [])),
    params(("room_id" = Uuid, Path), ("message_id" = Uuid, Path)), responses(
    (status = 200, description = "Edited", body = crate::answers::MessageRefAccepted),
    (status = 403, description = "Not the author", body = Problem),
    (status = 404, description = "No such message", body = Problem),
    (status = 422, description = "Invalid body, or the message was redacted", body = Problem)))]
pub async fn edit(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, message_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(request): ApiJson<EditMessageRequest>,
) -> Result<Accepted, ApiError> {
    let body = MessageBody::parse(request.body.clone())?;
    on_message(
        &state,
        meta,
        me,
        room_id,
        message_id,
        &request,
        |role, at| MessageCommand::EditMessage {
            editor_id: me,
            body: body.clone(),
            editor_is_member: role.is_some(),
            at,
        },
    )
    .await
}

/// Redacts a message (its author, or a room moderator): the body is gone, a
/// tombstone stays.
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/messages/{message_id}", tag = "messages",
    security(("bearer" = [])), params(("room_id" = Uuid, Path), ("message_id" = Uuid, Path)), responses(
    (status = 200, description = "Redacted (already or now)", body = crate::answers::MessageRefAccepted),
    (status = 403, description = "Neither the author nor a moderator", body = Problem),
    (status = 404, description = "No such message", body = Problem)))]
pub async fn redact(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, message_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Accepted, ApiError> {
    on_message(
        &state,
        meta,
        me,
        room_id,
        message_id,
        &json!({}),
        |role, at| MessageCommand::RedactMessage {
            actor_id: me,
            actor_role: role,
            at,
        },
    )
    .await
}

/// Adds the caller's reaction to a message.
#[utoipa::path(put, path = "/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}", tag = "messages",
    security(("bearer" = [])), params(("room_id" = Uuid, Path), ("message_id" = Uuid, Path), ("emoji" = String, Path, min_length = 1, max_length = 32, description = "One emoji (a sequence counts), percent-encoded")),
    responses(
    (status = 200, description = "Reaction present", body = crate::answers::MessageRefAccepted),
    (status = 403, description = "Not a member", body = Problem),
    (status = 404, description = "No such message", body = Problem),
    (status = 422, description = "Invalid emoji", body = Problem)))]
pub async fn react(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, message_id, emoji)): ApiPath<(Uuid, Uuid, String)>,
) -> Result<Accepted, ApiError> {
    let emoji = Emoji::parse(emoji)?;
    on_message(
        &state,
        meta,
        me,
        room_id,
        message_id,
        &json!({"emoji": emoji.as_str()}),
        |role, at| MessageCommand::AddReaction {
            user_id: me,
            emoji: emoji.clone(),
            user_is_member: role.is_some(),
            at,
        },
    )
    .await
}

/// Removes the caller's reaction from a message.
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}", tag = "messages",
    security(("bearer" = [])), params(("room_id" = Uuid, Path), ("message_id" = Uuid, Path), ("emoji" = String, Path, min_length = 1, max_length = 32, description = "One emoji (a sequence counts), percent-encoded")),
    responses(
    (status = 200, description = "Reaction absent", body = crate::answers::MessageRefAccepted),
    (status = 403, description = "Not a member", body = Problem),
    (status = 404, description = "No such message", body = Problem)))]
pub async fn unreact(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath((room_id, message_id, emoji)): ApiPath<(Uuid, Uuid, String)>,
) -> Result<Accepted, ApiError> {
    // The stored rules only: a reaction added before reactions had to be emoji
    // can still be taken back.
    let emoji = Emoji::parse_stored(emoji)?;
    on_message(
        &state,
        meta,
        me,
        room_id,
        message_id,
        &json!({"emoji": emoji.as_str()}),
        |role, at| MessageCommand::RemoveReaction {
            user_id: me,
            emoji: emoji.clone(),
            user_is_member: role.is_some(),
            at,
        },
    )
    .await
}

/// Moves the caller's read marker in a room (drives unread counts and read
/// receipts).
#[utoipa::path(post, path = "/v1/rooms/{room_id}/read-marker", tag = "messages",
    request_body = ReadMarkerRequest, security(("bearer" = [])), params(("room_id" = Uuid, Path)),
    responses(
    (status = 200, description = "Marker set", body = crate::answers::MessageRefAccepted),
    (status = 403, description = "Not a member", body = Problem),
    (status = 404, description = "No such room", body = Problem),
    (status = 422, description = "`message_id` names no message of this room", body = Problem)))]
pub async fn read_marker(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(room_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<ReadMarkerRequest>,
) -> Result<Accepted, ApiError> {
    move_marker(state, me, meta, room_id, request, Marker::Read).await
}

/// Records that the caller's devices received a room's messages up to one
/// (delivery receipts). WebSocket clients send `delivered` frames instead,
/// which the gateway coalesces into this command; others (a push handler, say)
/// call it directly. Moving it to a message already read or marked records
/// nothing.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/delivery-marker", tag = "messages",
    request_body = ReadMarkerRequest, security(("bearer" = [])), params(("room_id" = Uuid, Path)),
    responses(
    (status = 200, description = "Marker set", body = crate::answers::MessageRefAccepted),
    (status = 403, description = "Not a member", body = Problem),
    (status = 404, description = "No such room", body = Problem),
    (status = 422, description = "`message_id` names no message of this room", body = Problem)))]
pub async fn delivery_marker(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiPath(room_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<ReadMarkerRequest>,
) -> Result<Accepted, ApiError> {
    move_marker(state, me, meta, room_id, request, Marker::Delivered).await
}

/// Which of a user's markers in a room a command moves.
#[derive(Clone, Copy)]
enum Marker {
    Read,
    Delivered,
}

async fn move_marker(
    state: AppState,
    me: Uuid,
    meta: RequestMeta,
    room_id: Uuid,
    request: ReadMarkerRequest,
    marker: Marker,
) -> Result<Accepted, ApiError> {
    let room = state.engine.room_for_check(room_id).await?;
    if !room.state.exists() {
        return Err(ApiError::NotFound(format!("room {room_id} not found")));
    }
    let message_in_room = find_in_room(&state, room_id, request.message_id)
        .await?
        .is_some();
    let ctx = meta.context(Some(me), &request);
    let now = ctx.now;
    let user_is_member = room.state.is_member(me);
    let message_id = request.message_id;
    on_aggregate::<ReadMarker, _>(
        &state,
        &ctx,
        read_marker_id(room_id, me),
        StatusCode::OK,
        MessageRef {
            message_id,
            room_id,
        },
        |_| {
            Ok(match marker {
                Marker::Read => ReadMarkerCommand::MoveReadMarker {
                    room_id,
                    user_id: me,
                    message_id,
                    user_is_member,
                    message_in_room,
                    at: now,
                },
                Marker::Delivered => ReadMarkerCommand::MoveDeliveryMarker {
                    room_id,
                    user_id: me,
                    message_id,
                    user_is_member,
                    message_in_room,
                    at: now,
                },
            })
        },
    )
    .await
}
