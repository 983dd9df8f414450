//! Parley's query API: the read models over HTTP.
//!
//! Room data is for members only: a non-member gets 404, not the room's existence.
//! A request carrying a command's `X-Consistency-Token` waits (up to
//! [`Settings::consistency_wait`]) until the read models have applied that write.
//! `GET /v1/stream` follows the caller's rooms and friends live (Server-Sent Events,
//! see [`stream`]).

mod app;
pub mod cache;
pub mod calls;
mod consistency;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod receipts;
mod redaction;
mod routes;
pub mod slots;
pub mod stream;
pub mod turn;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use parley_event_log::SharedLog;
use parley_http_kit::{Authenticates, RateLimiter, TokenKeys};
use parley_projections::{FedBy, Progress, ReadStore};
use tokio_util::sync::CancellationToken;

pub use app::{Config, ReadApi, SOCKETS_CLOSE_WITHIN};
pub use stream::StreamHub;

/// Tunables of the read API.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What feeds the projectors writing the read models, which decides how
    /// the read API tells what they have applied.
    pub fed_by: FedBy,
    pub keys: TokenKeys,
    /// How long a query with a consistency token may wait for the read models.
    pub consistency_wait: Duration,
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: f64,
    /// Events `/v1/stream` keeps for a slow subscriber before closing its stream
    /// (it resumes with `Last-Event-ID`).
    pub stream_capacity: usize,
    /// Bytes of newest history pages kept in memory (see [`cache`]); 0: none.
    pub page_cache_bytes: usize,
    /// Live streams (`/v1/stream` and `/v1/ws`) one caller may hold open at once.
    pub max_streams_per_user: u32,
    /// How many log positions behind the head a stream may resume from; a
    /// `Last-Event-ID` further back is 410 (start again from a fresh page).
    pub stream_resume_window: i64,
    /// WebSockets that may wait for their `auth` frame at once (503 past it),
    /// so that sockets that never authenticate cannot pile up.
    pub max_unauthenticated_sockets: usize,
    /// TURN servers for calls (`GET /v1/turn-credentials`); none: no servers.
    pub turn: Option<turn::TurnSettings>,
    /// Where WebSocket `delivered` frames are recorded; none: refused (503).
    pub commands: Option<receipts::CommandApi>,
}

impl Settings {
    pub fn new(keys: TokenKeys) -> Self {
        Self {
            fed_by: FedBy::Log,
            keys,
            consistency_wait: Duration::from_secs(5),
            rate_limit_per_sec: 50.0,
            rate_limit_burst: 100.0,
            stream_capacity: stream::DEFAULT_CAPACITY,
            page_cache_bytes: 64 << 20,
            max_streams_per_user: 8,
            stream_resume_window: 100_000,
            max_unauthenticated_sockets: 1024,
            turn: None,
            commands: None,
        }
    }
}

/// Everything a query handler needs, cloned per request (every extractor that
/// needs the state clones it), hence one `Arc`.
#[derive(Clone)]
pub struct ReadState(Arc<ReadServices>);

impl std::ops::Deref for ReadState {
    type Target = ReadServices;
    fn deref(&self) -> &ReadServices {
        &self.0
    }
}

/// What [`ReadState`] holds.
#[derive(Clone)]
pub struct ReadServices {
    pub store: ReadStore,
    /// The event log, when reachable: readiness reports how far behind each
    /// projection is.
    pub log: Option<SharedLog>,
    pub keys: Arc<TokenKeys>,
    pub limiter: Arc<RateLimiter>,
    pub consistency_wait: Duration,
    /// Feeds `/v1/stream`; there only with the event log.
    pub stream: Option<StreamHub>,
    /// Whether the models have applied a write, whatever feeds them.
    pub progress: Progress,
    /// Newest history pages and room memberships (Postgres only; see [`cache`]).
    pub cache: Option<Arc<cache::PageCache>>,
    /// Cancelled when the service stops taking connections (SIGTERM): every open
    /// `/v1/stream` then ends with a retry hint and the id to resume after.
    pub closing: CancellationToken,
    /// Set once readiness has seen every read-model table.
    pub models_ready: Arc<std::sync::atomic::AtomicBool>,
    /// Queries waiting for a consistency token, per caller.
    pub waiters: slots::UserSlots,
    /// Open live streams, per caller.
    pub streams_open: slots::UserSlots,
    /// How far back (in log positions) a stream may resume; older is 410.
    pub stream_resume_window: i64,
    /// Typing indicators and call signals between WebSockets, here and on
    /// other replicas.
    pub ephemeral: stream::EphemeralBus,
    /// Places for WebSockets waiting for their `auth` frame.
    pub unauthenticated: Arc<tokio::sync::Semaphore>,
    /// TURN servers for calls, when configured.
    pub turn: Option<Arc<turn::TurnSettings>>,
    /// Where delivery receipts are recorded, when configured.
    pub commands: Option<receipts::CommandApi>,
    /// Open WebSocket sessions: upgraded connections are no longer requests
    /// the HTTP server waits for, so a shutdown waits for these to say
    /// goodbye (see [`ReadState::sockets_closed`]).
    pub sockets: tokio_util::task::TaskTracker,
}

