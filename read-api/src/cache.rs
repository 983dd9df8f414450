//! What the hottest reads of a chat answer, kept in memory: the newest page of
//! each room's history and each user's room list, as the JSON bodies the API
//! sends, and who is a member of which room.
//!
//! Every entry is tagged with the store's *generation* of the projections it was
//! read from about the rooms and users it shows (see
//! [`ReadStore::generation_about`]): a commit this process hears of (a
//! projector's `NOTIFY`) that could change those rows moves it, and an entry of
//! an older one is never served again. Commits about other rooms leave it be.
//! While commits cannot be heard (the notification link is down, or the store
//! is a SQLite file another process might write) there is no generation and
//! nothing is cached.
//!
//! What is not cached: pages with reactions (whether the caller reacted differs
//! per caller), pages other than the newest, and requests with a consistency
//! token (they must see a commit the moment the database has it, not when its
//! notification arrives a few milliseconds later).
//!
//! [`ReadStore::generation_about`]: parley_projections::ReadStore::generation_about

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use uuid::Uuid;

/// The projections a history page is read from; its entries are about the
/// room. Its receipt counts come from the rooms model's markers, whose events
/// name the room.
pub const PAGE_SOURCES: [&str; 2] = ["history", "rooms"];

/// The projection memberships are read from. A membership entry is about the
/// user: every event that changes a room's members names the member
/// (`user_id`), while messages, which also commit to this projection about
/// their room, leave memberships be.
pub const MEMBER_SOURCES: [&str; 1] = ["rooms"];

/// The projection a room list is read from.
pub const LIST_SOURCES: [&str; 1] = ["rooms"];

/// Membership answers kept at most (then all are dropped and relearned).
const MAX_MEMBERS: usize = 200_000;

pub struct PageCache {
    budget: usize,
    pages: Mutex<Pages>,
    members: Mutex<HashMap<(Uuid, Uuid), (u64, bool)>>,
}

#[derive(Default)]
struct Pages {
    bytes: usize,
    by_room: HashMap<(Uuid, i64), (u64, Bytes)>,
    /// Per user: the generation, the body, and the rooms it lists.
    lists: HashMap<Uuid, (u64, Bytes, Vec<Uuid>)>,
}

impl Pages {
    /// Makes room for `len` more bytes within `budget`: over it, everything is
    /// dropped (simple, and a hot entry is read again at once).
    fn make_room(&mut self, len: usize, budget: usize) {
        if self.bytes + len > budget {
            self.by_room.clear();
            self.lists.clear();
            self.bytes = 0;
        }
    }
}

/// The keys a user's room list is about: the user, then each listed room.
pub fn list_keys(user: Uuid, rooms: &[Uuid]) -> Vec<Uuid> {
    let mut keys = Vec::with_capacity(rooms.len() + 1);
    keys.push(user);
    keys.extend_from_slice(rooms);
    keys
}

