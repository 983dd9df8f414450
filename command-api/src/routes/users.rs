use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use parley_domain::ids::username_claim_id;
use parley_domain::user::{User, UserCommand, UsernameClaim, UsernameClaimCommand};
use parley_domain::values::{DisplayName, Password, Username};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{hash_password, verify_password};
use crate::engine::{decide, stream, Accepted, Decision, Loaded};
use crate::json::ApiJson;
use crate::meta::RequestMeta;
use crate::problem::{ApiError, Problem};
use crate::AppState;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RegisterRequest {
    /// 3 to 32 characters: lowercase letters, digits, `_`, `.`, `-`.
    pub username: String,
    /// 8 to 128 characters.
    pub password: String,
    /// 1 to 64 characters; the username when absent.
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// Registers a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = RegisterRequest, responses(
    (status = 201, description = "Registered", body = crate::openapi::UserAccepted),
    (status = 409, description = "Username taken", body = Problem),
    (status = 422, description = "Invalid field", body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Accepted, ApiError> {
    let username = Username::parse(body.username.clone())?;
    let password = Password::parse(body.password.clone())?;
    let display_name = DisplayName::parse(
        body.display_name
            .clone()
            .unwrap_or_else(|| username.as_str().to_string()),
    )?;
    let hash = hash_password(password.into_inner()).await?;
    let user_id = Uuid::now_v7();
    let claim_id = username_claim_id(&username);
    let ctx = meta.context(None, &json!({}));
    let now = ctx.now;
    let engine = &*state.engine;
    let (username, display_name, hash) = (&username, &display_name, &hash);
    engine
        .run(&ctx, Some(claim_id), move || async move {
            let claim = engine.load::<UsernameClaim>(claim_id).await?;
            let (_, claimed) = decide(
                &claim,
                UsernameClaimCommand::ClaimUsername {
                    username: username.clone(),
                    user_id,
                },
            )
            .await?;
            let user = Loaded {
                id: user_id,
                state: User::default(),
                version: 0,
            };
            let (_, registered) = decide(
                &user,
                UserCommand::RegisterUser {
                    user_id,
                    username: username.clone(),
                    display_name: display_name.clone(),
                    password_hash: hash.clone(),
                    at: now,
                },
            )
            .await?;
            Ok(Decision {
                streams: vec![stream(&user, &registered), stream(&claim, &claimed)],
                status: StatusCode::CREATED,
                result: json!({ "user_id": user_id }),
                head: None,
                room: None,
            })
        })
        .await
}

fn invalid_login() -> ApiError {
    ApiError::Unauthorized("invalid username or password".into())
}

fn session(state: &AppState, user_id: Uuid) -> Result<Json<Session>, ApiError> {
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    Ok(Json(Session {
        access_token: state.keys.issue_access(user_id)?,
        refresh_token: state.keys.issue_refresh(user_id)?,
        token_type: "Bearer".into(),
        expires_in: state.keys.access_ttl.as_secs(),
    }))
}

/// Logs in: an access token (1 hour) and a refresh token. Attempts are
/// throttled per username (by default 1 per second, bursts of 10).
#[utoipa::path(post, path = "/v1/sessions", tag = "users", request_body = LoginRequest, responses(
    (status = 200, description = "Logged in", body = Session),
    (status = 401, description = "Wrong username or password", body = Problem),
    (status = 429, description = "Too many login attempts for this username; see the Retry-After header", body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<Session>, ApiError> {
    // Before any lookup or password hashing: guessing costs the guesser time, not us CPU.
    state
        .login_limiter
        .check(crate::ratelimit::username_key(&body.username))?;
    let username = Username::parse(body.username).map_err(|_| invalid_login())?;
    let claim = state
        .engine
        .load::<UsernameClaim>(username_claim_id(&username))
        .await?;
    let user_id = claim.state.claimed_by().ok_or_else(invalid_login)?;
    let user = state.engine.load::<User>(user_id).await?;
    let hash = user
        .state
        .password_hash()
        .ok_or_else(invalid_login)?
        .to_string();
    if !verify_password(body.password, hash).await? {
        return Err(invalid_login());
    }
    session(&state, user_id)
}

/// Trades a refresh token for a new session.
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "users", request_body = RefreshRequest, responses(
    (status = 200, description = "A new session", body = Session),
    (status = 401, description = "Invalid or expired refresh token", body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<Session>, ApiError> {
    let user_id = state.keys.verify_refresh(&body.refresh_token)?;
    session(&state, user_id)
}
