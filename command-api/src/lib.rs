//! Parley's command API: every write of the v1 HTTP API.
//!
//! A request is authenticated, parsed into typed domain values, decided by a pure
//! aggregate (`parley-domain`) and appended to the event log. The answer carries the
//! events' positions and a consistency token that the read API can wait on.

pub mod answers;
mod app;
mod budget_keys;
pub mod engine;
mod meta;
pub mod metrics;
pub mod openapi;
pub mod passwords;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use parley_event_log::SharedLog;

pub use app::{CommandApi, Config};
pub use engine::Engine;
use parley_http_kit::{
    Authenticates, Cidr, RateLimiter, TokenKeys, TrustsProxies, BODY_LIMIT_BYTES,
};

/// Tunables of the command API; defaults suit production.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keys: TokenKeys,
    /// Requests per second per user (0 disables limiting).
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: f64,
    /// Login attempts per second per username, against password guessing
    /// (0 here or in `login_burst` disables login throttling).
    pub login_rate_per_sec: f64,
    /// Login attempts a username may make at once before being throttled.
    pub login_burst: f64,
    /// Server-side retries of a command that hit a version conflict.
    pub command_retries: u32,
    /// How long a cached room may answer membership checks before it is reloaded
    /// (another replica's changes become visible after at most this long).
    pub room_cache_ttl: Duration,
    /// Proxies whose `X-Forwarded-For` names the client (nobody else's does).
    pub trusted_proxies: Vec<Cidr>,
    /// Registrations one client address may make per hour (0: no limit).
    pub registrations_per_hour: f64,
    /// How long a command's stored answer (for `Idempotency-Key` retries) is
    /// kept; older ones are pruned and a retry then runs as a new command.
    /// Zero keeps them forever.
    pub command_result_retention: Duration,
    /// How long a call rings before it is a missed call.
    pub call_ring_timeout: Duration,
}

impl Settings {
    pub fn new(keys: TokenKeys) -> Self {
        Self {
            keys,
            rate_limit_per_sec: 50.0,
            rate_limit_burst: 100.0,
            login_rate_per_sec: 1.0,
            login_burst: 10.0,
            command_retries: 8,
            room_cache_ttl: engine::ROOM_CACHE_TTL,
            command_result_retention: Duration::from_secs(24 * 3600),
            trusted_proxies: Vec::new(),
            registrations_per_hour: 20.0,
            call_ring_timeout: Duration::from_secs(45),
        }
    }
}

/// Everything a handler needs, cloned per request (every `State` extraction
/// clones it), hence one `Arc`: one reference count to touch, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Services {
    pub engine: Arc<Engine>,
    pub keys: Arc<TokenKeys>,
    pub limiter: Arc<RateLimiter>,
    /// Failed logins, keyed by [`budget_keys::login_key`] (a username from an
    /// address).
    pub login_limiter: Arc<RateLimiter>,
    /// Failed logins from one address, whatever the username
    /// ([`budget_keys::address_key`]).
    pub login_address_limiter: Arc<RateLimiter>,
    /// Registrations from one address ([`budget_keys::address_key`]).
    pub register_limiter: Arc<RateLimiter>,
    /// See [`Settings::trusted_proxies`].
    pub trusted_proxies: Arc<Vec<Cidr>>,
    /// See [`Settings::call_ring_timeout`].
    pub ring_timeout: chrono::Duration,
    /// Calls one user may start: a call rings every other member, so a
    /// loop of them would be a way to harass a room.
    pub call_limiter: Arc<RateLimiter>,
}

