//! Live updates: `GET /v1/stream`, Server-Sent Events of what concerns the caller.
//!
//! One [`StreamHub`] per read API tails the event log and broadcasts each event once
//! every projection a client could query about it (history, rooms, friends and
//! presence) has applied it, so an event seen on the stream is already visible to
//! queries. Projectors fed by the log are judged by their checkpoints (the slowest
//! one); projectors fed by Kafka by the sequence they recorded for the event's
//! aggregate, since their partitions advance independently. Each connection filters the broadcast for
//! its caller: events of the caller's rooms, friend events involving the caller, and
//! presence changes of the caller and their friends.
//!
//! The SSE id of an event is its log cursor, `"{tx_id}.{position}"`. A client that
//! reconnects with `Last-Event-ID` first subscribes to the broadcast, then gets the
//! backlog from the log after that cursor, then the live events, skipping everything
//! at or below the last cursor it has passed: every missed event exactly once.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use parley_domain::codec::EventCodec;
use parley_domain::friendship::{FriendRequestCancelled, FriendRequestDeclined, FriendRequestSent};
use parley_domain::{FriendshipEvent, MessageEvent, PresenceEvent, RoomEvent};
use parley_event_log::{Cursor, EventEnvelope, SharedLog};
use parley_projections::models::{self, friends, history, presence, rooms};
use parley_projections::partitions::{applied_sequences, offsets_version};
use parley_projections::{Projection, ReadStore};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{Feed, ReadState};
use parley_http_kit::{ApiError, ApiQuery, Caller};

/// Events the hub keeps for slow subscribers before they lag (and are closed).
pub const DEFAULT_CAPACITY: usize = 4096;

/// The projections an event must have reached before it is streamed.
pub const STREAMED_PROJECTIONS: [&str; 4] = [
    history::History::NAME,
    rooms::Rooms::NAME,
    friends::Friends::NAME,
    presence::PresenceModel::NAME,
];

/// Events read from the log at once.
const READ_BATCH: i64 = 500;
/// The reconnection delay suggested to clients.
const RETRY: Duration = Duration::from_millis(1000);
/// Between keep-alive comments.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a new subscriber waits for a hub that is starting.
const START_WAIT: Duration = Duration::from_secs(5);
/// The longest the hub waits without a commit notification before it looks again.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// With a Kafka feed the hub starts at the log's head, but first waits until the
/// read models have applied this many of the newest events before it: they are
/// the ones most likely still in flight.
const START_WINDOW: i64 = 1000;

/// The SSE id of a log cursor.
pub fn format_cursor(cursor: Cursor) -> String {
    format!("{}.{}", cursor.tx_id, cursor.position)
}

/// Parses an SSE id made by [`format_cursor`].
pub fn parse_cursor(raw: &str) -> Option<Cursor> {
    let (tx, position) = raw.trim().split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(tx) || !digits(position) {
        return None;
    }
    Some(Cursor {
        tx_id: tx.parse().ok()?,
        position: position.parse().ok()?,
    })
}

/// Tails the log and broadcasts every event the read models have applied.
#[derive(Clone)]
pub struct StreamHub {
    shared: Arc<Shared>,
}

struct Shared {
    log: SharedLog,
    store: ReadStore,
    feed: Feed,
    /// The broadcast and the cursor of the last event sent on it, changed together
    /// so that a subscriber learns exactly where its receiver starts.
    state: Mutex<HubState>,
    started: std::sync::Once,
    ready: watch::Sender<bool>,
}

struct HubState {
    position: Cursor,
    sender: broadcast::Sender<Arc<Published>>,
}

/// A receiver of the broadcast and where it starts: it gets every event after
/// `position` (until it lags).
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<Published>>,
    pub position: Cursor,
}

impl StreamHub {
    /// A hub over `log`, keeping `capacity` events for slow subscribers. Its tailing
    /// task starts with the first subscriber (inside the tokio runtime).
    pub fn new(log: SharedLog, store: ReadStore, capacity: usize, feed: Feed) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        let (ready, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                log,
                store,
                feed,
                state: Mutex::new(HubState {
                    position: Cursor::START,
                    sender,
                }),
                started: std::sync::Once::new(),
                ready,
            }),
        }
    }

    /// The cursor of the last event broadcast (or skipped with no one listening).
    pub fn position(&self) -> Cursor {
        self.shared.state.lock().expect("hub lock").position
    }

    /// Subscribes to the broadcast, starting the hub if needed.
    pub async fn subscribe(&self) -> Result<Subscription, ApiError> {
        self.shared.started.call_once(|| {
            tokio::spawn(run_hub(Arc::downgrade(&self.shared)));
        });
        let mut ready = self.shared.ready.subscribe();
        match tokio::time::timeout(START_WAIT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => {}
            _ => {
                return Err(ApiError::Unavailable(
                    "live updates are starting; retry".into(),
                ))
            }
        }
        let state = self.shared.state.lock().expect("hub lock");
        Ok(Subscription {
            receiver: state.sender.subscribe(),
            position: state.position,
        })
    }
}

