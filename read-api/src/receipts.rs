//! Delivery receipts from WebSockets: the gateway has no write path of its
//! own, so it records a `delivered` frame by sending the command API the same
//! command an HTTP client would (`POST /v1/rooms/{room_id}/delivery-marker`),
//! as the socket's user. The command API keeps every rule (membership, the
//! message's room, idempotence, rate limits).
//!
//! The token it sends is minted here, for the one request, with the keys the
//! read API checks tokens with: a socket outlives the access token it was
//! opened with.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use parley_http_kit::{ApiError, TokenKeys};
use tower::ServiceExt;
use uuid::Uuid;

/// How long one forwarded command may take.
const COMMAND_WITHIN: Duration = Duration::from_secs(5);
/// How long recording one second's `delivered` frames of a socket may take:
/// a command API that hangs must not hold the socket's events back for long.
const RECORD_WITHIN: Duration = Duration::from_secs(2);

/// Where delivery commands go.
#[derive(Clone)]
pub enum CommandApi {
    /// A command API at this base URL (`http://command-api:8081`).
    Url {
        client: reqwest::Client,
        base: String,
    },
    /// The command API's routes in this process (`parley dev`).
    Routes(axum::Router),
}

impl std::fmt::Debug for CommandApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url { base, .. } => write!(f, "CommandApi({base})"),
            Self::Routes(_) => write!(f, "CommandApi(in process)"),
        }
    }
}

impl CommandApi {
    /// A command API reached over HTTP at `base`.
    pub fn url(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "the command API URL must start with http:// or https://, not {base:?}"
        );
        let client = reqwest::Client::builder().timeout(COMMAND_WITHIN).build()?;
        Ok(Self::Url { client, base })
    }

    /// Moves `user`'s delivery marker in `room` to `message`. Refusals come
    /// back as the command API gave them (403, 404, 422, 429); a command API
    /// that cannot be reached is 503.
    pub async fn mark_delivered(
        &self,
        keys: &TokenKeys,
        user: Uuid,
        room: Uuid,
        message: Uuid,
    ) -> Result<(), ApiError> {
        let token = keys.issue_access(user)?;
        let path = format!("/v1/rooms/{room}/delivery-marker");
        let body = serde_json::json!({ "message_id": message }).to_string();
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "receipts: the command API did not answer");
            ApiError::Unavailable("receipts are unavailable for a moment".into())
        };
        let (status, answer) = match self {
            Self::Url { client, base } => {
                let response = client
                    .post(format!("{base}{path}"))
                    .bearer_auth(token)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| unavailable(&e))?;
                let status = response.status().as_u16();
                (status, response.bytes().await.unwrap_or_default().to_vec())
            }
            Self::Routes(routes) => {
                let request = Request::post(path)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .map_err(ApiError::internal)?;
                let response =
                    tokio::time::timeout(COMMAND_WITHIN, routes.clone().oneshot(request))
                        .await
                        .map_err(|e| unavailable(&e))?
                        .map_err(|e| unavailable(&e))?;
                let status = response.status().as_u16();
                let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
                    .await
                    .unwrap_or_default();
                (status, bytes.to_vec())
            }
        };
        refusal(status, &answer)
    }
}

impl CommandApi {
    /// Records one socket's `delivered` frames of the last second (per room,
    /// the newest message) together, within [`RECORD_WITHIN`]: the refusals,
    /// each naming its room or message.
    pub async fn record_all(
        &self,
        keys: &TokenKeys,
        user: Uuid,
        pending: HashMap<Uuid, Uuid>,
    ) -> Vec<ApiError> {
        let all =
            futures::future::join_all(pending.into_iter().map(|(room, message)| async move {
                let done = self.mark_delivered(keys, user, room, message).await;
                done.err().map(|e| naming(e, room, message))
            }));
        match tokio::time::timeout(RECORD_WITHIN, all).await {
            Ok(done) => done.into_iter().flatten().collect(),
            Err(_) => vec![ApiError::Unavailable(
                "receipts are unavailable for a moment".into(),
            )],
        }
    }
}

/// A refusal that says which room or message it is about (a client may have
/// several `delivered` frames recorded at once).
fn naming(e: ApiError, room: Uuid, message: Uuid) -> ApiError {
    match e {
        ApiError::Forbidden(d) => ApiError::Forbidden(format!("room {room}: {d}")),
        ApiError::NotFound(d) => ApiError::NotFound(format!("room {room}: {d}")),
        ApiError::Unprocessable { field, message: d } => ApiError::Unprocessable {
            field,
            message: format!("message {message}: {d}"),
        },
        e => e,
    }
}

/// The command API's answer as this gateway's: its refusals are the client's.
fn refusal(status: u16, body: &[u8]) -> Result<(), ApiError> {
    let detail = || {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("the command API answered {status}"))
    };
    match StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY) {
        s if s.is_success() => Ok(()),
        StatusCode::FORBIDDEN => Err(ApiError::Forbidden(detail())),
        StatusCode::NOT_FOUND => Err(ApiError::NotFound(detail())),
        StatusCode::UNPROCESSABLE_ENTITY => Err(ApiError::Unprocessable {
            field: Some("message_id".into()),
            message: detail(),
        }),
        StatusCode::TOO_MANY_REQUESTS => Err(ApiError::TooManyRequests {
            retry_after_secs: 1,
        }),
        s => {
            tracing::warn!(status = s.as_u16(), detail = %detail(), "receipts: the command API refused a delivery");
            Err(ApiError::Unavailable(
                "receipts are unavailable for a moment".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_pass_through_and_the_rest_is_unavailable() {
        let problem = br#"{"detail":"you are not a member of this room"}"#;
        assert!(refusal(200, b"{}").is_ok());
        assert!(
            matches!(refusal(403, problem), Err(ApiError::Forbidden(d)) if d == "you are not a member of this room")
        );
        assert!(matches!(refusal(404, b""), Err(ApiError::NotFound(_))));
        assert!(matches!(
            refusal(422, b""),
            Err(ApiError::Unprocessable { .. })
        ));
        assert!(matches!(
            refusal(429, b""),
            Err(ApiError::TooManyRequests { .. })
        ));
        // The gateway's own token was refused, or the command API failed:
        // nothing the client can fix.
        assert!(matches!(refusal(401, b""), Err(ApiError::Unavailable(_))));
        assert!(matches!(refusal(500, b""), Err(ApiError::Unavailable(_))));
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(CommandApi::url("http://command-api:8081/").is_ok());
        assert!(CommandApi::url("command-api:8081").is_err());
    }
}
