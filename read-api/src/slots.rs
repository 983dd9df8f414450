//! Per-caller counters of things held open (queries waiting on a token, live
//! streams), so that one account cannot hold an unbounded number of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// How many of one kind of slot each caller holds, up to a maximum.
#[derive(Debug, Clone)]
pub struct UserSlots {
    held: Arc<Mutex<HashMap<Uuid, u32>>>,
    max: u32,
}

/// One held slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    held: Arc<Mutex<HashMap<Uuid, u32>>>,
    user: Uuid,
}

impl UserSlots {
    pub fn new(max: u32) -> Self {
        Self {
            held: Arc::default(),
            max,
        }
    }

    /// A slot for `user`, or `None` when they hold the maximum already.
    pub fn take(&self, user: Uuid) -> Option<Slot> {
        let mut held = self.held.lock().expect("slots lock");
        let count = held.entry(user).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            held: self.held.clone(),
            user,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("slots lock");
        if let Some(count) = held.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_user_and_given_back() {
        let slots = UserSlots::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none());
        assert!(slots.take(b).is_some(), "another user is not affected");
        drop(first);
        assert!(slots.take(a).is_some());
    }
}