impl Shared {
    fn publish(&self, event: EventEnvelope) {
        // Decoded and serialized here, once, not by each stream.
        let published = Arc::new(Published::new(event));
        let mut state = self.state.lock().expect("hub lock");
        state.position = published.event.cursor();
        // No receiver is no error: nobody is listening.
        let _ = state.sender.send(published);
    }

    /// With no subscriber there is nothing to send: the hub jumps to `to`.
    fn skip_if_alone(&self, to: Cursor) -> Option<Cursor> {
        let mut state = self.state.lock().expect("hub lock");
        if state.sender.receiver_count() > 0 {
            return None;
        }
        state.position = state.position.max(to);
        Some(state.position)
    }
}

/// The slowest checkpoint among [`STREAMED_PROJECTIONS`].
async fn visible_up_to(store: &ReadStore) -> Result<Cursor, sqlx::Error> {
    let cursors = store.checkpoints(&STREAMED_PROJECTIONS).await?;
    Ok(cursors.into_iter().min().unwrap_or(Cursor::START))
}

enum Step {
    /// Sent what the projections had applied; there may be more to read.
    Progress,
    /// Nothing more is visible: wait until a projector commits.
    Wait,
}

async fn run_hub(shared: Weak<Shared>) {
    let Some((log, store, feed)) = shared
        .upgrade()
        .map(|s| (s.log.clone(), s.store.clone(), s.feed))
    else {
        return;
    };
    let mut committed = store.committed();
    let mut pending = VecDeque::new();
    let mut cursor = loop {
        match start_at(feed, &log, &store, &mut pending).await {
            Ok(cursor) => break cursor,
            Err(e) => {
                tracing::warn!(error = %e, "stream hub: storage unavailable, retrying");
                if shared.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    };
    match shared.upgrade() {
        Some(s) => s.state.lock().expect("hub lock").position = cursor,
        None => return,
    }
    tracing::info!(position = cursor.position, ?feed, "stream hub started");
    loop {
        let Some(hub) = shared.upgrade() else { return };
        // Seen before reading the checkpoints: a commit after this point wakes
        // the wait below, so none is missed between the read and the wait.
        committed.borrow_and_update();
        let before = commits_of(&store, &STREAMED_PROJECTIONS);
        let step = match feed {
            Feed::Log => step(&hub, &log, &store, &mut cursor, &mut pending).await,
            Feed::Kafka => step_applied(&hub, &log, &store, &mut cursor, &mut pending).await,
        };
        if pending.is_empty() && !*hub.ready.borrow() {
            hub.ready.send_replace(true);
        }
        drop(hub);
        match step {
            Ok(Step::Progress) => {}
            Ok(Step::Wait) => {
                // Fed by Kafka, the oldest pending event waits only for the
                // models that read its type: other models' commits (presence
                // or users, for a message) cannot let it through, so they do
                // not cost a step. Commits during the step count (`before`).
                let needed = match (feed, pending.front()) {
                    (Feed::Kafka, Some(head)) => readers_of(&head.aggregate_type),
                    _ => Vec::new(),
                };
                // (An event no streamed model reads never waits: none is needed.)
                let needed = if needed.is_empty() {
                    STREAMED_PROJECTIONS.to_vec()
                } else {
                    needed
                };
                loop {
                    // Projectors announce their commits; the timeout only
                    // covers a lost notification link.
                    match tokio::time::timeout(IDLE_WAIT, committed.changed()).await {
                        Ok(Ok(())) if moved(&store, &before, &needed) == Some(false) => continue,
                        Ok(Err(_)) => tokio::time::sleep(IDLE_WAIT).await,
                        _ => {}
                    }
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream hub: storage unavailable, retrying");
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    }
}

/// Commits heard of per projection (`None` while commits cannot be heard).
fn commits_of(store: &ReadStore, names: &[&'static str]) -> Vec<(&'static str, Option<u64>)> {
    names
        .iter()
        .map(|name| (*name, store.generation(&[name])))
        .collect()
}

/// The [`STREAMED_PROJECTIONS`]' models, made once (the hub asks them on every step).
fn streamed_models() -> &'static [Arc<dyn Projection>] {
    static MODELS: OnceLock<Vec<Arc<dyn Projection>>> = OnceLock::new();
    MODELS.get_or_init(|| {
        STREAMED_PROJECTIONS
            .iter()
            .filter_map(|name| models::by_name(name, ""))
            .collect()
    })
}

/// The streamed models that read events of `aggregate_type`.
fn readers_of(aggregate_type: &str) -> Vec<&'static str> {
    streamed_models()
        .iter()
        .filter(|m| m.consumes(aggregate_type))
        .map(|m| m.name())
        .collect()
}

/// Whether any of `needed` committed since `before` was read; `None` when that
/// cannot be told (commits not heard), so the caller steps anyway.
fn moved(
    store: &ReadStore,
    before: &[(&'static str, Option<u64>)],
    needed: &[&'static str],
) -> Option<bool> {
    let mut any = false;
    for (name, was) in before.iter().filter(|(n, _)| needed.contains(n)) {
        let now = store.generation(&[name])?;
        any |= Some(now) != *was;
    }
    Some(any)
}

/// Where the hub starts: with a log feed, at the slowest streamed checkpoint;
/// with a Kafka feed, just before the newest [`START_WINDOW`] events, which are
/// put in `pending` (the hub is ready once they are all applied and passed).
async fn start_at(
    feed: Feed,
    log: &SharedLog,
    store: &ReadStore,
    pending: &mut VecDeque<EventEnvelope>,
) -> anyhow::Result<Cursor> {
    match feed {
        Feed::Log => Ok(visible_up_to(store).await?),
        Feed::Kafka => {
            let newest = log.read_newest(START_WINDOW).await?;
            let Some(first) = newest.first().map(EventEnvelope::cursor) else {
                return Ok(Cursor::START);
            };
            pending.clear();
            pending.extend(newest);
            // Nothing sorts between the event before `first` and this cursor.
            Ok(Cursor {
                tx_id: first.tx_id,
                position: first.position - 1,
            })
        }
    }
}

/// Broadcasts the events every streamed projection has applied. The log is read
/// ahead only as far as the projections have got, so an event waits for the
/// slowest projector's commit and nothing else.
async fn step(
    hub: &Shared,
    log: &SharedLog,
    store: &ReadStore,
    cursor: &mut Cursor,
    pending: &mut VecDeque<EventEnvelope>,
) -> anyhow::Result<Step> {
    let visible = visible_up_to(store).await?;
    if pending.is_empty() {
        if let Some(to) = hub.skip_if_alone(visible) {
            *cursor = (*cursor).max(to);
            return Ok(Step::Wait);
        }
    }
    let read_from = pending.back().map_or(*cursor, EventEnvelope::cursor);
    if read_from < visible {
        pending.extend(log.read_after(read_from, READ_BATCH).await?);
    }
    let mut sent = false;
    while pending.front().is_some_and(|e| e.cursor() <= visible) {
        let event = pending.pop_front().expect("front checked");
        *cursor = event.cursor();
        hub.publish(event);
        sent = true;
    }
    Ok(if sent { Step::Progress } else { Step::Wait })
}

/// [`step`] for projectors fed by Kafka: broadcasts, in log order, the events
/// every streamed projection that reads them has recorded as applied.
///
/// The events in hand are looked at first. While the oldest of them is not
/// applied nothing can go out, so the log is read further only once they have
/// all gone: each projector commit then costs the hub one lookup, not a log
/// read as well.
async fn step_applied(
    hub: &Shared,
    log: &SharedLog,
    store: &ReadStore,
    cursor: &mut Cursor,
    pending: &mut VecDeque<EventEnvelope>,
) -> anyhow::Result<Step> {
    let window = READ_BATCH as usize;
    if !pending.is_empty() {
        let sent = publish_applied(hub, store, cursor, pending).await?;
        if !pending.is_empty() {
            // Step again at once only if the whole window went out: the events
            // after it may be applied too. Otherwise the next commit says when.
            return Ok(if sent == window {
                Step::Progress
            } else {
                Step::Wait
            });
        }
    }
    // Everything known went out: look for newer events.
    let newer = log.read_after(*cursor, READ_BATCH).await?;
    if newer.is_empty() {
        return Ok(Step::Wait);
    }
    pending.extend(newer);
    // A whole window out means a full read out: there may be more in the log.
    let sent = publish_applied(hub, store, cursor, pending).await?;
    Ok(if sent == window {
        Step::Progress
    } else {
        Step::Wait
    })
}

/// Broadcasts the applied prefix of the oldest [`READ_BATCH`] `pending` events
/// and returns how many went out.
async fn publish_applied(
    hub: &Shared,
    store: &ReadStore,
    cursor: &mut Cursor,
    pending: &mut VecDeque<EventEnvelope>,
) -> anyhow::Result<usize> {
    let head: Vec<&EventEnvelope> = pending.iter().take(READ_BATCH as usize).collect();
    let visible = applied_prefix(store, &head).await?;
    for _ in 0..visible {
        let event = pending.pop_front().expect("counted");
        *cursor = event.cursor();
        hub.publish(event);
    }
    Ok(visible)
}

/// How many of `events`, from the first, every streamed projection that reads
/// them has applied (by the sequences a partitioned feed records per
/// aggregate): a message waits for history and rooms, not for friends.
async fn applied_prefix(store: &ReadStore, events: &[&EventEnvelope]) -> anyhow::Result<usize> {
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
    let applied = applied_sequences(store, &STREAMED_PROJECTIONS, &ids).await?;
    Ok(events
        .iter()
        .take_while(|e| {
            streamed_models()
                .iter()
                .filter(|p| p.consumes(&e.aggregate_type))
                .all(|p| {
                    applied
                        .get(&(p.name().to_string(), e.aggregate_id))
                        .is_some_and(|seq| *seq >= e.sequence)
                })
        })
        .count())
}

/// A change to the caller's rooms or friends, with the state before and after.
#[derive(Debug, Clone, Copy)]
struct Change {
    set: Set,
    key: Uuid,
    before: bool,
    after: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Set {
    Rooms,
    Friends,
}

/// What an event is to one caller.
enum Class {
    /// Of a room: for its members.
    Room(Uuid),
    /// Involves the caller directly; may change their rooms or friends.
    Mine(Option<Change>),
    /// A user's presence: for the user and their friends.
    Presence(Uuid),
    /// Not for this caller.
    Other,
}

fn decode<E: EventCodec>(event: &EventEnvelope) -> Option<E> {
    match E::from_payload(
        &event.event_type,
        event.event_version as u32,
        &event.payload,
    ) {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            tracing::debug!(event_id = %event.event_id, error = %e, "stream: undecodable event skipped");
            None
        }
    }
}

/// An event decoded once for every reader that routes it.
enum Decoded {
    Message(MessageEvent),
    Room(RoomEvent),
    Friendship(FriendshipEvent),
    Presence(PresenceEvent),
    /// Of a type no stream routes, or undecodable.
    Other,
}

fn decoded(event: &EventEnvelope) -> Decoded {
    let as_other = |d: Option<Decoded>| d.unwrap_or(Decoded::Other);
    match event.aggregate_type.as_str() {
        "message" => as_other(decode(event).map(Decoded::Message)),
        "room" => as_other(decode(event).map(Decoded::Room)),
        "friendship" => as_other(decode(event).map(Decoded::Friendship)),
        "presence" => as_other(decode(event).map(Decoded::Presence)),
        _ => Decoded::Other,
    }
}

/// What the hub broadcasts: the event, decoded and serialized for clients
/// once, however many streams take it.
pub struct Published {
    event: EventEnvelope,
    decoded: Decoded,
    /// The SSE `data` of the event ([`client_view`] as JSON).
    data: String,
}

impl Published {
    fn new(event: EventEnvelope) -> Self {
        let data = serde_json::to_string(&client_view(&event)).unwrap_or_else(|_| "{}".into());
        Self {
            decoded: decoded(&event),
            event,
            data,
        }
    }

    fn frame(&self) -> Event {
        Event::default()
            .id(format_cursor(self.event.cursor()))
            .event(&self.event.event_type)
            .data(&self.data)
    }
}

fn classify(me: Uuid, event: &EventEnvelope) -> Class {
    classify_decoded(me, &decoded(event))
}

fn classify_decoded(me: Uuid, decoded: &Decoded) -> Class {
    let room = |key, before, after| Change {
        set: Set::Rooms,
        key,
        before,
        after,
    };
    let friend = |key, before, after| Change {
        set: Set::Friends,
        key,
        before,
        after,
    };
    let other_of = |a: Uuid, b: Uuid| if a == me { b } else { a };
    match decoded {
        Decoded::Message(message) => match message {
            MessageEvent::MessageSent(e) => Class::Room(e.room_id),
            MessageEvent::MessageEdited(e) => Class::Room(e.room_id),
            MessageEvent::MessageRedacted(e) => Class::Room(e.room_id),
            MessageEvent::ReactionAdded(e) => Class::Room(e.room_id),
            MessageEvent::ReactionRemoved(e) => Class::Room(e.room_id),
        },
        Decoded::Room(event) => match event {
            RoomEvent::RoomCreated(e) if e.creator_id == me => Class::Mine(None),
            RoomEvent::DirectRoomCreated(e) if e.user_ids.contains(&me) => Class::Mine(None),
            RoomEvent::MemberInvited(e) if e.user_id == me || e.invited_by == me => {
                Class::Mine(None)
            }
            RoomEvent::MemberJoined(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, false, true)))
            }
            RoomEvent::MemberLeft(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, true, false)))
            }
            RoomEvent::MemberKicked(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, true, false)))
            }
            // Whether they were a member before is not in the event: rewinding
            // assumes not (and so streams less, never more).
            RoomEvent::MemberBanned(e) if e.user_id == me => {
                Class::Mine(Some(room(e.room_id, false, false)))
            }
            RoomEvent::MemberUnbanned(e) if e.user_id == me => Class::Mine(None),
            RoomEvent::MemberBanned(e) => Class::Room(e.room_id),
            RoomEvent::MemberJoined(e) => Class::Room(e.room_id),
            RoomEvent::MemberLeft(e) => Class::Room(e.room_id),
            RoomEvent::MemberKicked(e) => Class::Room(e.room_id),
            RoomEvent::MemberRoleChanged(e) => Class::Room(e.room_id),
            _ => Class::Other,
        },
        Decoded::Friendship(event) => match event {
            FriendshipEvent::FriendRequestSent(FriendRequestSent {
                from_user_id,
                to_user_id,
                ..
            })
            | FriendshipEvent::FriendRequestDeclined(FriendRequestDeclined {
                from_user_id,
                to_user_id,
                ..
            })
            | FriendshipEvent::FriendRequestCancelled(FriendRequestCancelled {
                from_user_id,
                to_user_id,
                ..
            }) if *from_user_id == me || *to_user_id == me => Class::Mine(None),
            FriendshipEvent::FriendRequestAccepted(e)
                if e.from_user_id == me || e.to_user_id == me =>
            {
                let other = other_of(e.from_user_id, e.to_user_id);
                Class::Mine(Some(friend(other, false, true)))
            }
            FriendshipEvent::FriendRemoved(e) if e.user_id == me || e.friend_id == me => {
                let other = other_of(e.user_id, e.friend_id);
                Class::Mine(Some(friend(other, true, false)))
            }
            // Whether they were friends before a block is not in the event: rewinding
            // assumes not (and so streams less, never more).
            FriendshipEvent::UserBlocked(e) if e.blocker_id == me || e.blocked_id == me => {
                let other = other_of(e.blocker_id, e.blocked_id);
                Class::Mine(Some(friend(other, false, false)))
            }
            FriendshipEvent::UserUnblocked(e) if e.blocker_id == me || e.blocked_id == me => {
                Class::Mine(None)
            }
            _ => Class::Other,
        },
        Decoded::Presence(event) => match event {
            PresenceEvent::PresenceChanged(e) => Class::Presence(e.user_id),
            // Heartbeats repeat the status: not a change.
            _ => Class::Other,
        },
        Decoded::Other => Class::Other,
    }
}

