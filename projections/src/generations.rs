//! What this process has heard of the read models' commits, kept as counters a
//! cache can check its entries against (see [`ReadStore::generation`]).
//!
//! A commit's notice names the rooms and users its events are about (their
//! `room_id`, `user_id` and `user_ids`), so an entry built from a room's rows
//! stays valid across commits about other rooms. Per projection and key there
//! is a counter in a fixed table indexed by a hash of the key: two keys sharing
//! a slot only retire each other's entries early, never keep one too long.
//!
//! Two channels, for rolling upgrades: every commit still sends its plain
//! notice (`parley_projections`, payload the model's name), which older readers
//! act on; a commit that can name its keys sends them first on
//! [`KEYS_CHANNEL`], in the same transaction. Postgres delivers a
//! transaction's notices together and in order, so a reader that heard the
//! keyed notice knows the plain one that follows is covered. A plain notice
//! with no keyed one before it (an older projector, a rebuild, a batch about
//! too many keys) retires everything of that model.
//!
//! [`ReadStore::generation`]: crate::ReadStore::generation

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use parley_event_log::EventEnvelope;
use uuid::Uuid;

use crate::Projection;

/// The channel of keyed commit notices.
pub const KEYS_CHANNEL: &str = "parley_projection_keys";

/// Keys one notice names at most (a payload must stay under Postgres's 8,000
/// bytes); a batch about more retires everything of its model.
pub const MAX_KEYS: usize = 150;

/// Counters per key: 128 KiB.
const KEY_SLOTS: usize = 1 << 14;

/// The rooms and users that `events` (those `projection` consumes) are about,
/// or `None` when a commit of them must count as about everything: too many
/// keys, or an event that names none of the fields keys are read from.
pub fn keys_of(projection: &dyn Projection, events: &[EventEnvelope]) -> Option<Vec<Uuid>> {
    let mut keys = HashSet::new();
    for event in events
        .iter()
        .filter(|e| projection.consumes(&e.aggregate_type))
    {
        let p = &event.payload;
        let mut named = false;
        for field in ["room_id", "user_id"] {
            if let Some(id) = p.get(field).and_then(|v| v.as_str()) {
                keys.insert(id.parse::<Uuid>().ok()?);
                named = true;
            }
        }
        if let Some(ids) = p.get("user_ids").and_then(|v| v.as_array()) {
            for id in ids {
                keys.insert(id.as_str()?.parse::<Uuid>().ok()?);
                named = true;
            }
        }
        if !named || keys.len() > MAX_KEYS {
            return None;
        }
    }
    Some(keys.into_iter().collect())
}

/// The keyed notice's payload: the model's name, then each key (none: the
/// commit changed none of the model's rows).
pub fn keyed_notice(projection: &str, keys: &[Uuid]) -> String {
    let mut payload = String::with_capacity(projection.len() + keys.len() * 37);
    payload.push_str(projection);
    for key in keys {
        payload.push(' ');
        payload.push_str(&key.to_string());
    }
    payload
}

/// How many commits of each projection, and about each key, this process has
/// heard of, and whether it can hear them at all right now.
#[derive(Debug)]
pub(crate) struct Generations {
    /// Bumped whenever the notification link (re)connects: commits may have
    /// been missed while it was down.
    pub(crate) epoch: AtomicU64,
    /// Whether commits of other processes reach this one now (Postgres only).
    pub(crate) live: AtomicBool,
    /// Commits about everything of a projection.
    by_projection: RwLock<HashMap<String, u64>>,
    /// Every commit of a projection, whatever it was about.
    commits: RwLock<HashMap<String, u64>>,
    /// Commits about keys, per projection.
    by_key: RwLock<HashMap<String, Arc<[AtomicU64]>>>,
    /// Keyed notices heard whose plain notice has not come yet, per projection.
    covered: Mutex<HashMap<String, u32>>,
    /// Moves before any other counter does (see [`Generations::changes`]).
    changes: AtomicU64,
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
            by_projection: RwLock::default(),
            commits: RwLock::default(),
            by_key: RwLock::default(),
            covered: Mutex::default(),
            changes: AtomicU64::new(0),
        }
    }
}

fn slot(key: &Uuid) -> usize {
    // The low bits of a v4 or v7 id are random.
    (key.as_u128() as usize) & (KEY_SLOTS - 1)
}

impl Generations {
    /// A commit of `projection`, whatever it was about (see [`Generations::commits_of`]).
    pub(crate) fn committed(&self, projection: &str) {
        let mut map = self.commits.write().expect("commits lock");
        *map.entry(projection.to_string()).or_insert(0) += 1;
    }

    /// The epoch plus every commit of `projections` heard of: it moves on each
    /// commit, whatever it was about (what a waiter for commits asks).
    pub(crate) fn commits_of(&self, projections: &[&str]) -> u64 {
        let map = self.commits.read().expect("commits lock");
        let commits: u64 = projections
            .iter()
            .map(|p| map.get(*p).copied().unwrap_or(0))
            .sum();
        self.epoch.load(Ordering::SeqCst).wrapping_add(commits)
    }

