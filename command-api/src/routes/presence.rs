use axum::extract::State;
use axum::http::StatusCode;
use parley_domain::ids::presence_id;
use parley_domain::presence::{Presence, PresenceCommand};
use parley_domain::values::{PresenceStatus, StatusMessage};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::answers::PresenceSet;
use crate::engine::Accepted;
use crate::meta::RequestMeta;
use crate::routes::on_aggregate;
use crate::AppState;
use parley_http_kit::ApiJson;
use parley_http_kit::Caller;
use parley_http_kit::{ApiError, Problem};

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PresenceRequest {
    /// `online`, `away` or `offline`.
    #[schema(pattern = "^(online|away|offline)$")]
    pub status: String,
    /// Up to 140 characters.
    #[schema(max_length = 140)]
    pub status_message: Option<String>,
}

/// Sets the caller's presence; sending the same status again is a heartbeat
/// (recorded at most every 30 s).
#[utoipa::path(put, path = "/v1/presence", tag = "presence", request_body = PresenceRequest,
    security(("bearer" = [])), responses(
    (status = 200, description = "Presence recorded", body = crate::answers::PresenceAccepted),
    (status = 422, description = "Invalid status", body = Problem)))]
pub async fn set(
    State(state): State<AppState>,
    Caller(me): Caller,
    meta: RequestMeta,
    ApiJson(body): ApiJson<PresenceRequest>,
) -> Result<Accepted, ApiError> {
    let status: PresenceStatus = body.status.parse().map_err(|_| {
        ApiError::unprocessable("status", "must be \"online\", \"away\" or \"offline\"")
    })?;
    let message = body
        .status_message
        .clone()
        .map(StatusMessage::parse)
        .transpose()?;
    let ctx = meta.context(Some(me), &body);
    let now = ctx.now;
    on_aggregate::<Presence, _>(
        &state,
        &ctx,
        presence_id(me),
        StatusCode::OK,
        PresenceSet {
            user_id: me,
            status: status.as_str().to_string(),
        },
        |_| {
            Ok(PresenceCommand::SetPresence {
                user_id: me,
                status,
                status_message: message.clone(),
                at: now,
            })
        },
    )
    .await
}
