//! Sessions: log in, refresh, list, log out (here, elsewhere, everywhere).
//!
//! A refresh token is `{session_id}.{secret}`, stored only as its SHA-256. It
//! rotates on every use; presenting one the session already rotated past
//! means a copy is in other hands, so the whole session ends (reuse
//! detection). Access tokens are short-lived JWTs naming their session; an
//! ended session's access token keeps working until it expires (at most
//! [`TokenKeys::access_ttl`](parley_http_kit::TokenKeys)), never longer.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use parley_domain::ids::username_claim_id;
use parley_domain::user::UsernameClaim;
use parley_domain::values::Username;
use parley_event_log::{Rotation, SessionRecord};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::passwords::{hash_password, verify_password};
use crate::AppState;
use parley_http_kit::CallerSession;
use parley_http_kit::ClientAddr;
use parley_http_kit::{ApiError, Problem};
use parley_http_kit::{ApiJson, ApiPath};

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A session's tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub access_token: String,
    /// Single use: each refresh answers a new one. Presenting a used one again
    /// ends the session.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The session these tokens belong to (see `GET /v1/sessions`).
    pub session_id: Uuid,
}

/// One of the caller's sessions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// When the refresh token stops working unless used before.
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    /// Whether this is the session of the access token that asked.
    pub current: bool,
}

/// `GET /v1/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

fn invalid_login() -> ApiError {
    ApiError::Unauthorized("invalid username or password".into())
}

fn invalid_refresh() -> ApiError {
    ApiError::Unauthorized("invalid or expired refresh token".into())
}

fn refresh_ttl(state: &AppState) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(state.keys.refresh_ttl).unwrap_or(chrono::TimeDelta::days(30))
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new refresh token of `session_id`.
fn new_refresh_token(session_id: Uuid) -> String {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    format!("{session_id}.{}", hex::encode(secret))
}

/// The session id of a refresh token of today's shape.
fn session_of(token: &str) -> Option<Uuid> {
    let (id, secret) = token.split_once('.')?;
    (secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.parse().ok())
        .flatten()
}

fn tokens(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    refresh_token: String,
) -> Result<Json<Session>, ApiError> {
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    Ok(Json(Session {
        access_token: state.keys.issue_access_in(user_id, session_id)?,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: state.keys.access_ttl.as_secs(),
        session_id,
    }))
}

/// Starts session `session_id` of `user_id` and answers its tokens.
async fn start(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    headers: &HeaderMap,
) -> Result<Json<Session>, ApiError> {
    let now = Utc::now();
    let refresh = new_refresh_token(session_id);
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect());
    let record = SessionRecord {
        session_id,
        user_id,
        created_at: now,
        last_used_at: now,
        expires_at: now + refresh_ttl(state),
        user_agent,
    };
    state
        .engine
        .log()
        .start_session(&record, &sha256_hex(&refresh))
        .await?;
    tokens(state, user_id, session_id, refresh)
}

/// A user's password hash: from the credentials store, or (for a user an older
/// release registered, with the hash in its `UserRegistered` v1) from that
/// event, copied into the store on the way.
async fn stored_hash(state: &AppState, user_id: Uuid) -> Result<Option<String>, ApiError> {
    let log = state.engine.log();
    if let Some(hash) = log.password_hash(user_id).await? {
        return Ok(Some(hash));
    }
    let legacy = log
        .load_stream(user_id, 0)
        .await?
        .into_iter()
        .find(|e| e.event_type == "UserRegistered" && e.event_version == 1)
        .and_then(|e| e.payload.get("password_hash")?.as_str().map(String::from));
    if let Some(hash) = &legacy {
        log.set_password_hash(user_id, hash).await?;
    }
    Ok(legacy)
}

/// A hash no password matches, checked when the username is unknown so that an
/// unknown name costs the same argon2 work as a known one (no timing oracle).
async fn decoy_hash() -> Result<String, ApiError> {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return Ok(hash.clone());
    }
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let hash = hash_password(hex::encode(secret)).await?;
    Ok(DECOY.get_or_init(|| hash).clone())
}

