use axum::extract::State;
use axum::http::StatusCode;
use parley_domain::ids::username_claim_id;
use parley_domain::user::{User, UserCommand, UsernameClaim, UsernameClaimCommand};
use parley_domain::values::{DisplayName, Password, Username};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::answers::UserRef;
use crate::engine::{decide, stream, Accepted, Decision, Loaded};
use crate::meta::RequestMeta;
use crate::passwords::hash_password;
use crate::AppState;
use parley_http_kit::ApiJson;
use parley_http_kit::ClientAddr;
use parley_http_kit::{ApiError, Problem};

/// Registrations hashing a password at once (the hashing queue holds 1,024).
static REGISTRATIONS_HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RegisterRequest {
    /// 3 to 32 characters: letters, digits, `_`, `.`, `-`; trimmed and
    /// lowercased (` Alice` registers `alice`).
    #[schema(pattern = r"^\s*[A-Za-z0-9_.\-]{3,32}\s*$")]
    pub username: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// 1 to 64 characters; the username when absent.
    #[schema(min_length = 1, max_length = 64)]
    pub display_name: Option<String>,
}

/// Registers a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = RegisterRequest, responses(
    (status = 201, description = "Registered", body = crate::answers::UserAccepted),
    (status = 409, description = "Username taken", body = Problem),
    (status = 429, description = "Too many registrations from this address; see the Retry-After header", body = Problem),
    (status = 422, description = "Invalid field", body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientAddr,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Accepted, ApiError> {
    // Per client address, before any hashing: a flood of sign-ups from one
    // place neither fills the user table nor the password hashing pool.
    state
        .register_limiter
        .check(crate::budget_keys::address_key(&client.key()))?;
    let username = Username::parse(body.username.clone())?;
    let password = Password::parse(body.password.clone())?;
    let display_name = DisplayName::parse(
        body.display_name
            .clone()
            .unwrap_or_else(|| username.as_str().to_string()),
    )?;
    // Registrations may hold at most a quarter of the hashing queue, so a flood
    // of them (from many addresses) cannot crowd out logins.
    let _hashing = REGISTRATIONS_HASHING.try_acquire().map_err(|_| {
        ApiError::Unavailable("too many registrations in progress; retry shortly".into())
    })?;
    let hash = hash_password(password.into_inner()).await?;
    let user_id = Uuid::now_v7();
    let claim_id = username_claim_id(&username);
    let ctx = meta.context(None, &json!({}));
    let now = ctx.now;
    let engine = &*state.engine;
    // The hash goes to the credentials store, never into an event. It is stored
    // first: a registration that then fails leaves a row for a user id nobody
    // holds, which is removed (and harmless if that fails too).
    engine.log().set_password_hash(user_id, &hash).await?;
    let (username, display_name) = (&username, &display_name);
    let registered = engine
        .run(&ctx, Some(claim_id), move || async move {
            let claim = engine.load::<UsernameClaim>(claim_id).await?;
            let (_, claimed) = decide(
                &claim,
                UsernameClaimCommand::ClaimUsername {
                    username: username.clone(),
                    user_id,
                },
            )?;
            let lookalike = lookalike_claim(engine, username, user_id).await?;
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
                    at: now,
                },
            )?;
            Ok(Decision {
                streams: vec![
                    stream(&user, &registered),
                    stream(&claim, &claimed),
                    lookalike,
                ],
                status: StatusCode::CREATED,
                result: json!(UserRef { user_id }),
                head: None,
                room: None,
            })
        })
        .await;
    // Only a registration refused before anything was written (a taken or
    // look-alike name, a rule) may take its hash back: after a lost commit
    // answer the user may exist, and a row too many is harmless.
    if let Err(
        ApiError::Conflict(_) | ApiError::Unprocessable { .. } | ApiError::IdOfAnotherKind(_),
    ) = &registered
    {
        if let Err(e) = engine.log().forget_password_hash(user_id).await {
            tracing::warn!(error = %e, "could not remove the hash of a failed registration");
        }
    }
    registered
}

/// The second claim of a registration: on everything that looks like the
/// username (its TR39 skeleton), so `paypa1` cannot sit beside `paypal`. A
/// user registered before these claims has none; the exact claim of the
/// skeleton, when it is itself a username, covers the common case of them
/// (`paypa1` is refused beside an old `paypal`).
async fn lookalike_claim(
    engine: &crate::Engine,
    username: &Username,
    user_id: Uuid,
) -> Result<parley_event_log::StreamWrite, ApiError> {
    let taken = || ApiError::Conflict("a username that looks the same is taken".into());
    let skeleton = parley_domain::ids::lookalike_key(username);
    if let Ok(plain) = Username::parse_stored(skeleton) {
        if &plain != username {
            let older = engine
                .load::<UsernameClaim>(username_claim_id(&plain))
                .await?;
            if older.state.claimed_by().is_some() {
                return Err(taken());
            }
        }
    }
    let claim = engine
        .load::<UsernameClaim>(parley_domain::ids::username_lookalike_id(username))
        .await?;
    let (_, claimed) = decide(
        &claim,
        UsernameClaimCommand::ClaimUsername {
            username: username.clone(),
            user_id,
        },
    )
    .map_err(|e| match e {
        ApiError::Conflict(_) => taken(),
        other => other,
    })?;
    Ok(stream(&claim, &claimed))
}