/// The caller's rooms and friends, as of the event being filtered.
struct Interest {
    me: Uuid,
    rooms: HashSet<Uuid>,
    friends: HashSet<Uuid>,
}

impl Interest {
    fn set(&mut self, which: Set) -> &mut HashSet<Uuid> {
        match which {
            Set::Rooms => &mut self.rooms,
            Set::Friends => &mut self.friends,
        }
    }

    fn apply(&mut self, change: Change) {
        let set = self.set(change.set);
        if change.after {
            set.insert(change.key);
        } else {
            set.remove(&change.key);
        }
    }

    /// Whether the caller gets `event`; follows the caller's own changes.
    fn route(&mut self, event: &EventEnvelope) -> bool {
        self.route_decoded(&decoded(event))
    }

    /// [`Interest::route`] of an event the hub decoded already.
    fn route_decoded(&mut self, decoded: &Decoded) -> bool {
        match classify_decoded(self.me, decoded) {
            Class::Room(room) => self.rooms.contains(&room),
            Class::Mine(change) => {
                if let Some(change) = change {
                    self.apply(change);
                }
                true
            }
            Class::Presence(user) => user == self.me || self.friends.contains(&user),
            Class::Other => false,
        }
    }

    /// The caller's rooms and friends just after `start`, for a hub at `position`.
    async fn load(
        state: &ReadState,
        log: &SharedLog,
        me: Uuid,
        start: Cursor,
        position: Cursor,
    ) -> Result<Self, ApiError> {
        match state.feed {
            Feed::Log => Self::load_at_checkpoints(&state.store, log, me, start).await,
            Feed::Kafka => Self::load_applied(&state.store, log, me, start, position).await,
        }
    }

