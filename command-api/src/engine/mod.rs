//! Runs commands: load an aggregate, let it decide, append its events.
//!
//! - Aggregates load from their latest snapshot plus the events after it; every
//!   [`SNAPSHOT_EVERY`] events a new snapshot is stored, so a long stream (a busy
//!   room, a user online for months) never costs its whole history to load.
//! - Commands on one aggregate are serialized inside the process by a striped lock,
//!   so replicas of this process are the only source of version conflicts; those
//!   are retried here a bounded number of times before the client sees 409.
//! - A command sent with an `Idempotency-Key` stores its answer in the same
//!   transaction as its events; a retry gets that answer and appends nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use dashmap::DashMap;
use parley_domain::codec::EventCodec;
use parley_domain::room::Room;
use parley_domain::user::User;
use parley_domain::Decide;
use parley_event_log::{
    AppendRequest, AppendedEvent, CommandResult, ConsistencyToken, IdempotencyRecord, LogError,
    Metadata, NewEvent, SharedLog, StreamHead, StreamWrite,
};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use parley_http_kit::ApiError;

mod loading;
mod pruning;

use loading::snapshot;
pub use loading::{load, SNAPSHOT_EVERY};
pub use pruning::prune_command_results;

/// Lock stripes for per-aggregate serialization.
const STRIPES: usize = 1024;
/// How long a cached room may be used for read-only checks (membership on send)
/// before it is reloaded, by default. Writes to a room always re-check its version.
pub const ROOM_CACHE_TTL: Duration = Duration::from_secs(2);
const ROOM_CACHE_MAX: usize = 100_000;

/// An aggregate at a version.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub id: Uuid,
    pub state: A,
    pub version: i64,
}

/// What a command decided: the streams to append and the answer to give.
pub struct Decision {
    pub streams: Vec<StreamWrite>,
    pub status: StatusCode,
    /// The answer's JSON object; `positions` and `consistency_token` are added to it.
    pub result: Value,
    /// For a command that appends nothing: the stream whose head the token names.
    pub head: Option<(Uuid, i64)>,
    /// A room whose new state should be cached after a successful append.
    pub room: Option<Loaded<Room>>,
}

/// Per-request facts that go into event metadata and idempotency.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub actor_id: Option<Uuid>,
    pub metadata: Metadata,
    pub idempotency: Option<IdempotencyScope>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct IdempotencyScope {
    pub scope: String,
    pub fingerprint: String,
}

/// A command's answer: status, JSON body and `X-Consistency-Token` header.
#[derive(Debug)]
pub struct Accepted {
    pub status: StatusCode,
    pub result: Value,
    pub appended: Vec<AppendedEvent>,
    pub token: Option<ConsistencyToken>,
}

impl Accepted {
    fn new(status: StatusCode, result: Value, appended: Vec<AppendedEvent>) -> Self {
        let token = ConsistencyToken::after_all(&appended);
        Self {
            status,
            result,
            appended,
            token,
        }
    }
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        let mut body = match self.result {
            Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("result".into(), other);
                map
            }
        };
        let token = self.token.map(|t| t.encode());
        body.insert(
            "positions".into(),
            json!(self.appended.iter().map(|e| e.position).collect::<Vec<_>>()),
        );
        body.insert("consistency_token".into(), json!(token));
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(token) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
            response.headers_mut().insert("x-consistency-token", token);
        }
        response
    }
}

/// The command engine shared by every handler.
pub struct Engine {
    log: SharedLog,
    retries: u32,
    room_cache_ttl: Duration,
    stripes: Vec<Arc<Mutex<()>>>,
    rooms: DashMap<Uuid, (Loaded<Room>, Instant)>,
    known_users: DashMap<Uuid, ()>,
}

