//! Friendships and blocks between two users (id = [`crate::ids::friendship_id`]).
//!
//! One aggregate per pair holds the friendship, the pending request and the blocks of
//! both users, so every rule between them is checked against one consistent state.
//! There is at most one pending request per pair at a time, and its request id is the
//! friendship id: `POST /v1/friend-requests/{id}/accept` addresses this aggregate
//! directly, and a new request after a decline reuses the same id.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{event_enum, examples, Example};
use crate::error::DomainError;
use crate::ids::friendship_id;

/// A friend request was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRequestSent {
    pub request_id: Uuid,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A friend request was accepted; the two users are friends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRequestAccepted {
    pub request_id: Uuid,
    /// The original requester.
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A friend request was declined by its recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRequestDeclined {
    pub request_id: Uuid,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A friend request was withdrawn by its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRequestCancelled {
    pub request_id: Uuid,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A friendship was ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FriendRemoved {
    /// Who ended it.
    pub user_id: Uuid,
    pub friend_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A user blocked another; this ends their friendship and any pending request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserBlocked {
    pub blocker_id: Uuid,
    pub blocked_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A user lifted their block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserUnblocked {
    pub blocker_id: Uuid,
    pub blocked_id: Uuid,
    pub at: DateTime<Utc>,
}

event_enum! {
    /// Events of the `friendship` aggregate.
    pub enum FriendshipEvent for "friendship";
    {
        FriendRequestSent = 1,
        FriendRequestAccepted = 1,
        FriendRequestDeclined = 1,
        FriendRequestCancelled = 1,
        FriendRemoved = 1,
        UserBlocked = 1,
        UserUnblocked = 1,
    }
}

macro_rules! request_example {
    ($($event:ident),+) => {
        $(
            impl Example for $event {
                fn example() -> Self {
                    Self {
                        request_id: friendship_id(examples::id(1), examples::id(2)),
                        from_user_id: examples::id(1),
                        to_user_id: examples::id(2),
                        at: examples::at(),
                    }
                }
            }
        )+
    };
}
request_example!(
    FriendRequestSent,
    FriendRequestAccepted,
    FriendRequestDeclined,
    FriendRequestCancelled
);

impl Example for FriendRemoved {
    fn example() -> Self {
        Self {
            user_id: examples::id(1),
            friend_id: examples::id(2),
            at: examples::at(),
        }
    }
}

impl Example for UserBlocked {
    fn example() -> Self {
        Self {
            blocker_id: examples::id(1),
            blocked_id: examples::id(2),
            at: examples::at(),
        }
    }
}

impl Example for UserUnblocked {
    fn example() -> Self {
        Self {
            blocker_id: examples::id(1),
            blocked_id: examples::id(2),
            at: examples::at(),
        }
    }
}

/// Commands of the `friendship` aggregate.
#[derive(Debug, Clone)]
pub enum FriendshipCommand {
    /// Ask `to` to be friends; a request while `to` already asked `from` accepts it.
    SendFriendRequest {
        from: Uuid,
        to: Uuid,
        at: DateTime<Utc>,
    },
    /// Accept the pending request (its recipient only).
    AcceptFriendRequest { actor: Uuid, at: DateTime<Utc> },
    /// Decline the pending request (its recipient only).
    DeclineFriendRequest { actor: Uuid, at: DateTime<Utc> },
    /// Withdraw the pending request (its sender only).
    CancelFriendRequest { actor: Uuid, at: DateTime<Utc> },
    /// End the friendship.
    RemoveFriend {
        actor: Uuid,
        friend: Uuid,
        at: DateTime<Utc>,
    },
    /// Block a user (directional).
    BlockUser {
        blocker: Uuid,
        blocked: Uuid,
        at: DateTime<Utc>,
    },
    /// Lift one's own block.
    UnblockUser {
        blocker: Uuid,
        blocked: Uuid,
        at: DateTime<Utc>,
    },
}

/// What stands between two users: friendship, a pending request, blocks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Friendship {
    friends: bool,
    /// (from, to) of the pending request.
    pending: Option<(Uuid, Uuid)>,
    /// Users of the pair who block the other one.
    blockers: BTreeSet<Uuid>,
    /// Who sent the last declined request, and when it was declined.
    #[serde(default)]
    declined: Option<(Uuid, DateTime<Utc>)>,
}

/// How long after a declined request its sender must wait to ask again: a
/// "no" must not be answerable by asking again at once, over and over.
pub const DECLINED_REQUEST_COOLDOWN: chrono::TimeDelta = chrono::TimeDelta::hours(24);

impl Friendship {
    /// Whether the two users are friends.
    pub fn are_friends(&self) -> bool {
        self.friends
    }

    /// Whether either user blocks the other.
    pub fn is_blocked_either_way(&self) -> bool {
        !self.blockers.is_empty()
    }

    /// Whether `user_id` blocks the other user of the pair.
    pub fn blocked_by(&self, user_id: Uuid) -> bool {
        self.blockers.contains(&user_id)
    }

    /// The pending request as (from, to); its request id is the friendship id.
    pub fn pending(&self) -> Option<(Uuid, Uuid)> {
        self.pending
    }

    fn pending_or_not_found(&self) -> Result<(Uuid, Uuid), DomainError> {
        self.pending
            .ok_or_else(|| DomainError::not_found("no pending friend request"))
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(&self, command: FriendshipCommand) -> Result<Vec<FriendshipEvent>, DomainError> {
        match command {
            FriendshipCommand::SendFriendRequest { from, to, at } => {
                if from == to {
                    return Err(DomainError::rule_on(
                        "to_user_id",
                        "cannot befriend yourself",
                    ));
                }
                if self.is_blocked_either_way() {
                    return Err(DomainError::forbidden(
                        "cannot send a friend request between blocked users",
                    ));
                }
                if self.friends {
                    return Err(DomainError::rule_on(
                        "to_user_id",
                        "you are already friends",
                    ));
                }
                if let Some((declined_from, declined_at)) = self.declined {
                    let again_at = declined_at + DECLINED_REQUEST_COOLDOWN;
                    if declined_from == from && at < again_at && self.pending.is_none() {
                        return Err(DomainError::rule_on(
                            "to_user_id",
                            format!(
                                "your last request was declined; you can ask again after {}",
                                again_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ),
                        ));
                    }
                }
                let request_id = friendship_id(from, to);
                match self.pending {
                    Some((pending_from, _)) if pending_from == from => Ok(vec![]),
                    // Both asked: the second request accepts the first.
                    Some((pending_from, pending_to)) => Ok(vec![FriendRequestAccepted {
                        request_id,
                        from_user_id: pending_from,
                        to_user_id: pending_to,
                        at,
                    }
                    .into()]),
                    None => Ok(vec![FriendRequestSent {
                        request_id,
                        from_user_id: from,
                        to_user_id: to,
                        at,
                    }
                    .into()]),
                }
            }
            FriendshipCommand::AcceptFriendRequest { actor, at } => {
                let (from, to) = self.pending_or_not_found()?;
                if actor != to {
                    return Err(DomainError::forbidden(
                        "only the recipient can accept a friend request",
                    ));
                }
                Ok(vec![FriendRequestAccepted {
                    request_id: friendship_id(from, to),
                    from_user_id: from,
                    to_user_id: to,
                    at,
                }
                .into()])
            }
            FriendshipCommand::DeclineFriendRequest { actor, at } => {
                let (from, to) = self.pending_or_not_found()?;
                if actor != to {
                    return Err(DomainError::forbidden(
                        "only the recipient can decline a friend request",
                    ));
                }
                Ok(vec![FriendRequestDeclined {
                    request_id: friendship_id(from, to),
                    from_user_id: from,
                    to_user_id: to,
                    at,
                }
                .into()])
            }
            FriendshipCommand::CancelFriendRequest { actor, at } => {
                let (from, to) = self.pending_or_not_found()?;
                if actor != from {
                    return Err(DomainError::forbidden(
                        "only the sender can cancel a friend request",
                    ));
                }
                Ok(vec![FriendRequestCancelled {
                    request_id: friendship_id(from, to),
                    from_user_id: from,
                    to_user_id: to,
                    at,
                }
                .into()])
            }
            FriendshipCommand::RemoveFriend { actor, friend, at } => {
                if !self.friends || actor == friend {
                    return Err(DomainError::not_found("you are not friends"));
                }
                Ok(vec![FriendRemoved {
                    user_id: actor,
                    friend_id: friend,
                    at,
                }
                .into()])
            }
            FriendshipCommand::BlockUser {
                blocker,
                blocked,
                at,
            } => {
                if blocker == blocked {
                    return Err(DomainError::rule_on("user_id", "cannot block yourself"));
                }
                if self.blocked_by(blocker) {
                    return Ok(vec![]);
                }
                Ok(vec![UserBlocked {
                    blocker_id: blocker,
                    blocked_id: blocked,
                    at,
                }
                .into()])
            }
            FriendshipCommand::UnblockUser {
                blocker,
                blocked,
                at,
            } => {
                if !self.blocked_by(blocker) || blocker == blocked {
                    return Err(DomainError::not_found("you have not blocked this user"));
                }
                Ok(vec![UserUnblocked {
                    blocker_id: blocker,
                    blocked_id: blocked,
                    at,
                }
                .into()])
            }
        }
    }

    fn evolve(&mut self, event: FriendshipEvent) {
        match event {
            FriendshipEvent::FriendRequestSent(e) => {
                self.pending = Some((e.from_user_id, e.to_user_id));
            }
            FriendshipEvent::FriendRequestAccepted(_) => {
                self.pending = None;
                self.friends = true;
            }
            FriendshipEvent::FriendRequestDeclined(e) => {
                self.pending = None;
                self.declined = Some((e.from_user_id, e.at));
            }
            FriendshipEvent::FriendRequestCancelled(_) => {
                self.pending = None;
            }
            FriendshipEvent::FriendRemoved(_) => self.friends = false,
            FriendshipEvent::UserBlocked(e) => {
                // A block ends the friendship and any pending request, without
                // separate events: read models apply the same rule.
                self.friends = false;
                self.pending = None;
                self.blockers.insert(e.blocker_id);
            }
            FriendshipEvent::UserUnblocked(e) => {
                self.blockers.remove(&e.blocker_id);
            }
        }
    }
}

impl_aggregate!(Friendship, "friendship", FriendshipCommand, FriendshipEvent);

#[cfg(test)]
mod tests;
