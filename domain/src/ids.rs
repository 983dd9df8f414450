//! Deterministic aggregate ids (UUIDv5), so that "one X per Y" is enforced by the event
//! log's per-aggregate concurrency check rather than by a read model.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::values::Username;

// Fixed namespaces: changing any of them would orphan every existing aggregate.
const USERNAME_NS: Uuid = Uuid::from_u128(0x5b1e_3c4a_7f0d_4e21_9a6b_0c8d_2f41_7a01);
const DIRECT_ROOM_NS: Uuid = Uuid::from_u128(0x5b1e_3c4a_7f0d_4e21_9a6b_0c8d_2f41_7a02);
const FRIENDSHIP_NS: Uuid = Uuid::from_u128(0x5b1e_3c4a_7f0d_4e21_9a6b_0c8d_2f41_7a03);
const READ_MARKER_NS: Uuid = Uuid::from_u128(0x5b1e_3c4a_7f0d_4e21_9a6b_0c8d_2f41_7a04);
const PRESENCE_NS: Uuid = Uuid::from_u128(0x5b1e_3c4a_7f0d_4e21_9a6b_0c8d_2f41_7a05);
const LOOKALIKE_NS: Uuid = Uuid::from_u128(0x5b1e_3c4a_7f0d_4e21_9a6b_0c8d_2f41_7a06);

fn v5_of_two(ns: &Uuid, first: Uuid, second: Uuid) -> Uuid {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(first.as_bytes());
    bytes[16..].copy_from_slice(second.as_bytes());
    Uuid::new_v5(ns, &bytes)
}

/// The id of the `username` aggregate that reserves `username`.
pub fn username_claim_id(username: &Username) -> Uuid {
    Uuid::new_v5(&USERNAME_NS, username.as_str().as_bytes())
}

/// What `username` looks like: its Unicode TR39 skeleton, lowercased (the
/// skeleton maps `0` to `O`, `1` to `l`, `m` to `rn`, ...), so `paypal` and
/// `paypa1` look the same.
pub fn lookalike_key(username: &Username) -> String {
    unicode_security::skeleton(username.as_str())
        .collect::<String>()
        .to_lowercase()
}

/// The id of the `username` aggregate that reserves everything that looks like
/// `username` ([`lookalike_key`]): a second claim beside the exact one, so two
/// usernames that look the same cannot both be registered.
pub fn username_lookalike_id(username: &Username) -> Uuid {
    Uuid::new_v5(&LOOKALIKE_NS, lookalike_key(username).as_bytes())
}

/// The id of the one direct room of two users; the same whichever order they come in.
pub fn direct_room_id(a: Uuid, b: Uuid) -> Uuid {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    v5_of_two(&DIRECT_ROOM_NS, low, high)
}

/// The id of the friendship aggregate of two users (also the id of its pending request).
pub fn friendship_id(a: Uuid, b: Uuid) -> Uuid {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    v5_of_two(&FRIENDSHIP_NS, low, high)
}

/// The id of `user_id`'s read marker in `room_id`.
pub fn read_marker_id(room_id: Uuid, user_id: Uuid) -> Uuid {
    v5_of_two(&READ_MARKER_NS, room_id, user_id)
}

/// The id of `user_id`'s presence aggregate. Not the user id itself: that names the
/// `user` aggregate, and two aggregates must never share a stream.
pub fn presence_id(user_id: Uuid) -> Uuid {
    Uuid::new_v5(&PRESENCE_NS, user_id.as_bytes())
}

/// Checks an id a client chose for a new aggregate (a message id): it must be a
/// random UUID (version 4 or 7). Every derived id above is a version 5 UUID, so a
/// client can never pick the id of a username claim, a friendship, a direct room,
/// a read marker or a presence stream and squat it before its owner uses it.
pub fn client_chosen(field: &str, id: Uuid) -> Result<Uuid, DomainError> {
    match id.get_version_num() {
        4 | 7 if id.get_variant() == uuid::Variant::RFC4122 => Ok(id),
        _ => Err(DomainError::validation(
            field,
            "must be a random UUID (version 4 or 7)",
        )),
    }
}

/// Two distinct users, stored in a canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserPair {
    low: Uuid,
    high: Uuid,
}

impl UserPair {
    /// Pairs two users; fails with a rule error when they are the same user.
    pub fn new(a: Uuid, b: Uuid) -> Result<Self, DomainError> {
        if a == b {
            return Err(DomainError::rule_on(
                "user_id",
                "cannot do this with yourself",
            ));
        }
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        Ok(Self { low, high })
    }

