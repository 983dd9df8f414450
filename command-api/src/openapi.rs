//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use parley_http_kit::openapi::{BearerAuth, StandardProblems};
use utoipa::OpenApi;

use crate::routes::{calls, friends, health, messages, presence, rooms, sessions, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "Parley command API", version = "1", description = "Commands of Parley's v1 HTTP API. Every accepted command answers with its events' positions and a consistency token. Errors are RFC 9457 problem+json."),
    paths(
        users::register, sessions::login, sessions::refresh, sessions::list, sessions::end_current, sessions::end_one, sessions::end_all,
        rooms::create, rooms::join, rooms::leave, rooms::invite, rooms::kick, rooms::ban, rooms::unban, rooms::change_role, rooms::direct,
        messages::send, messages::edit, messages::redact, messages::react, messages::unreact, messages::read_marker, messages::delivery_marker,
        calls::start, calls::accept, calls::decline, calls::leave,
        friends::request, friends::accept, friends::decline, friends::cancel, friends::unfriend, friends::block, friends::unblock,
        presence::set,
        health::live, health::ready, serve,
    ),
    components(schemas(parley_http_kit::Problem, crate::answers::CommandReceipt)),
    modifiers(&BearerAuth, &StandardProblems),
    tags((name = "users"), (name = "sessions"), (name = "rooms"), (name = "messages"), (name = "calls"), (name = "friends"), (name = "presence"), (name = "health"), (name = "meta"))
)]
pub struct CommandApiDoc;

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses(
    (status = 200, description = "The command API's OpenAPI 3.1 document", body = Object)))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(CommandApiDoc::openapi())
}
