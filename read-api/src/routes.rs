use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use parley_projections::models::Model;
use parley_projections::models::{friends, history, presence, rooms, users};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::consistency::{wait_for, Consistency};
use crate::pages::{
    with_names, BlocksPage, FriendRequestsPage, FriendsPage, HistoryPage, PresencePage, RoomPage,
    RoomsPage,
};
use crate::{metrics, ReadState};
use parley_http_kit::{ApiError, ApiPath, ApiQuery, Caller};

fn not_found(room_id: Uuid) -> ApiError {
    ApiError::NotFound(format!("room {room_id} not found"))
}

/// The caller's rooms, most recent activity first, with unread counts.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])), responses(
    (status = 200, description = "The caller's rooms", body = RoomsPage),
    (status = 401, description = "No valid token"),
    (status = 504, description = "The read model did not catch up with the consistency token in time")))]
pub async fn my_rooms(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
) -> Result<Response, ApiError> {
    if let (Some(cache), None) = (&state.cache, &token) {
        return cached_rooms(&state, cache, me).await;
    }
    metrics::cache_lookup("rooms", "bypass");
    wait_for(
        &state,
        me,
        token,
        &[rooms::Rooms::NAME],
        state.consistency_wait,
    )
    .await?;
    let rooms = rooms::rooms_of(state.store.pool(), me).await?;
    Ok(Json(RoomsPage { rooms }).into_response())
}

/// The room list through the cache. Its keys (the caller and their rooms) are
/// known only once read, so the read is kept only if no commit was heard
/// between its start and the generation taken after it.
async fn cached_rooms(
    state: &ReadState,
    cache: &crate::cache::PageCache,
    me: Uuid,
) -> Result<Response, ApiError> {
    let generation_of = |keys: &[Uuid]| {
        state
            .store
            .generation_about(&crate::cache::LIST_SOURCES, keys)
    };
    if let Some(body) = cache.list(me, generation_of) {
        metrics::cache_lookup("rooms", "hit");
        return Ok(json_body(body));
    }
    let before = state.store.changes();
    let rooms = rooms::rooms_of(state.store.pool(), me).await?;
    let ids: Vec<Uuid> = rooms.iter().map(|r| r.room_id).collect();
    let body = Bytes::from(serde_json::to_vec(&RoomsPage { rooms }).map_err(ApiError::internal)?);
    let generation = generation_of(&crate::cache::list_keys(me, &ids));
    match (before, generation, state.store.changes()) {
        (Some(before), Some(generation), Some(after)) if before == after => {
            metrics::cache_lookup("rooms", "miss");
            cache.keep_list(me, ids, generation, body.clone());
        }
        _ => metrics::cache_lookup("rooms", "bypass"),
    }
    Ok(json_body(body))
}

/// A room's details and members (members only: others get 404).
#[utoipa::path(get, path = "/v1/rooms/{room_id}", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = Uuid, Path)), responses(
    (status = 200, description = "Room details with members", body = RoomPage),
    (status = 404, description = "No such room, or not a member")))]
pub async fn room(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
    ApiPath(room_id): ApiPath<Uuid>,
) -> Result<Json<RoomPage>, ApiError> {
    wait_for(
        &state,
        me,
        token,
        &[rooms::Rooms::NAME, users::Users::NAME],
        state.consistency_wait,
    )
    .await?;
    let pool = state.store.pool();
    if !rooms::is_member(pool, room_id, me).await? {
        return Err(not_found(room_id));
    }
    let details = rooms::room(pool, room_id)
        .await?
        .ok_or_else(|| not_found(room_id))?;
    let ids: Vec<Uuid> = details.members.iter().map(|m| m.user_id).collect();
    let names = users::lookup(pool, &ids).await?;
    Ok(Json(RoomPage::new(details, &names)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Cursor from a page's `before`: the next older page.
    pub before: Option<String>,
    /// Cursor from a page's `after`: the next newer page.
    pub after: Option<String>,
    /// Messages per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// A page of a room's history (oldest first), with cursors both ways.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/messages", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = Uuid, Path), HistoryQuery), responses(
    (status = 200, description = "A page of history, oldest first", body = HistoryPage),
    (status = 400, description = "Bad cursor, or both `before` and `after`"),
    (status = 404, description = "No such room, or not a member")))]
