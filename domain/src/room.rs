//! Rooms: group rooms (public or private) and direct rooms (one per pair of users).
//!
//! The state holds membership and metadata only; messages are separate aggregates, so a
//! room's event stream stays short and loading it stays cheap.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ids::UserPair;
use crate::values::{Role, RoomName, Topic, Visibility};

mod events;
pub use events::*;

/// Commands of the `room` aggregate.
#[derive(Debug, Clone)]
pub enum RoomCommand {
    /// Create a group room; the creator joins as owner.
    CreateRoom {
        room_id: Uuid,
        name: RoomName,
        topic: Option<Topic>,
        visibility: Visibility,
        creator_id: Uuid,
        at: DateTime<Utc>,
    },
    /// Create the direct room of a pair (id = [`crate::ids::direct_room_id`]); idempotent.
    /// `blocked`: whether either user blocks the other (looked up by the caller).
    CreateDirectRoom {
        room_id: Uuid,
        pair: UserPair,
        blocked: bool,
        at: DateTime<Utc>,
    },
    /// Join a public room, or a private one after an invite.
    Join { user_id: Uuid, at: DateTime<Utc> },
    /// Leave a group room.
    Leave { user_id: Uuid, at: DateTime<Utc> },
    /// Invite a user.
    Invite {
        user_id: Uuid,
        invited_by: Uuid,
        at: DateTime<Utc>,
    },
    /// Remove a member (moderators only).
    Kick {
        user_id: Uuid,
        kicked_by: Uuid,
        at: DateTime<Utc>,
    },
    /// Ban a user (moderators only): removed, and kept out until unbanned.
    Ban {
        user_id: Uuid,
        banned_by: Uuid,
        at: DateTime<Utc>,
    },
    /// Lift a ban (moderators only).
    Unban {
        user_id: Uuid,
        unbanned_by: Uuid,
        at: DateTime<Utc>,
    },
    /// Make a member an admin or a plain member (owner only).
    ChangeRole {
        user_id: Uuid,
        role: Role,
        changed_by: Uuid,
        at: DateTime<Utc>,
    },
}

/// A room (id = room id): metadata, members with their roles, pending invites.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Room {
    room_id: Option<Uuid>,
    /// `None` for direct rooms.
    name: Option<RoomName>,
    visibility: Option<Visibility>,
    direct: bool,
    members: BTreeMap<Uuid, Role>,
    invites: BTreeSet<Uuid>,
    /// Users kicked out, and when: they may not rejoin by themselves at once.
    #[serde(default)]
    kicked: BTreeMap<Uuid, DateTime<Utc>>,
    /// Users banned from the room.
    #[serde(default)]
    banned: BTreeSet<Uuid>,
}

/// How long a kicked user must wait before joining a public room again (an
/// invite from the room lets them back at once).
pub const KICK_COOLDOWN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

impl Room {
    /// Whether the room was created.
    pub fn exists(&self) -> bool {
        self.room_id.is_some()
    }

    /// The room's id, once created.
    pub fn room_id(&self) -> Option<Uuid> {
        self.room_id
    }

    /// Whether `user_id` is a member.
    pub fn is_member(&self, user_id: Uuid) -> bool {
        self.members.contains_key(&user_id)
    }

    /// The role of `user_id`, if a member.
    pub fn role_of(&self, user_id: Uuid) -> Option<Role> {
        self.members.get(&user_id).copied()
    }

    /// Whether `user_id` holds a pending invite.
    pub fn is_invited(&self, user_id: Uuid) -> bool {
        self.invites.contains(&user_id)
    }

    /// Whether `user_id` is banned.
    pub fn is_banned(&self, user_id: Uuid) -> bool {
        self.banned.contains(&user_id)
    }

    /// Whether this is a direct room.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The visibility, once created (direct rooms are private).
    pub fn visibility(&self) -> Option<Visibility> {
        self.visibility
    }

    /// The name of a group room (`None` for direct rooms and before creation).
    pub fn name(&self) -> Option<&RoomName> {
        self.name.as_ref()
    }

