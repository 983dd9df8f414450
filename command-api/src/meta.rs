//! Request facts that travel into event metadata: request id, correlation id,
//! W3C traceparent, and the client's idempotency key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Method;
use chrono::Utc;
use parley_event_log::Metadata;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::engine::{CommandContext, IdempotencyScope};
use parley_http_kit::ApiError;

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;
/// Longest accepted `X-Request-Id` and `X-Correlation-Id`: every event of the
/// request stores them, so their size is bounded like any other field.
const MAX_ID_LEN: usize = 128;

pub struct RequestMeta {
    method: Method,
    path: String,
    request_id: String,
    correlation_id: Option<String>,
    traceparent: Option<String>,
    idempotency_key: Option<String>,
}

fn header(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// An id header of at most [`MAX_ID_LEN`] characters (400 when longer).
fn bounded(parts: &Parts, name: &str) -> Result<Option<String>, ApiError> {
    let value = header(parts, &name.to_ascii_lowercase());
    if value.as_ref().is_some_and(|v| v.len() > MAX_ID_LEN) {
        return Err(ApiError::BadRequest(format!(
            "{name} must be at most {MAX_ID_LEN} characters"
        )));
    }
    Ok(value)
}

/// `version-traceid-parentid-flags`: 2, 32, 16 and 2 lowercase hex digits.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2].iter().zip(&parts).all(|(len, part)| {
            part.len() == *len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let idempotency_key = header(parts, "idempotency-key");
        if let Some(key) = &idempotency_key {
            if key.len() > MAX_KEY_LEN {
                return Err(ApiError::unprocessable(
                    "Idempotency-Key",
                    format!("at most {MAX_KEY_LEN} characters"),
                ));
            }
        }
        let request_id = bounded(parts, "X-Request-Id")?;
        let correlation_id = bounded(parts, "X-Correlation-Id")?;
        Ok(Self {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            request_id: request_id.unwrap_or_else(|| Uuid::now_v7().to_string()),
            correlation_id,
            // W3C Trace Context: a malformed traceparent is ignored, not refused.
            traceparent: header(parts, "traceparent").filter(|t| is_traceparent(t)),
            idempotency_key,
        })
    }
}

impl RequestMeta {
    /// The command context for `actor`, fingerprinting the request body so a key
    /// reused for a different request is refused.
    pub fn context(&self, actor: Option<Uuid>, body: &impl Serialize) -> CommandContext {
        let idempotency = match (&self.idempotency_key, actor) {
            (Some(key), Some(actor)) => {
                let mut digest = Sha256::new();
                digest.update(self.method.as_str());
                digest.update(b" ");
                digest.update(self.path.as_bytes());
                digest.update(b" ");
                digest.update(serde_json::to_vec(body).unwrap_or_default());
                Some(IdempotencyScope {
                    scope: format!("{actor}:{key}"),
                    fingerprint: hex::encode(digest.finalize()),
                })
            }
            _ => None,
        };
        CommandContext {
            actor_id: actor,
            metadata: Metadata {
                actor_id: actor,
                correlation_id: Some(
                    self.correlation_id
                        .clone()
                        .unwrap_or_else(|| self.request_id.clone()),
                ),
                causation_id: None,
                idempotency_key: self.idempotency_key.clone(),
                traceparent: self.traceparent.clone(),
                request_id: Some(self.request_id.clone()),
            },
            idempotency,
            now: Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_traceparent;

    #[test]
    fn traceparent_follows_the_w3c_shape() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            &format!("00-{}-00f067aa0ba902b7-01", "a".repeat(5000)),
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
    }
}