    /// Log feed: read from the read models, then wound back (or forward) over the
    /// caller's own changes in the log between the models' checkpoints and `start`.
    async fn load_at_checkpoints(
        store: &ReadStore,
        log: &SharedLog,
        me: Uuid,
        start: Cursor,
    ) -> Result<Self, ApiError> {
        let pool = store.pool();
        let (rooms_at, room_ids) =
            stable_read(store, rooms::Rooms::NAME, || rooms::room_ids_of(pool, me)).await?;
        let (friends_at, friend_list) = stable_read(store, friends::Friends::NAME, || {
            friends::friends_of(pool, me)
        })
        .await?;
        let mut interest = Interest {
            me,
            rooms: room_ids.into_iter().collect(),
            friends: friend_list.into_iter().map(|f| f.user_id).collect(),
        };
        let low = start.min(rooms_at).min(friends_at);
        let high = start.max(rooms_at).max(friends_at);
        if low == high {
            return Ok(interest);
        }
        let changes = my_changes(log, me, low, Some(high)).await?;
        for (which, at) in [(Set::Rooms, rooms_at), (Set::Friends, friends_at)] {
            let mine = changes.iter().filter(|c| c.change.set == which);
            if at > start {
                // Wind back: the state before the first change of each key.
                let mut decided = HashSet::new();
                for c in mine.filter(|c| c.at > start && c.at <= at) {
                    if decided.insert(c.change.key) {
                        let set = interest.set(which);
                        if c.change.before {
                            set.insert(c.change.key);
                        } else {
                            set.remove(&c.change.key);
                        }
                    }
                }
            } else {
                for c in mine.filter(|c| c.at > at && c.at <= start) {
                    interest.apply(c.change);
                }
            }
        }
        Ok(interest)
    }

