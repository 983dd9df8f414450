//! Access and refresh tokens: JWT, HS256, with a key id so keys can rotate.

use std::time::Duration;

use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::ApiError;

/// One signing key. Several may verify; the first one signs.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, ***)", self.kid)
    }
}

impl SigningKey {
    /// A key from a secret of at least 32 bytes.
    pub fn new(kid: impl Into<String>, secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("a JWT secret must be at least 32 bytes".into());
        }
        Ok(Self {
            kid: kid.into(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }
}

/// Issues and checks access and refresh tokens.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    keys: Vec<SigningKey>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    iat: i64,
    exp: i64,
    typ: String,
    jti: Uuid,
    /// The session an access token belongs to (none in tokens minted for tests
    /// and load tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
}

const ACCESS: &str = "access";
const REFRESH: &str = "refresh";

impl TokenKeys {
    /// `keys[0]` signs; every key verifies (so a rotated-out key keeps sessions alive).
    pub fn new(keys: Vec<SigningKey>, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        assert!(!keys.is_empty(), "at least one signing key");
        Self {
            keys,
            access_ttl,
            refresh_ttl,
        }
    }

    fn issue(
        &self,
        user_id: Uuid,
        typ: &str,
        ttl: Duration,
        sid: Option<Uuid>,
    ) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            iat: now,
            exp: now + ttl.as_secs() as i64,
            typ: typ.to_string(),
            jti: Uuid::now_v7(),
            sid,
        };
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        encode(&header, &claims, &key.encoding).map_err(ApiError::internal)
    }

    /// An access token of no session (tests and load tools mint these).
    pub fn issue_access(&self, user_id: Uuid) -> Result<String, ApiError> {
        self.issue(user_id, ACCESS, self.access_ttl, None)
    }

    /// An access token of a session.
    pub fn issue_access_in(&self, user_id: Uuid, session_id: Uuid) -> Result<String, ApiError> {
        self.issue(user_id, ACCESS, self.access_ttl, Some(session_id))
    }

    /// A refresh JWT, as releases before server-side sessions issued them (now
    /// only made by tests of the path that still accepts one, once).
    pub fn issue_refresh(&self, user_id: Uuid) -> Result<String, ApiError> {
        self.issue(user_id, REFRESH, self.refresh_ttl, None)
    }

    fn verify(&self, token: &str, typ: &str) -> Result<Uuid, ApiError> {
        self.verify_claims(token, typ).map(|c| c.sub)
    }

    fn verify_claims(&self, token: &str, typ: &str) -> Result<Claims, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid or expired token".into());
        let header = decode_header(token).map_err(|_| invalid())?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| &k.kid == kid)
                .ok_or_else(invalid)?,
            None => return Err(invalid()),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        let data = decode::<Claims>(token, &key.decoding, &validation).map_err(|_| invalid())?;
        if data.claims.typ != typ {
            return Err(invalid());
        }
        Ok(data.claims)
    }

    pub fn verify_access(&self, token: &str) -> Result<Uuid, ApiError> {
        self.verify(token, ACCESS)
    }

    /// The user and session (if any) of an access token.
    pub fn verify_access_session(&self, token: &str) -> Result<(Uuid, Option<Uuid>), ApiError> {
        self.verify_claims(token, ACCESS).map(|c| (c.sub, c.sid))
    }

    pub fn verify_refresh(&self, token: &str) -> Result<Uuid, ApiError> {
        self.verify(token, REFRESH)
    }
}

/// Default token lifetimes: fifteen minutes for access (also how long an ended
/// session's access token may still work), thirty days for refresh.
pub fn default_token_keys(keys: Vec<SigningKey>) -> TokenKeys {
    TokenKeys::new(
        keys,
        Duration::from_secs(15 * 60),
        Duration::from_secs(30 * 24 * 3600),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(kid: &str, secret: &[u8]) -> TokenKeys {
        TokenKeys::new(
            vec![SigningKey::new(kid, secret).unwrap()],
            Duration::from_secs(3600),
            Duration::from_secs(86400),
        )
    }

    #[test]
    fn access_and_refresh_tokens_are_not_interchangeable() {
        let k = keys("k1", &[7; 32]);
        let user = Uuid::now_v7();
        let access = k.issue_access(user).unwrap();
        let refresh = k.issue_refresh(user).unwrap();
        assert_eq!(k.verify_access(&access).unwrap(), user);
        assert_eq!(k.verify_refresh(&refresh).unwrap(), user);
        assert!(k.verify_access(&refresh).is_err());
        assert!(k.verify_refresh(&access).is_err());
    }

    #[test]
    fn a_rotated_key_still_verifies_and_an_unknown_one_does_not() {
        let old = keys("old", &[1; 32]);
        let token = old.issue_access(Uuid::now_v7()).unwrap();
        let rotated = TokenKeys::new(
            vec![
                SigningKey::new("new", &[2; 32]).unwrap(),
                SigningKey::new("old", &[1; 32]).unwrap(),
            ],
            Duration::from_secs(3600),
            Duration::from_secs(86400),
        );
        assert!(rotated.verify_access(&token).is_ok());
        let stranger = keys("old", &[3; 32]);
        assert!(
            stranger.verify_access(&token).is_err(),
            "same kid, other secret"
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let k = TokenKeys::new(
            vec![SigningKey::new("k", &[9; 32]).unwrap()],
            Duration::from_secs(0),
            Duration::from_secs(0),
        );
        let mut token = k.issue_access(Uuid::now_v7()).unwrap();
        // exp = iat: only the 5 s leeway keeps it alive; forge one clearly expired.
        let claims = Claims {
            sub: Uuid::now_v7(),
            iat: 0,
            exp: 1,
            typ: ACCESS.into(),
            jti: Uuid::now_v7(),
            sid: None,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k".into());
        token.clear();
        token.push_str(&encode(&header, &claims, &EncodingKey::from_secret(&[9; 32])).unwrap());
        assert!(k.verify_access(&token).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(SigningKey::new("k", b"too short").is_err());
    }
}
