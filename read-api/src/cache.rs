//! The newest page of each room's history, kept as the JSON body the API sends,
//! and who is a member of which room: opening a room, the hottest read of a chat,
//! answered without the database.
//!
//! Every entry is tagged with the store's *generation* of the projections it was
//! read from (history and rooms, see [`ReadStore::generation`]), taken before
//! the read. Any commit of either projection that this process hears of (their
//! `NOTIFY`, on Postgres) moves the generation, and entries of an older one are
//! never served again. While commits cannot be heard (the notification link is
//! down, or the store is a SQLite file another process might write) there is no
//! generation and nothing is cached.
//!
//! What is not cached: pages with reactions (whether the caller reacted differs
//! per caller), pages other than the newest, and requests with a consistency
//! token (they must see a commit the moment the database has it, not when its
//! notification arrives a few milliseconds later).
//!
//! [`ReadStore::generation`]: parley_projections::ReadStore::generation

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use uuid::Uuid;

/// The projections whose commits invalidate the cache.
pub const SOURCES: [&str; 2] = ["history", "rooms"];

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
        if pages.bytes + body.len() > self.budget {
            pages.by_room.clear();
            pages.bytes = 0;
        }
        pages.bytes += body.len();
        if let Some((_, old)) = pages.by_room.insert((room, limit), (generation, body)) {
            pages.bytes -= old.len();
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
}