    /// A commit of `projection` about everything in it.
    pub(crate) fn bump(&self, projection: &str) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        let mut map = self.by_projection.write().expect("generations lock");
        *map.entry(projection.to_string()).or_insert(0) += 1;
    }

    /// A commit of `projection` about only `keys`.
    pub(crate) fn bump_keys(&self, projection: &str, keys: &[Uuid]) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        let table = self.table(projection);
        for key in keys {
            table[slot(key)].fetch_add(1, Ordering::SeqCst);
        }
    }

    fn table(&self, projection: &str) -> Arc<[AtomicU64]> {
        if let Some(table) = self.by_key.read().expect("keys lock").get(projection) {
            return table.clone();
        }
        let mut tables = self.by_key.write().expect("keys lock");
        tables
            .entry(projection.to_string())
            .or_insert_with(|| (0..KEY_SLOTS).map(|_| AtomicU64::new(0)).collect())
            .clone()
    }

    /// A notice heard on `channel`.
    pub(crate) fn heard(&self, channel: &str, payload: &str) {
        if channel == KEYS_CHANNEL {
            let mut words = payload.split(' ');
            let projection = words.next().unwrap_or_default();
            let keys: Option<Vec<Uuid>> = words.map(|w| w.parse().ok()).collect();
            // No keys: a commit that changed none of the model's rows (only
            // its checkpoint). Unreadable: the plain notice that follows
            // retires everything.
            if let Some(keys) = keys {
                self.bump_keys(projection, &keys);
                let mut covered = self.covered.lock().expect("covered lock");
                *covered.entry(projection.to_string()).or_insert(0) += 1;
            }
            return;
        }
        self.committed(payload);
        let was_covered = {
            let mut covered = self.covered.lock().expect("covered lock");
            match covered.get_mut(payload) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if !was_covered {
            self.bump(payload);
        }
    }

    /// The link (re)connected: whatever was sent while away is unknown, and
    /// no keyed notice heard before covers a plain one after.
    pub(crate) fn reconnected(&self) {
        self.covered.lock().expect("covered lock").clear();
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.live.store(true, Ordering::Release);
    }

    /// A number that moves before any counter [`Generations::of`] sums does.
    /// An entry whose keys are known only after its read (a user's room list)
    /// takes it before the read and again after summing: unchanged, no commit
    /// landed in between, and the sum is the entry's generation.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// The sum of the epoch, the commits of `projections` about everything and
    /// the commits about each of `keys`: it grows with every commit that could
    /// change rows of those models about those keys.
    pub(crate) fn of(&self, projections: &[&str], keys: &[Uuid]) -> u64 {
        let everything: u64 = {
            let map = self.by_projection.read().expect("generations lock");
            projections
                .iter()
                .map(|p| map.get(*p).copied().unwrap_or(0))
                .sum()
        };
        let about_keys: u64 = {
            let tables = self.by_key.read().expect("keys lock");
            projections
                .iter()
                .filter_map(|p| tables.get(*p))
                .flat_map(|table| keys.iter().map(|k| table[slot(k)].load(Ordering::SeqCst)))
                .sum()
        };
        self.epoch
            .load(Ordering::SeqCst)
            .wrapping_add(everything)
            .wrapping_add(about_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_commit_moves_only_its_keys() {
        let g = Generations::default();
        g.reconnected();
        let (a, b) = (Uuid::now_v7(), Uuid::new_v4());
        let (ga, gb) = (g.of(&["history"], &[a]), g.of(&["history"], &[b]));
        g.heard(KEYS_CHANNEL, &keyed_notice("history", &[a]));
        g.heard("parley_projections", "history");
        assert_ne!(g.of(&["history"], &[a]), ga, "room a changed");
        if slot(&a) != slot(&b) {
            assert_eq!(g.of(&["history"], &[b]), gb, "room b did not");
        }
        // A plain notice with no keyed one before it is about everything.
        g.heard("parley_projections", "history");
        assert_ne!(g.of(&["history"], &[b]), gb);
        // Keys count per projection.
        let ga = g.of(&["rooms"], &[a]);
        g.heard(KEYS_CHANNEL, &keyed_notice("history", &[a]));
        g.heard("parley_projections", "history");
        assert_eq!(g.of(&["rooms"], &[a]), ga);
        // A commit about nothing moves nothing.
        let gb = g.of(&["history"], &[b]);
        g.heard(KEYS_CHANNEL, "history");
        g.heard("parley_projections", "history");
        assert_eq!(g.of(&["history"], &[b]), gb);
        // Every commit counts for those waiting for commits.
        let all = g.commits_of(&["history"]);
        g.heard(KEYS_CHANNEL, &keyed_notice("history", &[a]));
        g.heard("parley_projections", "history");
        assert_ne!(g.commits_of(&["history"]), all);
        // Another model's commits do not count.
        let gb = g.of(&["history"], &[b]);
        g.heard("parley_projections", "users");
        assert_eq!(g.of(&["history"], &[b]), gb);
    }

    #[test]
    fn an_unreadable_keyed_notice_leaves_the_plain_one_to_retire_everything() {
        let g = Generations::default();
        g.reconnected();
        let b = Uuid::now_v7();
        let gb = g.of(&["rooms"], &[b]);
        g.heard(KEYS_CHANNEL, "rooms not-a-uuid");
        g.heard("parley_projections", "rooms");
        assert_ne!(g.of(&["rooms"], &[b]), gb);
    }

    #[test]
    fn a_reconnection_forgets_what_was_covered() {
        let g = Generations::default();
        g.reconnected();
        let b = Uuid::now_v7();
        g.heard(KEYS_CHANNEL, &keyed_notice("rooms", &[Uuid::now_v7()]));
        g.reconnected();
        let gb = g.of(&["rooms"], &[b]);
        // The plain notice of a keyed one lost with the old link.
        g.heard("parley_projections", "rooms");
        assert_ne!(g.of(&["rooms"], &[b]), gb);
    }
}