    /// The number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The members and their roles.
    pub fn members(&self) -> impl Iterator<Item = (Uuid, Role)> + '_ {
        self.members.iter().map(|(id, role)| (*id, *role))
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(&self, command: RoomCommand) -> Result<Vec<RoomEvent>, DomainError> {
        match command {
            RoomCommand::CreateRoom {
                room_id,
                name,
                topic,
                visibility,
                creator_id,
                at,
            } => {
                if self.exists() {
                    return Err(DomainError::conflict("room already exists"));
                }
                Ok(vec![
                    RoomCreated {
                        room_id,
                        name,
                        topic,
                        visibility,
                        creator_id,
                        created_at: at,
                    }
                    .into(),
                    MemberJoined {
                        room_id,
                        user_id: creator_id,
                        role: Role::Owner,
                        at,
                    }
                    .into(),
                ])
            }
            RoomCommand::CreateDirectRoom {
                room_id,
                pair,
                blocked,
                at,
            } => {
                if blocked {
                    return Err(DomainError::forbidden(
                        "cannot open a direct room with a user who blocked you or whom you blocked",
                    ));
                }
                if room_id != pair.direct_room_id() {
                    return Err(DomainError::rule_on(
                        "room_id",
                        "a direct room's id must be ids::direct_room_id of the pair",
                    ));
                }
                if self.exists() {
                    if self.is_direct() {
                        // One direct room per pair: the caller answers with the same id.
                        return Ok(vec![]);
                    }
                    return Err(DomainError::conflict("room already exists"));
                }
                let [low, high] = pair.as_array();
                Ok(vec![
                    DirectRoomCreated {
                        room_id,
                        user_ids: [low, high],
                        created_at: at,
                    }
                    .into(),
                    MemberJoined {
                        room_id,
                        user_id: low,
                        role: Role::Member,
                        at,
                    }
                    .into(),
                    MemberJoined {
                        room_id,
                        user_id: high,
                        role: Role::Member,
                        at,
                    }
                    .into(),
                ])
            }
            RoomCommand::Join { user_id, at } => {
                let room_id = self.require_exists()?;
                if self.direct {
                    return Err(DomainError::forbidden("direct rooms cannot be joined"));
                }
                if self.is_member(user_id) {
                    return Ok(vec![]);
                }
                if self.is_banned(user_id) {
                    return Err(DomainError::forbidden("you are banned from this room"));
                }
                if self.visibility == Some(Visibility::Private) && !self.is_invited(user_id) {
                    return Err(DomainError::forbidden(
                        "this room is private: an invite is needed to join",
                    ));
                }
                if let Some(kicked_at) = self.kicked.get(&user_id) {
                    let again_at = *kicked_at + KICK_COOLDOWN;
                    if at < again_at && !self.is_invited(user_id) {
                        return Err(DomainError::forbidden(format!(
                            "you were removed from this room; you can join again after {}",
                            again_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        )));
                    }
                }
                Ok(vec![MemberJoined {
                    room_id,
                    user_id,
                    role: Role::Member,
                    at,
                }
                .into()])
            }
            RoomCommand::Leave { user_id, at } => {
                let room_id = self.require_exists()?;
                if !self.is_member(user_id) {
                    return Err(DomainError::rule("you are not a member of this room"));
                }
                if self.direct {
                    return Err(DomainError::rule("direct rooms cannot be left"));
                }
                // The owner may leave too: there is no ownership transfer yet, and
                // trapping the owner in the room would be worse than an ownerless room
                // (admins keep moderating it).
                Ok(vec![MemberLeft {
                    room_id,
                    user_id,
                    at,
                }
                .into()])
            }
            RoomCommand::Invite {
                user_id,
                invited_by,
                at,
            } => {
                let room_id = self.require_exists()?;
                let Some(inviter_role) = self.role_of(invited_by) else {
                    return Err(DomainError::forbidden("only members can invite"));
                };
                if self.direct {
                    return Err(DomainError::forbidden(
                        "nobody can be invited into a direct room",
                    ));
                }
                if self.visibility == Some(Visibility::Private) && !inviter_role.can_moderate() {
                    return Err(DomainError::forbidden(
                        "only the owner and admins can invite into a private room",
                    ));
                }
                if self.is_member(user_id) {
                    return Err(DomainError::rule_on(
                        "user_id",
                        "the user is already a member of this room",
                    ));
                }
                if self.is_banned(user_id) {
                    return Err(DomainError::rule_on(
                        "user_id",
                        "the user is banned from this room: lift the ban first",
                    ));
                }
                if self.is_invited(user_id) {
                    return Ok(vec![]);
                }
                Ok(vec![MemberInvited {
                    room_id,
                    user_id,
                    invited_by,
                    at,
                }
                .into()])
            }
            RoomCommand::Kick {
                user_id,
                kicked_by,
                at,
            } => {
                let room_id = self.require_exists()?;
                let kicker_role = self.role_of(kicked_by);
                if !kicker_role.is_some_and(|r| r.can_moderate()) {
                    return Err(DomainError::forbidden(
                        "only the owner and admins can kick members",
                    ));
                }
                if user_id == kicked_by {
                    return Err(DomainError::rule_on(
                        "user_id",
                        "cannot kick yourself: leave the room instead",
                    ));
                }
                let Some(target_role) = self.role_of(user_id) else {
                    return Err(DomainError::not_found(
                        "the user is not a member of this room",
                    ));
                };
                match (kicker_role, target_role) {
                    (_, Role::Owner) => {
                        return Err(DomainError::forbidden("the owner cannot be kicked"))
                    }
                    (Some(Role::Admin), Role::Admin) => {
                        return Err(DomainError::forbidden("only the owner can kick an admin"))
                    }
                    _ => {}
                }
                Ok(vec![MemberKicked {
                    room_id,
                    user_id,
                    kicked_by,
                    at,
                }
                .into()])
            }
            RoomCommand::Ban {
                user_id,
                banned_by,
                at,
            } => {
                let room_id = self.require_exists()?;
                self.check_moderation(banned_by, user_id, "ban")?;
                if self.is_banned(user_id) {
                    return Ok(vec![]);
                }
                Ok(vec![MemberBanned {
                    room_id,
                    user_id,
                    banned_by,
                    at,
                }
                .into()])
            }
            RoomCommand::Unban {
                user_id,
                unbanned_by,
                at,
            } => {
                let room_id = self.require_exists()?;
                if !self.role_of(unbanned_by).is_some_and(|r| r.can_moderate()) {
                    return Err(DomainError::forbidden(
                        "only the owner and admins can lift a ban",
                    ));
                }
                if !self.is_banned(user_id) {
                    return Ok(vec![]);
                }
                Ok(vec![MemberUnbanned {
                    room_id,
                    user_id,
                    unbanned_by,
                    at,
                }
                .into()])
            }
            RoomCommand::ChangeRole {
                user_id,
                role,
                changed_by,
                at,
            } => {
                let room_id = self.require_exists()?;
                if self.role_of(changed_by) != Some(Role::Owner) {
                    return Err(DomainError::forbidden("only the owner can change roles"));
                }
                if role == Role::Owner {
                    return Err(DomainError::rule_on(
                        "role",
                        "a room has one owner: the role can only be admin or member",
                    ));
                }
                let Some(current) = self.role_of(user_id) else {
                    return Err(DomainError::not_found(
                        "the user is not a member of this room",
                    ));
                };
                if current == Role::Owner {
                    return Err(DomainError::rule_on(
                        "user_id",
                        "the owner's role cannot be changed",
                    ));
                }
                if current == role {
                    return Ok(vec![]);
                }
                Ok(vec![MemberRoleChanged {
                    room_id,
                    user_id,
                    role,
                    changed_by,
                    at,
                }
                .into()])
            }
        }
    }