impl Authenticates for AppState {
    fn token_keys(&self) -> &TokenKeys {
        &self.keys
    }
    fn user_limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl TrustsProxies for AppState {
    fn trusted_proxies(&self) -> &[Cidr] {
        &self.trusted_proxies
    }
}

impl AppState {
    /// The state, and (with a retention) the task pruning old command results,
    /// which ends once the state is dropped.
    pub fn new(log: SharedLog, settings: Settings) -> Self {
        let engine = Arc::new(Engine::new(
            log,
            settings.command_retries,
            settings.room_cache_ttl,
        ));
        if !settings.command_result_retention.is_zero() {
            tokio::spawn(engine::prune_command_results(
                Arc::downgrade(&engine),
                settings.command_result_retention,
            ));
        }
        let state = Self(Arc::new(Services {
            engine,
            keys: Arc::new(settings.keys),
            limiter: Arc::new(RateLimiter::new(
                settings.rate_limit_per_sec,
                settings.rate_limit_burst,
            )),
            login_limiter: Arc::new(if settings.login_burst > 0.0 {
                RateLimiter::new(settings.login_rate_per_sec, settings.login_burst)
            } else {
                RateLimiter::disabled()
            }),
            // One address may fail on several names (a household, an office
            // behind one NAT): five times one name's budget.
            login_address_limiter: Arc::new(if settings.login_burst > 0.0 {
                RateLimiter::new(
                    settings.login_rate_per_sec * 5.0,
                    settings.login_burst * 5.0,
                )
            } else {
                RateLimiter::disabled()
            }),
            register_limiter: Arc::new(if settings.registrations_per_hour > 0.0 {
                RateLimiter::new(
                    settings.registrations_per_hour / 3600.0,
                    settings.registrations_per_hour,
                )
            } else {
                RateLimiter::disabled()
            }),
            trusted_proxies: Arc::new(settings.trusted_proxies),
            ring_timeout: chrono::Duration::from_std(settings.call_ring_timeout)
                .unwrap_or(chrono::Duration::seconds(45)),
            // Three at once, then one every ten seconds.
            call_limiter: Arc::new(RateLimiter::new(0.1, 3.0)),
        }));
        tokio::spawn(routes::calls::expire_unanswered(Arc::downgrade(&state.0)));
        state
    }
}

/// The command API's routes (no socket: tests call it directly).
pub fn router(state: AppState) -> Router {
    routes(state).route("/openapi.json", get(openapi::serve))
}

/// Every route of [`router`] but `/openapi.json`, for a process that serves
/// more beside them and one document for all (`parley dev`).
pub fn routes(state: AppState) -> Router {
    use routes::{calls, friends, messages, presence, rooms, sessions, users};
    Router::new()
        .route("/v1/users", post(users::register))
        .route(
            "/v1/sessions",
            post(sessions::login)
                .get(sessions::list)
                .delete(sessions::end_all),
        )
        .route("/v1/sessions/refresh", post(sessions::refresh))
        .route("/v1/sessions/current", delete(sessions::end_current))
        .route("/v1/sessions/{session_id}", delete(sessions::end_one))
        .route("/v1/rooms", post(rooms::create))
        .route("/v1/rooms/{room_id}/join", post(rooms::join))
        .route("/v1/rooms/{room_id}/leave", post(rooms::leave))
        .route("/v1/rooms/{room_id}/invites", post(rooms::invite))
        .route("/v1/rooms/{room_id}/members/{user_id}", delete(rooms::kick))
        .route(
            "/v1/rooms/{room_id}/bans/{user_id}",
            put(rooms::ban).delete(rooms::unban),
        )
        .route(
            "/v1/rooms/{room_id}/members/{user_id}/role",
            put(rooms::change_role),
        )
        .route("/v1/direct-rooms", post(rooms::direct))
        .route(
            "/v1/rooms/{room_id}/messages/{message_id}",
            put(messages::send)
                .patch(messages::edit)
                .delete(messages::redact),
        )
        .route(
            "/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}",
            put(messages::react).delete(messages::unreact),
        )
        .route(
            "/v1/rooms/{room_id}/read-marker",
            post(messages::read_marker),
        )
        .route("/v1/rooms/{room_id}/calls", post(calls::start))
        .route("/v1/calls/{call_id}/accept", post(calls::accept))
        .route("/v1/calls/{call_id}/decline", post(calls::decline))
        .route("/v1/calls/{call_id}/leave", post(calls::leave))
        .route(
            "/v1/rooms/{room_id}/delivery-marker",
            post(messages::delivery_marker),
        )
        .route("/v1/friend-requests", post(friends::request))
        .route(
            "/v1/friend-requests/{request_id}/accept",
            post(friends::accept),
        )
        .route(
            "/v1/friend-requests/{request_id}/decline",
            post(friends::decline),
        )
        .route("/v1/friend-requests/{request_id}", delete(friends::cancel))
        .route("/v1/friends/{user_id}", delete(friends::unfriend))
        .route(
            "/v1/blocks/{user_id}",
            put(friends::block).delete(friends::unblock),
        )
        .route("/v1/presence", put(presence::set))
        .route_layer(axum::middleware::from_fn(metrics::count_commands))
        .merge(command_api_meta_routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
}

fn command_api_meta_routes() -> Router<AppState> {
    use routes::health;
    Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
}