    /// Kafka feed: the read models hold whatever each aggregate's partition has
    /// reached, so each of the caller's changes in the log since the hub's
    /// `position` (before which everything is applied) is judged by the sequence
    /// the model recorded for its aggregate: one applied after `start` is wound
    /// back, one not yet applied up to `start` is wound forward. The models and
    /// the sequences are read between two equal readings of the models' offsets.
    async fn load_applied(
        store: &ReadStore,
        log: &SharedLog,
        me: Uuid,
        start: Cursor,
        position: Cursor,
    ) -> Result<Self, ApiError> {
        let pool = store.pool();
        let names = [rooms::Rooms::NAME, friends::Friends::NAME];
        let version = || async {
            Ok::<_, sqlx::Error>((
                offsets_version(store, names[0]).await?,
                offsets_version(store, names[1]).await?,
            ))
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = version().await?;
            let room_ids = rooms::room_ids_of(pool, me).await?;
            let friend_list = friends::friends_of(pool, me).await?;
            let changes = my_changes(log, me, start.min(position), None).await?;
            let ids: Vec<Uuid> = changes.iter().map(|c| c.aggregate_id).collect();
            let applied = applied_sequences(store, &names, &ids).await?;
            if before != version().await? && attempt < 5 {
                continue;
            }
            let mut interest = Interest {
                me,
                rooms: room_ids.into_iter().collect(),
                friends: friend_list.into_iter().map(|f| f.user_id).collect(),
            };
            let mut decided = HashSet::new();
            let is_applied = |c: &MyChange| {
                let name = match c.change.set {
                    Set::Rooms => names[0],
                    Set::Friends => names[1],
                };
                applied
                    .get(&(name.to_string(), c.aggregate_id))
                    .is_some_and(|seq| *seq >= c.sequence)
            };
            // Applied after `start`: the state before the first such change.
            for c in changes.iter().filter(|c| c.at > start && is_applied(c)) {
                if decided.insert((c.change.set, c.change.key)) {
                    let set = interest.set(c.change.set);
                    if c.change.before {
                        set.insert(c.change.key);
                    } else {
                        set.remove(&c.change.key);
                    }
                }
            }
            // Not yet applied up to `start`: as if it were.
            for c in changes.iter().filter(|c| c.at <= start && !is_applied(c)) {
                if !decided.contains(&(c.change.set, c.change.key)) {
                    interest.apply(c.change);
                }
            }
            return Ok(interest);
        }
    }
}

