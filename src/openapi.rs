//! The OpenAPI document of `parley dev`, which serves both APIs on one port:
//! the command API's, plus the read API's `/v1` operations. It lives with the
//! binary, the one crate that knows both services.

use axum::Json;
use parley_command_api::openapi::CommandApiDoc;
use parley_read_api::openapi::ReadApiDoc;
use utoipa::OpenApi;

pub fn combined() -> utoipa::openapi::OpenApi {
    let mut read = ReadApiDoc::openapi();
    read.paths.paths.retain(|path, _| path.starts_with("/v1/"));
    let mut doc = CommandApiDoc::openapi();
    doc.info.title = "Parley (dev: command and read APIs)".to_string();
    doc.merge(read);
    doc
}

/// `GET /openapi.json` of `parley dev`.
pub async fn serve_combined() -> Json<utoipa::openapi::OpenApi> {
    Json(combined())
}
