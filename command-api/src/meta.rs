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
use crate::problem::ApiError;

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

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
        Ok(Self {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            request_id: header(parts, "x-request-id").unwrap_or_else(|| Uuid::now_v7().to_string()),
            correlation_id: header(parts, "x-correlation-id"),
            traceparent: header(parts, "traceparent"),
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