impl Authenticates for ReadState {
    fn token_keys(&self) -> &TokenKeys {
        &self.keys
    }
    fn user_limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl ReadState {
    /// The stream hub's task starts with the first `/v1/stream` request.
    pub fn new(store: ReadStore, log: Option<SharedLog>, settings: Settings) -> Self {
        Self::with_hub_log(store, log.clone(), log, settings)
    }

    /// As [`ReadState::new`], with the live stream's hub tailing `hub_log`: a
    /// handle (and pool) of its own, so resumes reading the backlog through
    /// `log` cannot starve the live stream of connections.
    pub fn with_hub_log(
        store: ReadStore,
        log: Option<SharedLog>,
        hub_log: Option<SharedLog>,
        settings: Settings,
    ) -> Self {
        let progress = Progress::new(store.clone(), log.clone(), settings.fed_by);
        let stream = hub_log
            .map(|hub_log| StreamHub::new(hub_log, progress.clone(), settings.stream_capacity));
        let cache = (settings.page_cache_bytes > 0)
            .then(|| Arc::new(cache::PageCache::new(settings.page_cache_bytes)));
        let ephemeral = stream::EphemeralBus::new(store.clone());
        Self(Arc::new(ReadServices {
            progress,
            cache,
            store,
            log,
            stream,
            keys: Arc::new(settings.keys),
            limiter: Arc::new(RateLimiter::new(
                settings.rate_limit_per_sec,
                settings.rate_limit_burst,
            )),
            consistency_wait: settings.consistency_wait,
            closing: CancellationToken::new(),
            waiters: slots::UserSlots::new(consistency::MAX_WAITS_PER_USER),
            streams_open: slots::UserSlots::new(settings.max_streams_per_user),
            stream_resume_window: settings.stream_resume_window,
            models_ready: Default::default(),
            ephemeral,
            unauthenticated: Arc::new(tokio::sync::Semaphore::new(
                settings.max_unauthenticated_sockets,
            )),
            turn: settings.turn.map(Arc::new),
            commands: settings.commands,
            sockets: tokio_util::task::TaskTracker::new(),
        }))
    }

    /// Waits (at most `within`) until every WebSocket has sent its goodbye
    /// and close frame, once `closing` was cancelled.
    pub async fn sockets_closed(&self, within: std::time::Duration) {
        self.sockets.close();
        if tokio::time::timeout(within, self.sockets.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.sockets.len(),
                "WebSockets still open at exit: their clients resume elsewhere"
            );
        }
    }

    /// The token whose cancellation ends every open stream (SIGTERM).
    pub fn with_closing(mut self, closing: CancellationToken) -> Self {
        Arc::make_mut(&mut self.0).closing = closing;
        self
    }
}

/// The read API with `/health`, `/health/ready` and `/openapi.json` (no socket:
/// tests call it directly).
pub fn router(state: ReadState) -> Router {
    v1_routes(state.clone()).merge(
        Router::new()
            .route("/health", get(routes::live))
            .route("/health/ready", get(routes::ready))
            .route("/openapi.json", get(openapi::serve))
            .with_state(state),
    )
}

/// Only the `/v1` query routes, for merging into another service's router
/// (`parley dev` serves them beside the command API).
pub fn v1_routes(state: ReadState) -> Router {
    Router::new()
        .route("/v1/rooms", get(routes::my_rooms))
        .route("/v1/rooms/{room_id}", get(routes::room))
        .route("/v1/rooms/{room_id}/messages", get(routes::history))
        .route("/v1/friends", get(routes::friends))
        .route("/v1/friend-requests", get(routes::friend_requests))
        .route("/v1/blocks", get(routes::blocks))
        .route("/v1/presence", get(routes::presence))
        .route("/v1/stream", get(stream::stream))
        .route("/v1/ws", get(stream::ws))
        .route("/v1/calls/{call_id}", get(calls::call))
        .route("/v1/turn-credentials", get(turn::turn_credentials))
        .with_state(state)
}