/// One of the caller's own changes to their rooms or friends, where it is in the
/// log and which aggregate event made it.
struct MyChange {
    at: Cursor,
    aggregate_id: Uuid,
    sequence: i64,
    change: Change,
}

/// The caller's changes in the log after `from`, up to `to` (or the head).
async fn my_changes(
    log: &SharedLog,
    me: Uuid,
    from: Cursor,
    to: Option<Cursor>,
) -> Result<Vec<MyChange>, ApiError> {
    let mut changes = Vec::new();
    let mut cursor = from;
    loop {
        let batch = log
            .read_after(cursor, READ_BATCH)
            .await
            .map_err(ApiError::internal)?;
        let full = batch.len() as i64 == READ_BATCH;
        for event in &batch {
            if to.is_some_and(|to| event.cursor() > to) {
                return Ok(changes);
            }
            cursor = event.cursor();
            if let Class::Mine(Some(change)) = classify(me, event) {
                changes.push(MyChange {
                    at: cursor,
                    aggregate_id: event.aggregate_id,
                    sequence: event.sequence,
                    change,
                });
            }
        }
        if !full {
            return Ok(changes);
        }
    }
}

/// Reads a projection's data between two equal readings of its checkpoint, so the
/// data is the projection's state at that checkpoint.
async fn stable_read<T, F, Fut>(
    store: &ReadStore,
    projection: &str,
    read: F,
) -> Result<(Cursor, T), ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        let before = store.checkpoint(projection).await?;
        let data = read().await?;
        let after = store.checkpoint(projection).await?;
        attempt += 1;
        if before == after || attempt == 5 {
            // After five moving readings: the latest, at most a batch off.
            return Ok((after, data));
        }
    }
}

enum Phase {
    Backlog {
        up_to: Cursor,
        buffer: VecDeque<EventEnvelope>,
        exhausted: bool,
    },
    Live,
    Closed,
}

/// One client's stream.
struct Connection {
    /// The read models: replayed bodies are shown as they are today.
    store: ReadStore,
    /// Today's bodies of the messages in the backlog batch being sent.
    today: std::collections::HashMap<Uuid, Option<String>>,
    log: SharedLog,
    receiver: broadcast::Receiver<Arc<Published>>,
    interest: Interest,
    phase: Phase,
    /// Every event at or below this cursor was sent or filtered out.
    seen: Cursor,
    /// Whether the first frame (`retry`, and the id the stream starts after) is out.
    greeted: bool,
    /// Cancelled when the server shuts down: the stream then says goodbye.
    closing: tokio_util::sync::CancellationToken,
    /// Counts this stream in `parley_sse_connections` until it is dropped.
    _open: crate::metrics::OpenStream,
    /// One of the caller's allowed open streams, until this one ends.
    _slot: crate::slots::Slot,
}

/// An event as clients see it: today's shape (an older stored version is upcast,
/// as for every other reader), and of its metadata only who acted. Request ids,
/// correlation ids, idempotency keys and trace context are the acting client's
/// own and never reach other users.
pub fn client_view(event: &EventEnvelope) -> EventEnvelope {
    let mut view = event.clone();
    view.metadata = parley_event_log::Metadata {
        actor_id: event.metadata.actor_id,
        ..Default::default()
    };
    let stale = parley_event_schemas::upcast::latest_version(&event.event_type)
        .is_some_and(|latest| latest != event.event_version as u32);
    if stale {
        if let Some(version) = parley_event_schemas::upcast::upcast(
            &view.event_type,
            view.event_version as u32,
            &mut view.payload,
        ) {
            view.event_version = version as i32;
        }
    }
    view
}