pub async fn history(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
    ApiPath(room_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let cursor = |s: &str, name: &str| {
        history::decode_cursor(s)
            .ok_or_else(|| ApiError::BadRequest(format!("`{name}` is not a valid cursor")))
    };
    let request = match (q.before.as_deref(), q.after.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give `before` or `after`, not both".into(),
            ))
        }
        (Some(b), None) => history::PageRequest::Before(cursor(b, "before")?),
        (None, Some(a)) => history::PageRequest::After(cursor(a, "after")?),
        (None, None) => history::PageRequest::Newest,
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=history::MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {}",
            history::MAX_PAGE
        )));
    }
    // The newest page without a consistency token may come from the cache.
    // Taken before the read: a commit after it moves the generation.
    let cached = match (&state.cache, &token, request) {
        (Some(cache), None, history::PageRequest::Newest) => {
            let page = state
                .store
                .generation_about(&crate::cache::PAGE_SOURCES, &[room_id]);
            let member = state
                .store
                .generation_about(&crate::cache::MEMBER_SOURCES, &[me]);
            page.zip(member).map(|(page, member)| (cache, page, member))
        }
        _ => None,
    };
    if let Some((cache, page_generation, member_generation)) = cached {
        let member = cache.member(room_id, me, member_generation);
        if member == Some(false) {
            return Err(not_found(room_id));
        }
        if let Some(body) = cache.page(room_id, limit, page_generation) {
            let member = match member {
                Some(member) => member,
                None => {
                    let member = rooms::is_member(state.store.pool(), room_id, me).await?;
                    cache.keep_member(room_id, me, member_generation, member);
                    member
                }
            };
            if !member {
                return Err(not_found(room_id));
            }
            metrics::cache_lookup("history", "hit");
            return Ok(json_body(body));
        }
        metrics::cache_lookup("history", "miss");
        let page =
            history::page_for_member(state.store.pool(), room_id, request, limit, me).await?;
        cache.keep_member(room_id, me, member_generation, page.is_some());
        let page = page.ok_or_else(|| not_found(room_id))?;
        let body = Bytes::from(serde_json::to_vec(&page).map_err(ApiError::internal)?);
        // Whether the caller reacted is the caller's own: such pages are not shared.
        if page.messages.iter().all(|m| m.reactions.is_empty()) {
            cache.keep_page(room_id, limit, page_generation, body.clone());
        }
        return Ok(json_body(body));
    }
    metrics::cache_lookup("history", "bypass");
    wait_for(
        &state,
        me,
        token,
        &[history::History::NAME, rooms::Rooms::NAME],
        state.consistency_wait,
    )
    .await?;
    history::page_for_member(state.store.pool(), room_id, request, limit, me)
        .await?
        .map(|page| Json(page).into_response())
        .ok_or_else(|| not_found(room_id))
}

fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The caller's friends.
#[utoipa::path(get, path = "/v1/friends", tag = "friends", security(("bearer" = [])), responses(
    (status = 200, description = "The caller's friends", body = FriendsPage)))]
pub async fn friends(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
) -> Result<Json<FriendsPage>, ApiError> {
    wait_for(
        &state,
        me,
        token,
        &[friends::Friends::NAME, users::Users::NAME],
        state.consistency_wait,
    )
    .await?;
    let pool = state.store.pool();
    let list = friends::friends_of(pool, me).await?;
    let ids: Vec<Uuid> = list.iter().map(|f| f.user_id).collect();
    let names = users::lookup(pool, &ids).await?;
    Ok(Json(FriendsPage {
        friends: with_names(list, |f| f.user_id, &names),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// `incoming` (default) or `outgoing`.
    #[param(pattern = "^(incoming|outgoing)$")]
    pub direction: Option<String>,
}

/// The caller's pending friend requests.
#[utoipa::path(get, path = "/v1/friend-requests", tag = "friends", security(("bearer" = [])),
    params(RequestsQuery), responses(
    (status = 200, description = "Pending requests, with the other user's name", body = FriendRequestsPage),
    (status = 400, description = "Unknown direction")))]
pub async fn friend_requests(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
    ApiQuery(q): ApiQuery<RequestsQuery>,
) -> Result<Json<FriendRequestsPage>, ApiError> {
    let direction = match q.direction.as_deref().unwrap_or("incoming") {
        "incoming" => friends::Direction::Incoming,
        "outgoing" => friends::Direction::Outgoing,
        other => {
            return Err(ApiError::BadRequest(format!(
                "direction must be incoming or outgoing, not {other:?}"
            )))
        }
    };
    wait_for(
        &state,
        me,
        token,
        &[friends::Friends::NAME, users::Users::NAME],
        state.consistency_wait,
    )
    .await?;
    let pool = state.store.pool();
    let list = friends::requests_of(pool, me, direction).await?;
    let other = |r: &friends::FriendRequestView| {
        if r.from_user_id == me {
            r.to_user_id
        } else {
            r.from_user_id
        }
    };
    let ids: Vec<Uuid> = list.iter().map(other).collect();
    let names = users::lookup(pool, &ids).await?;
    Ok(Json(FriendRequestsPage {
        requests: with_names(list, other, &names),
    }))
}

/// Users the caller blocked.
#[utoipa::path(get, path = "/v1/blocks", tag = "friends", security(("bearer" = [])), responses(
    (status = 200, description = "Users the caller blocks", body = BlocksPage)))]
