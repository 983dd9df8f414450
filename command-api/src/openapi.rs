//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use parley_http_kit::openapi::{BearerAuth, StandardProblems};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::routes::{friends, health, messages, presence, rooms, sessions, users};

/// Fields every accepted command answers with.
#[derive(Serialize, ToSchema)]
pub struct CommandReceipt {
    /// Global positions of the events the command appended (empty if it changed nothing).
    pub positions: Vec<i64>,
    /// Present this to the read API (`X-Consistency-Token`) to read your own write.
    pub consistency_token: Option<String>,
}

macro_rules! receipt {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Serialize, ToSchema)]
        pub struct $name {
            $(pub $field: $ty,)*
            pub positions: Vec<i64>,
            pub consistency_token: Option<String>,
        }
    };
}

receipt!(/// A registered user.
    UserAccepted { user_id: Uuid });
receipt!(/// A room command's answer.
    RoomAccepted { room_id: Uuid });
receipt!(/// A sent message: `sequence` and `position` are those of its `MessageSent` event.
    MessageAccepted { message_id: Uuid, room_id: Uuid, sequence: i64, position: i64 });
receipt!(/// A command on a message.
    MessageRef { message_id: Uuid, room_id: Uuid });
receipt!(/// A friend request command's answer.
    FriendRequestAccepted { request_id: Uuid });
receipt!(/// A command about another user.
    UserRefAccepted { user_id: Uuid });
receipt!(/// A presence update.
    PresenceAccepted { user_id: Uuid, status: String });

#[derive(OpenApi)]
#[openapi(
    info(title = "Parley command API", version = "1", description = "Commands of Parley's v1 HTTP API. Every accepted command answers with its events' positions and a consistency token. Errors are RFC 9457 problem+json."),
    paths(
        users::register, sessions::login, sessions::refresh, sessions::list, sessions::end_current, sessions::end_one, sessions::end_all,
        rooms::create, rooms::join, rooms::leave, rooms::invite, rooms::kick, rooms::ban, rooms::unban, rooms::change_role, rooms::direct,
        messages::send, messages::edit, messages::redact, messages::react, messages::unreact, messages::read_marker,
        friends::request, friends::accept, friends::decline, friends::cancel, friends::unfriend, friends::block, friends::unblock,
        presence::set,
        health::live, health::ready, serve,
    ),
    components(schemas(parley_http_kit::Problem, CommandReceipt)),
    modifiers(&BearerAuth, &StandardProblems),
    tags((name = "users"), (name = "sessions"), (name = "rooms"), (name = "messages"), (name = "friends"), (name = "presence"), (name = "health"), (name = "meta"))
)]
pub struct CommandApiDoc;

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses(
    (status = 200, description = "The command API's OpenAPI 3.1 document", body = Object)))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(CommandApiDoc::openapi())
}
