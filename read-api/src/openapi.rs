//! The read API's OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use parley_http_kit::openapi::{BearerAuth, StandardProblems};
use utoipa::OpenApi;

use crate::{calls, routes, stream, turn};

#[derive(OpenApi)]
#[openapi(
    info(title = "Parley read API", version = "1", description = "Queries of Parley's v1 HTTP API. Send a command's `X-Consistency-Token` to read your own write (the query waits up to 5 s, then answers 504). `GET /v1/stream` sends live updates as Server-Sent Events, resumable with `Last-Event-ID`. Errors are RFC 9457 problem+json."),
    paths(routes::my_rooms, routes::room, routes::history, routes::friends, routes::friend_requests, routes::blocks, routes::presence, stream::stream, stream::ws, calls::call, turn::turn_credentials, routes::live, routes::ready),
    components(schemas(parley_http_kit::Problem, turn::TurnCredentials)),
    modifiers(&BearerAuth, &StandardProblems),
    tags((name = "rooms"), (name = "friends"), (name = "presence"), (name = "stream"), (name = "calls"), (name = "health"))
)]
pub struct ReadApiDoc;

/// `GET /openapi.json`
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ReadApiDoc::openapi())
}