    /// The smaller id.
    pub fn low(&self) -> Uuid {
        self.low
    }

    /// The larger id.
    pub fn high(&self) -> Uuid {
        self.high
    }

    /// Both ids, sorted.
    pub fn as_array(&self) -> [Uuid; 2] {
        [self.low, self.high]
    }

    /// Whether `user_id` is one of the two.
    pub fn contains(&self, user_id: Uuid) -> bool {
        self.low == user_id || self.high == user_id
    }

    /// The other user of the pair, if `user_id` is one of them.
    pub fn other(&self, user_id: Uuid) -> Option<Uuid> {
        if user_id == self.low {
            Some(self.high)
        } else if user_id == self.high {
            Some(self.low)
        } else {
            None
        }
    }

    /// [`direct_room_id`] of this pair.
    pub fn direct_room_id(&self) -> Uuid {
        direct_room_id(self.low, self.high)
    }

    /// [`friendship_id`] of this pair.
    pub fn friendship_id(&self) -> Uuid {
        friendship_id(self.low, self.high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_ids_do_not_depend_on_order() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(direct_room_id(a, b), direct_room_id(b, a));
        assert_eq!(friendship_id(a, b), friendship_id(b, a));
        assert_ne!(direct_room_id(a, b), friendship_id(a, b));
        assert_eq!(UserPair::new(a, b).unwrap(), UserPair::new(b, a).unwrap());
    }

    #[test]
    fn ids_are_stable_across_releases() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        // Pinned: these ids are stored in event logs; they must never change.
        assert_eq!(
            username_claim_id(&Username::parse("alice").unwrap()).to_string(),
            "c2f6b64f-f602-508e-8a09-f940eb765a6c"
        );
        assert_eq!(
            direct_room_id(a, b).to_string(),
            "93ddffa6-82dc-5bb2-9a72-c10bd88c9189"
        );
        assert_eq!(
            friendship_id(a, b).to_string(),
            "67293990-bb44-590b-ad6a-27a095eeb085"
        );
        assert_eq!(
            read_marker_id(a, b).to_string(),
            "dc7391c6-b103-5d40-b5e6-358292123f3d"
        );
    }

    #[test]
    fn presence_has_a_stream_of_its_own() {
        let user = Uuid::new_v4();
        assert_ne!(presence_id(user), user);
        assert_eq!(presence_id(user), presence_id(user));
    }

    #[test]
    fn read_marker_id_depends_on_which_is_room() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(read_marker_id(a, b), read_marker_id(b, a));
    }

    #[test]
    fn username_claim_id_follows_normalization() {
        assert_eq!(
            username_claim_id(&Username::parse(" Alice ").unwrap()),
            username_claim_id(&Username::parse("alice").unwrap())
        );
    }

    #[test]
    fn usernames_that_look_alike_share_a_lookalike_id() {
        let id = |name: &str| username_lookalike_id(&Username::parse(name).unwrap());
        for (a, b) in [("paypal", "paypa1"), ("modern", "rnodern"), ("bob", "b0b")] {
            assert_eq!(id(a), id(b), "{a} and {b} look alike");
        }
        assert_ne!(id("alice"), id("alicia"));
        assert_ne!(
            id("alice"),
            username_claim_id(&Username::parse("alice").unwrap())
        );
    }

    #[test]
    fn clients_may_choose_only_random_ids() {
        assert!(client_chosen("message_id", Uuid::new_v4()).is_ok());
        assert!(client_chosen("message_id", Uuid::now_v7()).is_ok());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for derived in [
            username_claim_id(&Username::parse("alice").unwrap()),
            direct_room_id(a, b),
            friendship_id(a, b),
            read_marker_id(a, b),
            presence_id(a),
            Uuid::nil(),
            Uuid::max(),
        ] {
            assert!(
                client_chosen("message_id", derived).is_err(),
                "{derived} accepted"
            );
        }
    }

    #[test]
    fn a_pair_needs_two_users() {
        let a = Uuid::new_v4();
        assert!(matches!(UserPair::new(a, a), Err(DomainError::Rule { .. })));
        let b = Uuid::new_v4();
        let pair = UserPair::new(b, a).unwrap();
        assert!(pair.low() < pair.high());
        assert_eq!(pair.other(a), Some(b));
        assert_eq!(pair.other(Uuid::nil()), None);
    }
}