/// Encodes an aggregate's events for the log.
pub fn stream<A>(loaded: &Loaded<A>, events: &[A::Event]) -> StreamWrite
where
    A: Aggregate,
    A::Event: EventCodec,
{
    StreamWrite {
        aggregate_type: A::TYPE.to_string(),
        aggregate_id: loaded.id,
        expected_version: loaded.version,
        events: events
            .iter()
            .map(|e| NewEvent {
                event_type: e.event_type().to_string(),
                event_version: e.event_version() as i32,
                payload: e.to_payload(),
            })
            .collect(),
    }
}

/// Lets an aggregate decide on a command (its pure [`Decide`]), returning its
/// next state and the events, without touching the original.
pub fn decide<A>(
    loaded: &Loaded<A>,
    command: A::Command,
) -> Result<(Loaded<A>, Vec<A::Event>), ApiError>
where
    A: Decide + Clone,
{
    let events = loaded.state.decide(command)?;
    let mut next = loaded.state.clone();
    for event in &events {
        next.apply(event.clone());
    }
    Ok((
        Loaded {
            id: loaded.id,
            state: next,
            version: loaded.version + events.len() as i64,
        },
        events,
    ))
}

impl Engine {
    pub fn new(log: SharedLog, retries: u32, room_cache_ttl: Duration) -> Self {
        Self {
            log,
            retries,
            room_cache_ttl,
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
            rooms: DashMap::new(),
            known_users: DashMap::new(),
        }
    }

    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// Serializes commands on one aggregate within this process.
    pub async fn lock(&self, aggregate_id: Uuid) -> OwnedMutexGuard<()> {
        let stripe = (aggregate_id.as_u128() % STRIPES as u128) as usize;
        self.stripes[stripe].clone().lock_owned().await
    }

    /// Loads an aggregate from its snapshot and the events after it.
    pub async fn load<A>(&self, id: Uuid) -> Result<Loaded<A>, ApiError>
    where
        A: Aggregate,
        A::Event: EventCodec,
    {
        load(&self.log, id).await
    }

    /// A room, from the cache when fresh enough for read-only checks.
    pub async fn room_for_check(&self, id: Uuid) -> Result<Loaded<Room>, ApiError> {
        if let Some(entry) = self.rooms.get(&id) {
            if entry.1.elapsed() < self.room_cache_ttl {
                return Ok(entry.0.clone());
            }
        }
        let loaded = self.load::<Room>(id).await?;
        self.cache_room(loaded.clone());
        Ok(loaded)
    }

    fn cache_room(&self, room: Loaded<Room>) {
        if !room.state.exists() {
            return;
        }
        if self.rooms.len() >= ROOM_CACHE_MAX {
            self.rooms.clear();
        }
        self.rooms.insert(room.id, (room, Instant::now()));
    }