impl PageCache {
    /// A cache holding at most `budget` bytes of pages.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            pages: Mutex::new(Pages::default()),
            members: Mutex::new(HashMap::new()),
        }
    }

    /// The body of the newest `limit` messages of `room`, if cached at `generation`.
    pub fn page(&self, room: Uuid, limit: i64, generation: u64) -> Option<Bytes> {
        let pages = self.pages.lock().expect("page cache lock");
        match pages.by_room.get(&(room, limit)) {
            Some((g, body)) if *g == generation => Some(body.clone()),
            _ => None,
        }
    }

    /// Keeps a page read at `generation`. Over budget, every page is dropped
    /// first: simple, and a hot room is read again at once.
    pub fn keep_page(&self, room: Uuid, limit: i64, generation: u64, body: Bytes) {
        if body.len() > self.budget {
            return;
        }
        let mut pages = self.pages.lock().expect("page cache lock");
        pages.make_room(body.len(), self.budget);
        pages.bytes += body.len();
        if let Some((_, old)) = pages.by_room.insert((room, limit), (generation, body)) {
            pages.bytes -= old.len();
        }
    }

    /// `user`'s room list, if cached and still valid: `generation_of` gives
    /// the generation now of the keys the entry is about (see [`list_keys`]).
    pub fn list(
        &self,
        user: Uuid,
        generation_of: impl FnOnce(&[Uuid]) -> Option<u64>,
    ) -> Option<Bytes> {
        let (generation, body, rooms) = {
            let pages = self.pages.lock().expect("page cache lock");
            let (g, body, rooms) = pages.lists.get(&user)?;
            (*g, body.clone(), rooms.clone())
        };
        (generation_of(&list_keys(user, &rooms))? == generation).then_some(body)
    }

    /// Keeps `user`'s room list, listing `rooms`, read at `generation`.
    pub fn keep_list(&self, user: Uuid, rooms: Vec<Uuid>, generation: u64, body: Bytes) {
        let len = body.len() + rooms.len() * 16;
        if len > self.budget {
            return;
        }
        let mut pages = self.pages.lock().expect("page cache lock");
        pages.make_room(len, self.budget);
        pages.bytes += len;
        if let Some((_, old, old_rooms)) = pages.lists.insert(user, (generation, body, rooms)) {
            pages.bytes -= old.len() + old_rooms.len() * 16;
        }
    }

    /// Whether `user` is a member of `room`, if known at `generation`.
    pub fn member(&self, room: Uuid, user: Uuid, generation: u64) -> Option<bool> {
        let members = self.members.lock().expect("member cache lock");
        match members.get(&(room, user)) {
            Some((g, is)) if *g == generation => Some(*is),
            _ => None,
        }
    }

    pub fn keep_member(&self, room: Uuid, user: Uuid, generation: u64, is: bool) {
        let mut members = self.members.lock().expect("member cache lock");
        if members.len() >= MAX_MEMBERS {
            members.clear();
        }
        members.insert((room, user), (generation, is));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_the_generation_an_entry_was_read_at() {
        let cache = PageCache::new(1024);
        let (room, user) = (Uuid::now_v7(), Uuid::now_v7());
        cache.keep_page(room, 50, 7, Bytes::from_static(b"{\"messages\":[]}"));
        cache.keep_member(room, user, 7, true);
        assert_eq!(
            cache.page(room, 50, 7).as_deref(),
            Some(&b"{\"messages\":[]}"[..])
        );
        assert_eq!(cache.member(room, user, 7), Some(true));
        // A commit moved the generation: nothing old is served.
        assert_eq!(cache.page(room, 50, 8), None);
        assert_eq!(cache.member(room, user, 8), None);
        // Other limits and rooms are other entries.
        assert_eq!(cache.page(room, 20, 7), None);
        assert_eq!(cache.page(Uuid::now_v7(), 50, 7), None);
    }

    #[test]
    fn stays_within_its_budget() {
        let cache = PageCache::new(100);
        let rooms: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        cache.keep_page(rooms[0], 50, 1, Bytes::from(vec![b'a'; 60]));
        cache.keep_page(rooms[1], 50, 1, Bytes::from(vec![b'b'; 60]));
        assert_eq!(cache.page(rooms[0], 50, 1), None, "dropped to make room");
        assert!(cache.page(rooms[1], 50, 1).is_some());
        cache.keep_page(rooms[2], 50, 1, Bytes::from(vec![b'c'; 101]));
        assert_eq!(cache.page(rooms[2], 50, 1), None, "larger than the budget");
        // Replacing an entry does not count it twice.
        for _ in 0..5 {
            cache.keep_page(rooms[1], 50, 2, Bytes::from(vec![b'b'; 60]));
        }
        assert!(cache.page(rooms[1], 50, 2).is_some());
        assert_eq!(cache.pages.lock().unwrap().bytes, 60);
    }

    #[test]
    fn a_room_list_is_served_only_while_its_keys_have_not_moved() {
        let cache = PageCache::new(1024);
        let (user, room) = (Uuid::now_v7(), Uuid::now_v7());
        cache.keep_list(user, vec![room], 3, Bytes::from_static(b"{\"rooms\":[]}"));
        let asked = std::sync::Mutex::new(Vec::new());
        let body = cache.list(user, |keys| {
            asked.lock().unwrap().push(keys.to_vec());
            Some(3)
        });
        assert!(body.is_some());
        assert_eq!(
            asked.lock().unwrap()[0],
            vec![user, room],
            "the user, then the rooms"
        );
        assert!(cache.list(user, |_| Some(4)).is_none(), "moved");
        assert!(cache.list(user, |_| None).is_none(), "commits unheard");
        assert!(cache.list(Uuid::now_v7(), |_| Some(3)).is_none());
    }
}
