//! `GET /v1/calls/{call_id}`: a call's state and who joined or declined, for
//! the members of its room (to anyone else it does not exist).

use axum::extract::State;
use axum::Json;
use parley_http_kit::{ApiError, ApiPath, Caller};
use parley_projections::models::calls::{self, CallView};
use parley_projections::models::rooms;
use parley_projections::models::Model;
use uuid::Uuid;

use crate::consistency::{wait_for, Consistency};
use crate::ReadState;

/// A call in one of the caller's rooms.
#[utoipa::path(get, path = "/v1/calls/{call_id}", tag = "calls", security(("bearer" = [])),
    params(("call_id" = Uuid, Path)), responses(
    (status = 200, description = "The call", body = CallView),
    (status = 404, description = "No such call, or not a member of its room")))]
pub async fn call(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
    ApiPath(call_id): ApiPath<Uuid>,
) -> Result<Json<CallView>, ApiError> {
    wait_for(
        &state,
        me,
        token,
        &[rooms::Rooms::NAME],
        state.consistency_wait,
    )
    .await?;
    let pool = state.store.pool();
    let missing = || ApiError::NotFound(format!("call {call_id} not found"));
    let call = calls::call(pool, call_id).await?.ok_or_else(missing)?;
    if !rooms::is_member(pool, call.room_id, me).await? {
        return Err(missing());
    }
    Ok(Json(call))
}
