//! The caller's rooms and friends, loaded as of where their stream starts and
//! kept current by their own changes as events pass.

use parley_projections::models::Model;
use std::collections::HashSet;

use parley_event_log::{Cursor, EventEnvelope, SharedLog};
use parley_http_kit::ApiError;
use parley_projections::models::{friends, rooms};
use parley_projections::EventAt;
use uuid::Uuid;

use super::classify::{classify, classify_decoded, Change, Class, Set};
use super::event::{decoded, Decoded};
use super::READ_BATCH;
use crate::ReadState;

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

    pub(super) fn me(&self) -> Uuid {
        self.me
    }

    pub(super) fn has_room(&self, room: Uuid) -> bool {
        self.rooms.contains(&room)
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

    /// The caller's rooms and friends just after `start`, for a hub at
    /// `position` (before which every streamed model has applied everything).
    ///
    /// The read models hold whatever their projectors have reached (fed by
    /// Kafka, each aggregate's partition its own), so each of the caller's
    /// changes in the log since the earlier of the two is judged by whether
    /// its model has applied it ([`Progress::applied_each`]): one applied
    /// after `start` is wound back, one not yet applied up to `start` is wound
    /// forward. The models are read between two equal readings of their
    /// versions, so they are read at one state.
    pub(super) async fn load(
        state: &ReadState,
        log: &SharedLog,
        me: Uuid,
        start: Cursor,
        position: Cursor,
    ) -> Result<Self, ApiError> {
        let (progress, pool) = (&state.progress, state.store.pool());
        let names = [rooms::Rooms::NAME, friends::Friends::NAME];
        let version = || async {
            Ok::<_, sqlx::Error>((
                progress.version(names[0]).await?,
                progress.version(names[1]).await?,
            ))
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = version().await?;
            let room_ids = rooms::room_ids_of(pool, me).await?;
            let friend_list = friends::friends_of(pool, me).await?;
            let changes = my_changes(log, me, start.min(position)).await?;
            let mut applied = Vec::with_capacity(changes.len());
            for (set, name) in [(Set::Rooms, names[0]), (Set::Friends, names[1])] {
                let of_set: Vec<&MyChange> =
                    changes.iter().filter(|c| c.change.set == set).collect();
                let at: Vec<EventAt> = of_set.iter().map(|c| c.at).collect();
                let answers = progress.applied_each(name, &at).await?;
                applied.extend(of_set.into_iter().zip(answers));
            }
            if before != version().await? && attempt < 5 {
                continue;
            }
            // In log order again (the lookups went set by set).
            applied.sort_by_key(|(c, _)| c.at.at);
            let mut interest = Interest {
                me,
                rooms: room_ids.into_iter().collect(),
                friends: friend_list.into_iter().map(|f| f.user_id).collect(),
            };
            let mut decided = HashSet::new();
            // Applied after `start`: the state before the first such change.
            for (c, _) in applied.iter().filter(|(c, done)| c.at.at > start && *done) {
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
            for (c, _) in applied
                .iter()
                .filter(|(c, done)| c.at.at <= start && !*done)
            {
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
    at: EventAt,
    change: Change,
}

/// The caller's changes in the log after `from`, up to its head.
pub(super) async fn my_changes(
    log: &SharedLog,
    me: Uuid,
    from: Cursor,
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
            cursor = event.cursor();
            if let Class::Mine(Some(change)) = classify(me, event) {
                changes.push(MyChange {
                    at: EventAt {
                        at: cursor,
                        aggregate_id: event.aggregate_id,
                        sequence: event.sequence,
                    },
                    change,
                });
            }
        }
        if !full {
            return Ok(changes);
        }
    }
}