    /// Whether a user is registered (users are never removed, so a yes is cached).
    pub async fn user_exists(&self, id: Uuid) -> Result<bool, ApiError> {
        if self.known_users.contains_key(&id) {
            return Ok(true);
        }
        let user = match self.load::<User>(id).await {
            Ok(user) => user,
            Err(ApiError::IdOfAnotherKind(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if user.state.is_registered() {
            self.known_users.insert(id, ());
            return Ok(true);
        }
        Ok(false)
    }

    /// 404 unless the user is registered.
    pub async fn require_user(&self, id: Uuid) -> Result<(), ApiError> {
        if self.user_exists(id).await? {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("user {id} not found")))
        }
    }

    /// Runs a command: replays a stored answer for a repeated idempotency key,
    /// otherwise decides (under the aggregate's lock) and appends, retrying on
    /// version conflicts.
    pub async fn run<F, Fut>(
        &self,
        ctx: &CommandContext,
        lock: Option<Uuid>,
        mut attempt: F,
    ) -> Result<Accepted, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Decision, ApiError>>,
    {
        if let Some(idem) = &ctx.idempotency {
            if let Some(stored) = self.log.command_result(&idem.scope).await? {
                return replay(stored, idem);
            }
        }
        let _guard = match lock {
            Some(id) => Some(self.lock(id).await),
            None => None,
        };
        let mut tries = 0;
        loop {
            let decision = attempt().await?;
            let touched: Vec<Uuid> = decision.streams.iter().map(|s| s.aggregate_id).collect();
            match self.commit(ctx, decision).await {
                Err(CommitError::Conflict) if tries < self.retries => {
                    tries += 1;
                    for id in touched {
                        self.rooms.remove(&id);
                    }
                    let backoff = rand::thread_rng().gen_range(1..=(2u64 << tries.min(6)));
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                Err(CommitError::Conflict) => {
                    for id in touched {
                        self.rooms.remove(&id);
                    }
                    return Err(ApiError::Conflict(
                        "the resource kept changing concurrently; retry the request".into(),
                    ));
                }
                Err(CommitError::Duplicate) => {
                    let idem = ctx.idempotency.as_ref().expect("duplicate implies a key");
                    let stored = self.log.command_result(&idem.scope).await?.ok_or_else(|| {
                        ApiError::internal(anyhow::anyhow!("idempotency record vanished"))
                    })?;
                    return replay(stored, idem);
                }
                Err(CommitError::Api(e)) => return Err(e),
                Ok(accepted) => return Ok(accepted),
            }
        }
    }

    /// Runs a command that creates aggregate `id`, an id the client chose,
    /// which is the command's idempotency key: no lock and no retry, for if the
    /// id is taken, that is the answer. The command is decided against an
    /// empty aggregate and appended at version 0 (201). When the id is taken,
    /// `existing` looks at the aggregate there: `Ok` for a retry of the same
    /// create, which gets the first answer again (200), or the error of a
    /// clash. `answer` makes the body from the first event appended.
    pub async fn create<A, R: serde::Serialize>(
        &self,
        mut ctx: CommandContext,
        id: Uuid,
        command: A::Command,
        answer: impl Fn(&AppendedEvent) -> R,
        existing: impl FnOnce(&Loaded<A>) -> Result<(), ApiError>,
    ) -> Result<Accepted, ApiError>
    where
        A: Decide + Clone,
        A::Event: EventCodec,
    {
        let fresh = Loaded {
            id,
            state: A::default(),
            version: 0,
        };
        let (_, events) = decide(&fresh, command)?;
        let decision = Decision {
            streams: vec![stream(&fresh, &events)],
            status: StatusCode::CREATED,
            result: Value::Null,
            head: None,
            room: None,
        };
        // The id is the key: an `Idempotency-Key` header adds nothing.
        ctx.idempotency = None;
        match self.commit(&ctx, decision).await {
            Ok(mut accepted) => {
                accepted.result = serde_json::to_value(answer(&accepted.appended[0]))
                    .map_err(ApiError::internal)?;
                Ok(accepted)
            }
            Err(CommitError::Conflict) => {
                // `load` refuses an id of another kind (409).
                existing(&self.load::<A>(id).await?)?;
                let first = self.log.load_stream(id, 0).await?;
                let first = first.first().ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("a conflict on an empty stream"))
                })?;
                let first = AppendedEvent {
                    event_id: first.event_id,
                    aggregate_id: first.aggregate_id,
                    sequence: first.sequence,
                    position: first.position,
                    tx_id: first.tx_id,
                };
                Ok(Accepted {
                    status: StatusCode::OK,
                    result: serde_json::to_value(answer(&first)).map_err(ApiError::internal)?,
                    appended: vec![first],
                    token: Some(ConsistencyToken::after(&first)),
                })
            }
            Err(CommitError::Duplicate) => Err(ApiError::internal(anyhow::anyhow!(
                "a create ran with an idempotency key"
            ))),
            Err(CommitError::Api(e)) => Err(e),
        }
    }

    async fn commit(
        &self,
        ctx: &CommandContext,
        decision: Decision,
    ) -> Result<Accepted, CommitError> {
        let streams: Vec<StreamWrite> = decision
            .streams
            .into_iter()
            .filter(|s| !s.events.is_empty())
            .collect();
        if streams.is_empty() && ctx.idempotency.is_none() {
            let token = match decision.head {
                Some((id, version)) if version > 0 => self
                    .head_token(id, version)
                    .await
                    .map_err(CommitError::Api)?,
                _ => None,
            };
            return Ok(Accepted {
                status: decision.status,
                result: decision.result,
                appended: Vec::new(),
                token,
            });
        }
        // A command that appends nothing answers the token of the stream it decided
        // on; with an idempotency key that token is stored too, so a retry answers
        // the same.
        let head = match decision.head {
            Some((id, version)) if streams.is_empty() && version > 0 => self
                .head_token(id, version)
                .await
                .map_err(CommitError::Api)?,
            _ => None,
        };
        let mut stored_body = decision.result.clone();
        if let (Some(token), Value::Object(map)) = (&head, &mut stored_body) {
            map.insert("consistency_token".into(), json!(token.encode()));
        }
        let request = AppendRequest {
            streams,
            metadata: ctx.metadata.clone(),
            recorded_at: ctx.now,
            idempotency: ctx.idempotency.as_ref().map(|idem| IdempotencyRecord {
                scope: idem.scope.clone(),
                fingerprint: idem.fingerprint.clone(),
                status: decision.status.as_u16(),
                body: stored_body,
            }),
        };
        let snapshot_due: Vec<(String, Uuid)> = request
            .streams
            .iter()
            .filter(|s| {
                let after = s.expected_version + s.events.len() as i64;
                after / SNAPSHOT_EVERY > s.expected_version / SNAPSHOT_EVERY
            })
            .map(|s| (s.aggregate_type.clone(), s.aggregate_id))
            .collect();
        let started = Instant::now();
        let result = self.log.append(request).await;
        crate::metrics::appended(
            result.as_ref().map_or(0, |appended| appended.len()),
            started.elapsed(),
        );
        match result {
            Ok(appended) => {
                if let Some(room) = decision.room {
                    self.cache_room(room);
                }
                for (aggregate_type, id) in snapshot_due {
                    self.snapshot_later(aggregate_type, id);
                }
                let mut accepted = Accepted::new(decision.status, decision.result, appended);
                accepted.token = accepted.token.or(head);
                Ok(accepted)
            }
            Err(LogError::Conflict { .. }) => Err(CommitError::Conflict),
            Err(LogError::DuplicateCommand { .. }) => Err(CommitError::Duplicate),
            Err(other) => Err(CommitError::Api(other.into())),
        }
    }

    /// The token of a stream's last event (for commands that appended nothing).
    async fn head_token(
        &self,
        id: Uuid,
        version: i64,
    ) -> Result<Option<ConsistencyToken>, ApiError> {
        let last = self.log.load_stream(id, version - 1).await?;
        Ok(last.last().map(|e| ConsistencyToken {
            cursor: e.cursor(),
            streams: vec![StreamHead {
                aggregate_id: e.aggregate_id,
                sequence: e.sequence,
            }],
        }))
    }

    /// Stores a snapshot of an aggregate in the background (it is only a cache).
    fn snapshot_later(&self, aggregate_type: String, id: Uuid) {
        let log = self.log.clone();
        tokio::spawn(async move {
            if let Err(e) = snapshot(&log, &aggregate_type, id).await {
                tracing::warn!(aggregate_id = %id, error = %e, "snapshot failed");
            }
        });
    }
}

pub(crate) enum CommitError {
    Conflict,
    Duplicate,
    Api(ApiError),
}

fn replay(stored: CommandResult, idem: &IdempotencyScope) -> Result<Accepted, ApiError> {
    if stored.fingerprint != idem.fingerprint {
        return Err(ApiError::unprocessable(
            "Idempotency-Key",
            "this idempotency key was already used for a different request",
        ));
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut accepted = Accepted::new(status, stored.body, stored.appended);
    if accepted.token.is_none() {
        // A command that appended nothing stored the token it answered.
        accepted.token = accepted
            .result
            .get("consistency_token")
            .and_then(Value::as_str)
            .and_then(|t| ConsistencyToken::decode(t).ok());
    }
    Ok(accepted)
}
