//! `GET /v1/turn-credentials`: short-lived credentials for the TURN servers a
//! call's media goes through when a direct path fails, by the TURN REST API
//! convention (draft-uberti-behave-turn-rest, what coturn's
//! `use-auth-secret` implements): `username = "{expiry}:{user_id}"`,
//! `credential = base64(HMAC-SHA1(secret, username))`. The TURN server
//! shares the secret and checks both, so Parley never tells it about users,
//! and a leaked credential dies by itself.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use parley_http_kit::{ApiError, Caller};
use serde::Serialize;
use sha1::Sha1;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ReadState;

/// The shortest secret accepted (as for the token secret).
pub const MIN_SECRET_BYTES: usize = 16;

/// Where calls relay their media, and the secret shared with those servers.
#[derive(Clone)]
pub struct TurnSettings {
    /// `turn:` / `turns:` (and `stun:`) URLs handed to clients as they are.
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    /// How long a credential lasts.
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSettings")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnSettings {
    /// Checks the settings an operator gave: at least one URL of a TURN or
    /// STUN scheme, a secret of [`MIN_SECRET_BYTES`] or more, a TTL of a
    /// minute to a week.
    pub fn new(urls: Vec<String>, secret: &str, ttl: Duration) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("a TURN secret needs at least one TURN URL".into());
        }
        if let Some(bad) = urls.iter().find(|u| {
            !["turn:", "turns:", "stun:", "stuns:"]
                .iter()
                .any(|s| u.starts_with(s))
        }) {
            return Err(format!(
                "TURN URL {bad:?} must start with turn:, turns:, stun: or stuns:"
            ));
        }
        if secret.trim().len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the TURN secret must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        if !(60..=7 * 86_400).contains(&ttl.as_secs()) {
            return Err("the TURN credential TTL must be between 60 s and 7 days".into());
        }
        Ok(Self {
            urls,
            secret: secret.trim().as_bytes().to_vec(),
            ttl,
        })
    }

    /// A credential for `user` that expires at `expiry` (Unix seconds).
    pub fn credential(&self, user: Uuid, expiry: i64) -> (String, String) {
        let username = format!("{expiry}:{user}");
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(username.as_bytes());
        let credential =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        (username, credential)
    }
}

/// TURN credentials for the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnCredentials {
    /// The TURN (and STUN) servers, for `RTCPeerConnection`'s `iceServers`;
    /// empty when none is configured.
    pub urls: Vec<String>,
    /// `"{expiry}:{user_id}"`, expiry in Unix seconds.
    pub username: String,
    /// base64 of HMAC-SHA1(secret, username).
    pub credential: String,
    /// Seconds the credential lasts.
    pub ttl: u64,
}

/// Time-limited TURN credentials for the caller's calls.
///
/// The TURN REST API convention: the TURN server shares the secret and checks
/// the expiry in the username itself. Ask again for each call. With no TURN
/// server configured, `urls` is empty (and the rest too).
#[utoipa::path(get, path = "/v1/turn-credentials", tag = "calls", security(("bearer" = [])),
    responses(
    (status = 200, description = "Credentials", body = TurnCredentials),
    (status = 401, description = "No valid token")))]
pub async fn turn_credentials(
    State(state): State<ReadState>,
    Caller(me): Caller,
) -> Result<Json<TurnCredentials>, ApiError> {
    // No TURN server is an answer, not an error: calls then try direct
    // paths only.
    let Some(turn) = &state.turn else {
        return Ok(Json(TurnCredentials {
            urls: Vec::new(),
            username: String::new(),
            credential: String::new(),
            ttl: 0,
        }));
    };
    let expiry = chrono::Utc::now().timestamp() + turn.ttl.as_secs() as i64;
    let (username, credential) = turn.credential(me, expiry);
    Ok(Json(TurnCredentials {
        urls: turn.urls.clone(),
        username,
        credential,
        ttl: turn.ttl.as_secs(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TurnSettings {
        TurnSettings::new(
            vec!["turn:turn.example.com:3478".into()],
            "turn-secret-0123456789abcdef",
            Duration::from_secs(86_400),
        )
        .unwrap()
    }

    /// Python's `base64.b64encode(hmac.new(secret, username, hashlib.sha1).digest())`
    /// gave the expected value: what coturn computes from the same secret.
    #[test]
    fn the_credential_is_the_turn_rest_hmac() {
        let user: Uuid = "0190a6f0-0000-7000-8000-000000000001".parse().unwrap();
        let (username, credential) = settings().credential(user, 1_767_225_600);
        assert_eq!(username, "1767225600:0190a6f0-0000-7000-8000-000000000001");
        assert_eq!(credential, "Tc+cZyioYzzk7biV2c7AF04p08M=");
    }

    #[test]
    fn bad_settings_are_refused() {
        let ttl = Duration::from_secs(3600);
        let secret = "turn-secret-0123456789abcdef";
        assert!(TurnSettings::new(vec![], secret, ttl).is_err());
        assert!(TurnSettings::new(vec!["http://x".into()], secret, ttl).is_err());
        assert!(TurnSettings::new(vec!["turn:x".into()], "short", ttl).is_err());
        assert!(TurnSettings::new(vec!["turn:x".into()], secret, Duration::from_secs(5)).is_err());
        assert!(format!("{:?}", settings()).contains("<redacted>"));
        assert!(!format!("{:?}", settings()).contains(secret));
    }
}