/// Logs in: a new session, with an access token (15 minutes) and a refresh
/// token. Failed attempts are throttled per username and client address (by
/// default 1 per second, bursts of 10) and per address (five times that); a
/// success costs nothing. An unknown username takes as long as a wrong password.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = LoginRequest, responses(
    (status = 200, description = "Logged in", body = Session),
    (status = 401, description = "Wrong username or password", body = Problem),
    (status = 429, description = "Too many failed logins for this username from this address, or from this address; see the Retry-After header", body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<Session>, ApiError> {
    // Before any lookup or password hashing: guessing costs the guesser time,
    // not us CPU. A budget per name and address, and one per address; a login
    // that succeeds gives its tokens back, so only failures count, and the
    // owner elsewhere is never locked out by someone hammering their name.
    let address = client.key();
    let name_key = crate::budget_keys::login_key(&body.username, &address);
    let address_key = crate::budget_keys::address_key(&address);
    state.login_limiter.check(name_key)?;
    if let Err(throttled) = state.login_address_limiter.check(address_key) {
        state.login_limiter.refund(name_key);
        return Err(throttled);
    }
    let answer = log_in(&state, &headers, body).await;
    if answer.is_ok() {
        state.login_limiter.refund(name_key);
        state.login_address_limiter.refund(address_key);
    }
    answer
}

async fn log_in(
    state: &AppState,
    headers: &HeaderMap,
    body: LoginRequest,
) -> Result<Json<Session>, ApiError> {
    let user_id = match Username::parse(body.username) {
        Ok(username) => state
            .engine
            .load::<UsernameClaim>(username_claim_id(&username))
            .await?
            .state
            .claimed_by(),
        Err(_) => None,
    };
    let hash = match user_id {
        Some(user_id) => stored_hash(state, user_id).await?,
        None => None,
    };
    let known = hash.is_some();
    let hash = match hash {
        Some(hash) => hash,
        None => decoy_hash().await?,
    };
    let verified = verify_password(body.password, hash).await?;
    match user_id {
        Some(user_id) if known && verified => start(state, user_id, Uuid::now_v7(), headers).await,
        _ => Err(invalid_login()),
    }
}

/// Trades a refresh token for new tokens of the same session (the old refresh
/// token is then spent: presenting it again ends the session).
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "sessions", request_body = RefreshRequest, responses(
    (status = 200, description = "New tokens of the same session", body = Session),
    (status = 401, description = "Invalid, expired, ended or already used refresh token", body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<Session>, ApiError> {
    let token = body.refresh_token.trim();
    let Some(session_id) = session_of(token) else {
        // A refresh JWT of a release before sessions: one last use, which
        // starts a session of today's kind.
        let user_id = state
            .keys
            .verify_refresh(token)
            .map_err(|_| invalid_refresh())?;
        // Spent once: the same token cannot start a second session.
        let session_id = Uuid::now_v7();
        if !state
            .engine
            .log()
            .spend_token(&sha256_hex(token), session_id, Utc::now())
            .await?
        {
            return Err(invalid_refresh());
        }
        return start(&state, user_id, session_id, &headers).await;
    };
    let now = Utc::now();
    let next = new_refresh_token(session_id);
    let rotation = state
        .engine
        .log()
        .rotate_refresh(
            session_id,
            &sha256_hex(token),
            &sha256_hex(&next),
            now,
            now + refresh_ttl(&state),
        )
        .await?;
    match rotation {
        Rotation::Rotated(session) => tokens(&state, session.user_id, session_id, next),
        Rotation::Reused { user_id, .. } => {
            tracing::warn!(%session_id, %user_id, "a spent refresh token was presented again: session ended");
            Err(ApiError::Unauthorized(
                "this refresh token was already used, so the session has ended; log in again"
                    .into(),
            ))
        }
        Rotation::Unknown => Err(invalid_refresh()),
    }
}

/// The caller's live sessions, newest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])), responses(
    (status = 200, description = "The caller's sessions", body = SessionList)))]
pub async fn list(
    State(state): State<AppState>,
    me: CallerSession,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state
        .engine
        .log()
        .sessions_of(me.user_id, Utc::now())
        .await?
        .into_iter()
        .map(|s| SessionView {
            current: Some(s.session_id) == me.session_id,
            session_id: s.session_id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Logs out: ends the session of the access token that asks.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions", security(("bearer" = [])), responses(
    (status = 204, description = "Ended (or already over)")))]
pub async fn end_current(
    State(state): State<AppState>,
    me: CallerSession,
) -> Result<StatusCode, ApiError> {
    if let Some(session_id) = me.session_id {
        state
            .engine
            .log()
            .end_session(me.user_id, session_id, Utc::now())
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ends one of the caller's sessions (another device).
#[utoipa::path(delete, path = "/v1/sessions/{session_id}", tag = "sessions", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)), responses(
    (status = 204, description = "Ended"),
    (status = 404, description = "The caller has no such live session", body = Problem)))]
pub async fn end_one(
    State(state): State<AppState>,
    me: CallerSession,
    ApiPath(session_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let ended = state
        .engine
        .log()
        .end_session(me.user_id, session_id, Utc::now())
        .await?;
    if !ended {
        return Err(ApiError::NotFound(format!("no live session {session_id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Logs out everywhere: ends every session of the caller, this one included.
#[utoipa::path(delete, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])), responses(
    (status = 204, description = "Every session ended")))]
pub async fn end_all(
    State(state): State<AppState>,
    me: CallerSession,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .log()
        .end_sessions(me.user_id, Utc::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_name_their_session_and_nothing_else_parses() {
        let id = Uuid::now_v7();
        let token = new_refresh_token(id);
        assert_eq!(session_of(&token), Some(id));
        assert_ne!(new_refresh_token(id), token, "random");
        for bad in [
            "",
            "x.y",
            &format!("{id}.short"),
            &format!("{id}.{}", "z".repeat(64)),
        ] {
            assert_eq!(session_of(bad), None, "{bad}");
        }
    }
}