    /// Whether `moderator` may remove `target` (kick or ban): a moderator of a
    /// group room, not themselves, never the owner, and an admin only by the owner.
    fn check_moderation(
        &self,
        moderator: Uuid,
        target: Uuid,
        what: &str,
    ) -> Result<(), DomainError> {
        if self.direct {
            return Err(DomainError::forbidden(format!(
                "nobody can {what} in a direct room"
            )));
        }
        let role = self.role_of(moderator);
        if !role.is_some_and(|r| r.can_moderate()) {
            return Err(DomainError::forbidden(format!(
                "only the owner and admins can {what} members"
            )));
        }
        if target == moderator {
            return Err(DomainError::rule_on(
                "user_id",
                format!("cannot {what} yourself"),
            ));
        }
        match (role, self.role_of(target)) {
            (_, Some(Role::Owner)) => Err(DomainError::forbidden(format!(
                "the owner cannot be the target of a {what}"
            ))),
            (Some(Role::Admin), Some(Role::Admin)) => Err(DomainError::forbidden(format!(
                "only the owner can {what} an admin"
            ))),
            _ => Ok(()),
        }
    }

    fn require_exists(&self) -> Result<Uuid, DomainError> {
        self.room_id
            .ok_or_else(|| DomainError::not_found("room not found"))
    }

    fn evolve(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::RoomCreated(e) => {
                self.room_id = Some(e.room_id);
                self.name = Some(e.name);
                self.visibility = Some(e.visibility);
            }
            RoomEvent::DirectRoomCreated(e) => {
                self.room_id = Some(e.room_id);
                self.visibility = Some(Visibility::Private);
                self.direct = true;
            }
            RoomEvent::MemberInvited(e) => {
                self.invites.insert(e.user_id);
            }
            RoomEvent::MemberJoined(e) => {
                self.invites.remove(&e.user_id);
                self.kicked.remove(&e.user_id);
                self.members.insert(e.user_id, e.role);
            }
            RoomEvent::MemberLeft(MemberLeft { user_id, .. }) => {
                self.members.remove(&user_id);
            }
            RoomEvent::MemberKicked(MemberKicked { user_id, at, .. }) => {
                self.members.remove(&user_id);
                self.kicked.insert(user_id, at);
            }
            RoomEvent::MemberRoleChanged(e) => {
                if let Some(role) = self.members.get_mut(&e.user_id) {
                    *role = e.role;
                }
            }
            RoomEvent::MemberBanned(e) => {
                self.members.remove(&e.user_id);
                self.invites.remove(&e.user_id);
                self.banned.insert(e.user_id);
            }
            RoomEvent::MemberUnbanned(e) => {
                self.banned.remove(&e.user_id);
            }
        }
    }
}

impl_aggregate!(Room, "room", RoomCommand, RoomEvent);

#[cfg(test)]
mod tests;
