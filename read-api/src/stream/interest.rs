//! The caller's rooms and friends, loaded as of where their stream starts and
//! kept current by their own changes as events pass.

use parley_projections::models::Model;
use std::collections::HashSet;
use std::future::Future;

use parley_event_log::{Cursor, EventEnvelope, SharedLog};
use parley_http_kit::ApiError;
use parley_projections::kafka::partitions::{applied_sequences, offsets_version};
use parley_projections::models::{friends, rooms};
use parley_projections::ReadStore;
use uuid::Uuid;

use super::classify::{classify, classify_decoded, Change, Class, Set};
use super::event::{decoded, Decoded};
use super::READ_BATCH;
use crate::ReadState;
use parley_projections::FedBy;

/// The caller's rooms and friends, as of the event being filtered.
pub(super) struct Interest {
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
    pub(super) fn route(&mut self, event: &EventEnvelope) -> bool {
        self.route_decoded(&decoded(event))
    }

    /// [`Interest::route`] of an event the hub decoded already.
    pub(super) fn route_decoded(&mut self, decoded: &Decoded) -> bool {
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
    pub(super) async fn load(
        state: &ReadState,
        log: &SharedLog,
        me: Uuid,
        start: Cursor,
        position: Cursor,
    ) -> Result<Self, ApiError> {
        match state.progress.fed_by() {
            FedBy::Log => Self::load_at_checkpoints(&state.store, log, me, start).await,
            FedBy::Partitions => Self::load_applied(&state.store, log, me, start, position).await,
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
pub(super) struct MyChange {
    at: Cursor,
    aggregate_id: Uuid,
    sequence: i64,
    change: Change,
}

/// The caller's changes in the log after `from`, up to `to` (or the head).
pub(super) async fn my_changes(
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
pub(super) async fn stable_read<T, F, Fut>(
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