fn sse_event(event: &EventEnvelope) -> Event {
    let data = serde_json::to_string(&client_view(event)).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(format_cursor(event.cursor()))
        .event(&event.event_type)
        .data(data)
}

impl Connection {
    /// A comment that ends the stream, with where to resume.
    fn goodbye(&mut self, why: &str) -> Event {
        self.phase = Phase::Closed;
        Event::default()
            .comment(why)
            .retry(RETRY)
            .id(format_cursor(self.seen))
    }

    /// The next frame, or a goodbye (retry hint and resume id) once the server
    /// is shutting down.
    async fn next(&mut self) -> Option<Event> {
        if matches!(self.phase, Phase::Closed) {
            return None;
        }
        let closing = self.closing.clone();
        tokio::select! {
            biased;
            _ = closing.cancelled() => Some(self.goodbye(
                "the server is shutting down; reconnect with Last-Event-ID to resume",
            )),
            // Cancel-safe: the backlog read and the broadcast receive change
            // nothing until they complete.
            frame = self.next_frame() => frame,
        }
    }

    async fn next_frame(&mut self) -> Option<Event> {
        if !self.greeted {
            self.greeted = true;
            return Some(Event::default().retry(RETRY).id(format_cursor(self.seen)));
        }
        loop {
            match &mut self.phase {
                Phase::Backlog {
                    up_to,
                    buffer,
                    exhausted,
                } => {
                    if let Some(event) = buffer.pop_front() {
                        self.seen = event.cursor();
                        if self.interest.route(&event) {
                            return Some(
                                match crate::redaction::with_current_body(&event, &self.today) {
                                    Some(shown) => sse_event(&shown),
                                    None => sse_event(&event),
                                },
                            );
                        }
                        continue;
                    }
                    if *exhausted {
                        self.seen = self.seen.max(*up_to);
                        self.phase = Phase::Live;
                        continue;
                    }
                    let up_to = *up_to;
                    let read = match self.log.read_after(self.seen, READ_BATCH).await {
                        Ok(batch) => crate::redaction::current_bodies(&self.store, &batch)
                            .await
                            .map(|today| (batch, today))
                            .map_err(anyhow::Error::from),
                        Err(e) => Err(anyhow::Error::from(e)),
                    };
                    match read {
                        Ok((batch, today)) => {
                            self.today = today;
                            let Phase::Backlog {
                                buffer, exhausted, ..
                            } = &mut self.phase
                            else {
                                unreachable!("still in the backlog");
                            };
                            *exhausted = (batch.len() as i64) < READ_BATCH;
                            for event in batch {
                                if event.cursor() > up_to {
                                    *exhausted = true;
                                    break;
                                }
                                buffer.push_back(event);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stream: reading the backlog failed");
                            return Some(
                                self.goodbye("the event log is unavailable; reconnect to resume"),
                            );
                        }
                    }
                }
                Phase::Live => match self.receiver.recv().await {
                    Ok(published) => {
                        let cursor = published.event.cursor();
                        if cursor <= self.seen {
                            continue;
                        }
                        self.seen = cursor;
                        if self.interest.route_decoded(&published.decoded) {
                            return Some(published.frame());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "stream: subscriber lagged, closing");
                        return Some(self.goodbye(&format!(
                            "lagged behind by {missed} events; reconnect with Last-Event-ID to resume"
                        )));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                Phase::Closed => return None,
            }
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event id (for clients that cannot set the
    /// `Last-Event-ID` header; the header wins).
    pub last_event_id: Option<String>,
}

/// Live updates of the caller's rooms, friends and friends' presence.
///
/// Server-Sent Events: `id` is the event's log cursor (`"{tx_id}.{position}"`),
/// `event` its type, `data` the event envelope as JSON. The first frame carries
/// `retry` and the id the stream starts after. Reconnect with `Last-Event-ID` to get
/// every missed event exactly once. An event arrives once queries can see it.
#[utoipa::path(get, path = "/v1/stream", tag = "stream", security(("bearer" = [])),
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
    (status = 200, description = "`text/event-stream` of event envelopes", content_type = "text/event-stream"),
    (status = 400, description = "Malformed Last-Event-ID"),
    (status = 401, description = "No valid token"),
    (status = 410, description = "Last-Event-ID is older than the resume window: reload pages, then reconnect without it"),
    (status = 429, description = "The caller has the most streams open already"),
    (status = 503, description = "No event log configured, or the stream is starting")))]
pub async fn stream(
    State(state): State<ReadState>,
    Caller(me): Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let (Some(hub), Some(log)) = (&state.stream, &state.log) else {
        return Err(ApiError::Unavailable(
            "live updates need the event log".into(),
        ));
    };
    let raw = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::BadRequest("malformed Last-Event-ID".into()))?
                .to_string(),
        ),
        None => q.last_event_id.clone(),
    }
    // An empty id is what an EventSource that saw no id would have: none.
    .filter(|raw| !raw.trim().is_empty());
    let resume = match raw.as_deref() {
        None => None,
        Some(raw) => Some(parse_cursor(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "malformed Last-Event-ID {raw:?}: expected \"{{tx_id}}.{{position}}\""
            ))
        })?),
    };
    let slot = state
        .streams_open
        .take(me)
        .ok_or_else(|| ApiError::TooManyRequests {
            retry_after_secs: 5,
        })?;
    // Subscribe first: whatever is broadcast from now on reaches this receiver, and
    // everything up to `position` is in the log for the backlog.
    let Subscription { receiver, position } = hub.subscribe().await?;
    if let Some(resume) = resume {
        // A resume reads the log from `resume`: bounded, so no id can turn a
        // stream into a scan of the whole log.
        if position.position - resume.position > state.stream_resume_window {
            return Err(ApiError::ResumeWindowPassed(format!(
                "Last-Event-ID is more than {} events behind: start again from a fresh page of each room, then open the stream without it",
                state.stream_resume_window
            )));
        }
    }
    let start = resume.unwrap_or(position);
    let interest = Interest::load(&state, log, me, start, position).await?;
    let phase = if start < position {
        Phase::Backlog {
            up_to: position,
            buffer: VecDeque::new(),
            exhausted: false,
        }
    } else {
        Phase::Live
    };
    let connection = Connection {
        log: log.clone(),
        store: state.store.clone(),
        today: Default::default(),
        receiver,
        interest,
        phase,
        seen: start,
        greeted: false,
        closing: state.closing.clone(),
        _open: crate::metrics::OpenStream::new(),
        _slot: slot,
    };
    let events = futures::stream::unfold(connection, |mut c| async move {
        c.next().await.map(|e| (Ok::<_, Infallible>(e), c))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_event_waits_only_for_the_streamed_models_that_read_it() {
        assert_eq!(readers_of("message"), ["history", "rooms"]);
        assert_eq!(readers_of("room"), ["rooms"]);
        assert_eq!(readers_of("friendship"), ["friends"]);
        assert_eq!(readers_of("presence"), ["presence"]);
        assert!(readers_of("user").is_empty());
    }

    #[test]
    fn streams_old_versions_in_todays_shape() {
        let mut event = EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: "MessageSent".into(),
            event_version: 1,
            aggregate_type: "message".into(),
            aggregate_id: Uuid::now_v7(),
            sequence: 1,
            position: 9,
            recorded_at: chrono::Utc::now(),
            metadata: Default::default(),
            payload: serde_json::json!({
                "message_id": Uuid::now_v7(), "room_id": Uuid::now_v7(),
                "sender_id": Uuid::now_v7(), "body": "old", "sent_at": "2024-05-01T12:00:00Z"
            }),
            tx_id: 3,
        };
        let text = format!("{:?}", sse_event(&event));
        assert!(text.contains(r#"\"event_version\":2"#), "{text}");
        assert!(text.contains(r#"\"format\":\"plain\""#), "{text}");
        event.event_version = 2;
        event.payload["format"] = serde_json::json!("markdown");
        let text = format!("{:?}", sse_event(&event));
        assert!(
            text.contains(r#"\"format\":\"markdown\""#),
            "as stored: {text}"
        );
    }

    /// The hub decodes and serializes each event once (each open stream used
    /// to do both again), and a stream's frame is what it was.
    #[test]
    fn the_hub_decodes_and_serializes_each_event_once_for_every_stream() {
        let room = Uuid::now_v7();
        let event = EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: "MessageSent".into(),
            event_version: 2,
            aggregate_type: "message".into(),
            aggregate_id: Uuid::now_v7(),
            sequence: 1,
            position: 9,
            recorded_at: chrono::Utc::now(),
            metadata: parley_event_log::Metadata {
                request_id: Some("req-secret".into()),
                ..Default::default()
            },
            payload: serde_json::json!({
                "message_id": Uuid::now_v7(), "room_id": room, "reply_to": null,
                "sender_id": Uuid::now_v7(), "body": "hi", "sent_at": "2024-05-01T12:00:00Z",
                "format": "plain"
            }),
            tx_id: 3,
        };
        let published = Published::new(event.clone());
        assert!(matches!(published.decoded, Decoded::Message(_)));
        assert!(matches!(
            classify_decoded(Uuid::now_v7(), &published.decoded),
            Class::Room(r) if r == room
        ));
        assert_eq!(
            format!("{:?}", published.frame()),
            format!("{:?}", sse_event(&event))
        );
        assert!(!published.data.contains("req-secret"));
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            tx_id: 7812,
            position: 42,
        };
        assert_eq!(format_cursor(c), "7812.42");
        assert_eq!(parse_cursor("7812.42"), Some(c));
        assert_eq!(
            parse_cursor(" 0.3 "),
            Some(Cursor {
                tx_id: 0,
                position: 3
            })
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.b",
            "-1.2",
            "1.-2",
            "1.2.3",
            "+1.2",
            "99999999999999999999.1",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