pub async fn blocks(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
) -> Result<Json<BlocksPage>, ApiError> {
    wait_for(
        &state,
        me,
        token,
        &[friends::Friends::NAME],
        state.consistency_wait,
    )
    .await?;
    let blocks = friends::blocks_of(state.store.pool(), me).await?;
    Ok(Json(BlocksPage { blocks }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// One to 100 user ids (hyphenated UUIDs), comma-separated.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}){0,99}$"
    )]
    pub user_id: String,
}

/// Status and last-seen time of users; a user silent for 2 minutes is offline.
///
/// Only the caller's friends and people sharing a room with them show their
/// presence, and never across a block (either way); anyone else is reported
/// as offline and never seen.
#[utoipa::path(get, path = "/v1/presence", tag = "presence", security(("bearer" = [])),
    params(PresenceQuery), responses(
    (status = 200, description = "Each user's presence, as the caller may see it", body = PresencePage),
    (status = 400, description = "Missing or malformed user ids")))]
pub async fn presence(
    State(state): State<ReadState>,
    Caller(me): Caller,
    Consistency(token): Consistency,
    ApiQuery(q): ApiQuery<PresenceQuery>,
) -> Result<Json<PresencePage>, ApiError> {
    // Exactly the documented shape: hyphenated ids, commas, nothing else.
    let ids = q
        .user_id
        .split(',')
        .map(|s| match s.len() {
            36 => s.parse::<Uuid>().ok(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            ApiError::BadRequest("user_id must be hyphenated UUIDs, comma-separated".into())
        })?;
    if ids.is_empty() || ids.len() > 100 {
        return Err(ApiError::BadRequest("give 1 to 100 user ids".into()));
    }
    wait_for(
        &state,
        me,
        token,
        // Who may see whom is read from the friends and rooms models.
        &[
            presence::PresenceModel::NAME,
            friends::Friends::NAME,
            rooms::Rooms::NAME,
        ],
        state.consistency_wait,
    )
    .await?;
    let mut list = presence::presence_of(state.store.pool(), &ids, Utc::now()).await?;
    // Someone whose presence the caller may not see looks like someone never
    // seen: nothing tells a hidden user from an unknown one.
    let visible = presence::visible_to(state.store.pool(), me, &ids).await?;
    for view in list.iter_mut().filter(|v| !visible.contains(&v.user_id)) {
        view.status = "offline".into();
        view.status_message = None;
        view.last_seen_at = None;
    }
    Ok(Json(PresencePage { presence: list }))
}

/// The first read-model table that does not exist yet (projectors create
/// them), or `None` once all do; remembered then, as tables are never dropped.
async fn missing_model_table(state: &ReadState) -> Result<Option<String>, sqlx::Error> {
    use std::sync::atomic::Ordering;
    if state.models_ready.load(Ordering::Relaxed) {
        return Ok(None);
    }
    for projection in parley_projections::models::all() {
        for statement in projection.schema() {
            let Some(table) = created_table(&statement) else {
                continue;
            };
            let probe = format!("SELECT 1 FROM {table} LIMIT 1");
            match sqlx::query(&probe).fetch_optional(state.store.pool()).await {
                Ok(_) => {}
                Err(e) if parley_http_kit::problem::is_missing_table(&e) => {
                    return Ok(Some(table.into()))
                }
                Err(e) => return Err(e),
            }
        }
    }
    state.models_ready.store(true, Ordering::Relaxed);
    Ok(None)
}

/// The table a `CREATE TABLE IF NOT EXISTS name (...)` statement creates.
fn created_table(statement: &str) -> Option<&str> {
    let rest = statement
        .trim_start()
        .strip_prefix("CREATE TABLE IF NOT EXISTS ")?;
    rest.split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .filter(|name| !name.is_empty())
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the read store answers; each projection's position and lag.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Ready"), (status = 503, description = "The read store does not answer")))]
pub async fn ready(State(state): State<ReadState>) -> (StatusCode, Json<Value>) {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: read store down");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "checks": {"read_store": "down"}})),
        );
    }
    match missing_model_table(&state).await {
        Ok(None) => {}
        Ok(Some(table)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "not ready",
                    "checks": {"read_store": "up", "read_models": format!("table {table} does not exist yet: no projector has set up the read models")},
                })),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: read model tables cannot be checked");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not ready", "checks": {"read_store": "down"}})),
            );
        }
    }
    let Some(lags) = state.progress.lag().await else {
        // Fed by Kafka, partitions advance independently: their lag is per
        // partition, from the broker (`parley projections status --feed kafka`,
        // the projector's metrics).
        return (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": {"read_store": "up"}, "feed": "kafka"})),
        );
    };
    let mut projections = serde_json::Map::new();
    for l in lags {
        projections.insert(
            l.projection.to_string(),
            json!({"position": l.position, "lag": l.lag}),
        );
    }
    (
        StatusCode::OK,
        Json(
            json!({"status": "ready", "checks": {"read_store": "up"}, "projections": projections}),
        ),
    )
}
