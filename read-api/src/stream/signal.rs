//! Call signaling: SDP offers and answers and ICE candidates, relayed as they
//! are between two participants of a call, never stored. The sender's socket
//! checks that both are in the call now (the rooms model's call members);
//! every socket of the recipient gets it, over the [`EphemeralBus`].
//!
//! [`EphemeralBus`]: super::bus::EphemeralBus

use parley_http_kit::ApiError;
use parley_projections::models::calls;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::bus::Ephemeral;
use crate::ReadState;

/// The most JSON a signal's `data` may hold: it crosses replicas in one
/// PostgreSQL notice, whose payload is at most 8,000 bytes. An SDP offer for
/// audio and video is typically 2 to 5 KB; trickle ICE keeps it small.
pub const MAX_SIGNAL_BYTES: usize = 6000;

/// One signal from one participant to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub call_id: Uuid,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub data: serde_json::Value,
}

impl Signal {
    /// The server frame.
    pub fn frame(&self) -> String {
        serde_json::json!({
            "type": "signal",
            "call_id": self.call_id,
            "from_user_id": self.from_user_id,
            "data": self.data,
        })
        .to_string()
    }
}

/// Checks and relays a signal from `me`: 400 for data over
/// [`MAX_SIGNAL_BYTES`] or to oneself, 403 unless both are in the call now
/// (the same answer for a call that does not exist).
pub async fn relay(
    state: &ReadState,
    me: Uuid,
    call_id: Uuid,
    to_user_id: Uuid,
    data: serde_json::Value,
) -> Result<(), ApiError> {
    let size = serde_json::to_string(&data)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if size > MAX_SIGNAL_BYTES {
        return Err(ApiError::BadRequest(format!(
            "signal data is at most {MAX_SIGNAL_BYTES} bytes of JSON ({size} given)"
        )));
    }
    if to_user_id == me {
        return Err(ApiError::BadRequest("a signal goes to someone else".into()));
    }
    let in_call = calls::in_call(state.store.pool(), call_id)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "signal: reading the call failed");
            ApiError::Unavailable("signaling is unavailable for a moment".into())
        })?;
    if !in_call.contains(&me) {
        return Err(ApiError::Forbidden("you are not in this call".into()));
    }
    if !in_call.contains(&to_user_id) {
        return Err(ApiError::Forbidden("that user is not in this call".into()));
    }
    state
        .ephemeral
        .publish(Ephemeral::Signal(Signal {
            call_id,
            from_user_id: me,
            to_user_id,
            data,
        }))
        .await;
    Ok(())
}
