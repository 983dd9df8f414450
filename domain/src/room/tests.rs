use super::*;
use crate::codec::examples::{at, id};
use cqrs_es::test::TestFramework;

const ROOM: u8 = 10;
const OWNER: u8 = 1;
const MEMBER: u8 = 2;
const ADMIN: u8 = 3;
const OUTSIDER: u8 = 4;
const ADMIN2: u8 = 5;

type Given = TestFramework<Room>;

fn created(visibility: Visibility) -> Vec<RoomEvent> {
    vec![
        RoomCreated {
            room_id: id(ROOM),
            name: RoomName::parse("general").unwrap(),
            topic: None,
            visibility,
            creator_id: id(OWNER),
            created_at: at(),
        }
        .into(),
        joined(OWNER, Role::Owner),
    ]
}

fn joined(user: u8, role: Role) -> RoomEvent {
    MemberJoined {
        room_id: id(ROOM),
        user_id: id(user),
        role,
        at: at(),
    }
    .into()
}

fn invited(user: u8, by: u8) -> RoomEvent {
    MemberInvited {
        room_id: id(ROOM),
        user_id: id(user),
        invited_by: id(by),
        at: at(),
    }
    .into()
}

/// A room with an owner, an admin, a second admin and a member.
fn populated(visibility: Visibility) -> Vec<RoomEvent> {
    let mut events = created(visibility);
    events.push(joined(ADMIN, Role::Admin));
    events.push(joined(ADMIN2, Role::Admin));
    events.push(joined(MEMBER, Role::Member));
    events
}

fn pair() -> UserPair {
    UserPair::new(id(OWNER), id(MEMBER)).unwrap()
}

fn direct_created() -> Vec<RoomEvent> {
    let room_id = pair().direct_room_id();
    let member = |user| {
        MemberJoined {
            room_id,
            user_id: id(user),
            role: Role::Member,
            at: at(),
        }
        .into()
    };
    vec![
        DirectRoomCreated {
            room_id,
            user_ids: [id(OWNER), id(MEMBER)],
            created_at: at(),
        }
        .into(),
        member(OWNER),
        member(MEMBER),
    ]
}

fn join(user: u8) -> RoomCommand {
    RoomCommand::Join {
        user_id: id(user),
        at: at(),
    }
}

fn leave(user: u8) -> RoomCommand {
    RoomCommand::Leave {
        user_id: id(user),
        at: at(),
    }
}

fn invite(user: u8, by: u8) -> RoomCommand {
    RoomCommand::Invite {
        user_id: id(user),
        invited_by: id(by),
        at: at(),
    }
}

fn kick(user: u8, by: u8) -> RoomCommand {
    RoomCommand::Kick {
        user_id: id(user),
        kicked_by: id(by),
        at: at(),
    }
}

fn change_role(user: u8, role: Role, by: u8) -> RoomCommand {
    RoomCommand::ChangeRole {
        user_id: id(user),
        role,
        changed_by: id(by),
        at: at(),
    }
}

fn kicked(user: u8, by: u8) -> RoomEvent {
    MemberKicked {
        room_id: id(ROOM),
        user_id: id(user),
        kicked_by: id(by),
        at: at(),
    }
    .into()
}

fn is_forbidden(result: Result<Vec<RoomEvent>, DomainError>) -> bool {
    matches!(result, Err(DomainError::Forbidden(_)))
}

fn is_rule(result: Result<Vec<RoomEvent>, DomainError>) -> bool {
    matches!(result, Err(DomainError::Rule { .. }))
}

// --- create ---

#[test]
fn creating_a_room_makes_the_creator_owner() {
    Given::with(())
        .given_no_previous_events()
        .when(RoomCommand::CreateRoom {
            room_id: id(ROOM),
            name: RoomName::parse("general").unwrap(),
            topic: None,
            visibility: Visibility::Public,
            creator_id: id(OWNER),
            at: at(),
        })
        .then_expect_events(created(Visibility::Public));
}

#[test]
fn a_room_cannot_be_created_twice() {
    Given::with(())
        .given(created(Visibility::Public))
        .when(RoomCommand::CreateRoom {
            room_id: id(ROOM),
            name: RoomName::parse("again").unwrap(),
            topic: None,
            visibility: Visibility::Public,
            creator_id: id(MEMBER),
            at: at(),
        })
        .then_expect_error(DomainError::conflict("room already exists"));
}

#[test]
fn commands_on_a_missing_room_are_not_found() {
    for command in [
        join(MEMBER),
        leave(MEMBER),
        invite(MEMBER, OWNER),
        kick(MEMBER, OWNER),
        change_role(MEMBER, Role::Admin, OWNER),
    ] {
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(DomainError::not_found("room not found"));
    }
}

// --- direct rooms ---

#[test]
fn a_direct_room_has_both_users_as_members() {
    Given::with(())
        .given_no_previous_events()
        .when(RoomCommand::CreateDirectRoom {
            room_id: pair().direct_room_id(),
            pair: UserPair::new(id(MEMBER), id(OWNER)).unwrap(),
            blocked: false,
            at: at(),
        })
        .then_expect_events(direct_created());
}

#[test]
fn creating_an_existing_direct_room_again_is_a_no_op() {
    Given::with(())
        .given(direct_created())
        .when(RoomCommand::CreateDirectRoom {
            room_id: pair().direct_room_id(),
            pair: pair(),
            blocked: false,
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_block_prevents_a_direct_room() {
    let result = Given::with(())
        .given_no_previous_events()
        .when(RoomCommand::CreateDirectRoom {
            room_id: pair().direct_room_id(),
            pair: pair(),
            blocked: true,
            at: at(),
        })
        .inspect_result();
    assert!(is_forbidden(result));
}

#[test]
fn a_direct_room_id_must_come_from_the_pair() {
    let result = Given::with(())
        .given_no_previous_events()
        .when(RoomCommand::CreateDirectRoom {
            room_id: id(ROOM),
            pair: pair(),
            blocked: false,
            at: at(),
        })
        .inspect_result();
    assert!(is_rule(result));
}

#[test]
fn a_direct_room_cannot_be_joined_left_or_invited_into() {
    let given = || Given::with(()).given(direct_created());
    assert!(is_forbidden(given().when(join(OUTSIDER)).inspect_result()));
    assert!(is_rule(given().when(leave(MEMBER)).inspect_result()));
    assert!(is_forbidden(
        given().when(invite(OUTSIDER, MEMBER)).inspect_result()
    ));
}

#[test]
fn direct_room_state() {
    let mut room = Room::default();
    for e in direct_created() {
        room.evolve(e);
    }
    assert!(room.exists() && room.is_direct());
    assert_eq!(room.member_count(), 2);
    assert_eq!(room.name(), None);
    assert_eq!(room.visibility(), Some(Visibility::Private));
}

// --- join ---

#[test]
fn anyone_can_join_a_public_room() {
    Given::with(())
        .given(created(Visibility::Public))
        .when(join(MEMBER))
        .then_expect_events(vec![joined(MEMBER, Role::Member)]);
}

#[test]
fn joining_twice_is_a_no_op() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(join(MEMBER))
        .then_expect_events(vec![]);
}

#[test]
fn a_private_room_needs_an_invite() {
    let result = Given::with(())
        .given(created(Visibility::Private))
        .when(join(MEMBER))
        .inspect_result();
    assert!(is_forbidden(result));
}

#[test]
fn an_invited_user_can_join_a_private_room_and_the_invite_is_used_up() {
    let mut given = created(Visibility::Private);
    given.push(invited(MEMBER, OWNER));
    Given::with(())
        .given(given.clone())
        .when(join(MEMBER))
        .then_expect_events(vec![joined(MEMBER, Role::Member)]);

    // After joining and leaving, the invite is gone.
    given.push(joined(MEMBER, Role::Member));
    given.push(
        MemberLeft {
            room_id: id(ROOM),
            user_id: id(MEMBER),
            at: at(),
        }
        .into(),
    );
    assert!(is_forbidden(
        Given::with(())
            .given(given)
            .when(join(MEMBER))
            .inspect_result()
    ));
}

// --- leave ---

#[test]
fn a_member_can_leave() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(leave(MEMBER))
        .then_expect_events(vec![MemberLeft {
            room_id: id(ROOM),
            user_id: id(MEMBER),
            at: at(),
        }
        .into()]);
}

#[test]
fn a_non_member_cannot_leave() {
    Given::with(())
        .given(created(Visibility::Public))
        .when(leave(OUTSIDER))
        .then_expect_error(DomainError::rule("you are not a member of this room"));
}

// --- invite ---

#[test]
fn a_member_can_invite_into_a_public_room() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(invite(OUTSIDER, MEMBER))
        .then_expect_events(vec![invited(OUTSIDER, MEMBER)]);
}

#[test]
fn a_non_member_cannot_invite() {
    let result = Given::with(())
        .given(created(Visibility::Public))
        .when(invite(MEMBER, OUTSIDER))
        .inspect_result();
    assert!(is_forbidden(result));
}

#[test]
fn only_moderators_invite_into_a_private_room() {
    let given = || Given::with(()).given(populated(Visibility::Private));
    assert!(is_forbidden(
        given().when(invite(OUTSIDER, MEMBER)).inspect_result()
    ));
    given()
        .when(invite(OUTSIDER, ADMIN))
        .then_expect_events(vec![invited(OUTSIDER, ADMIN)]);
}

#[test]
fn a_member_cannot_be_invited() {
    let result = Given::with(())
        .given(populated(Visibility::Public))
        .when(invite(MEMBER, OWNER))
        .inspect_result();
    assert!(is_rule(result));
}

#[test]
fn inviting_twice_is_a_no_op() {
    let mut given = created(Visibility::Public);
    given.push(invited(OUTSIDER, OWNER));
    Given::with(())
        .given(given)
        .when(invite(OUTSIDER, OWNER))
        .then_expect_events(vec![]);
}

// --- kick ---

#[test]
fn a_moderator_can_kick_a_member() {
    for by in [OWNER, ADMIN] {
        Given::with(())
            .given(populated(Visibility::Public))
            .when(kick(MEMBER, by))
            .then_expect_events(vec![kicked(MEMBER, by)]);
    }
}

#[test]
fn a_plain_member_or_outsider_cannot_kick() {
    for by in [MEMBER, OUTSIDER] {
        let result = Given::with(())
            .given(populated(Visibility::Public))
            .when(kick(ADMIN, by))
            .inspect_result();
        assert!(is_forbidden(result));
    }
}

#[test]
fn the_owner_cannot_be_kicked() {
    let result = Given::with(())
        .given(populated(Visibility::Public))
        .when(kick(OWNER, ADMIN))
        .inspect_result();
    assert!(is_forbidden(result));
}

#[test]
fn only_the_owner_can_kick_an_admin() {
    let given = || Given::with(()).given(populated(Visibility::Public));
    assert!(is_forbidden(
        given().when(kick(ADMIN2, ADMIN)).inspect_result()
    ));
    given()
        .when(kick(ADMIN2, OWNER))
        .then_expect_events(vec![kicked(ADMIN2, OWNER)]);
}

#[test]
fn kicking_a_non_member_is_not_found() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(kick(OUTSIDER, OWNER))
        .then_expect_error(DomainError::not_found(
            "the user is not a member of this room",
        ));
}

#[test]
fn a_moderator_cannot_kick_themselves() {
    let result = Given::with(())
        .given(populated(Visibility::Public))
        .when(kick(ADMIN, ADMIN))
        .inspect_result();
    assert!(is_rule(result));
}

#[test]
fn a_kicked_member_is_no_longer_a_member() {
    let mut room = Room::default();
    for e in populated(Visibility::Public) {
        room.evolve(e);
    }
    assert_eq!(room.member_count(), 4);
    room.evolve(kicked(MEMBER, OWNER));
    assert!(!room.is_member(id(MEMBER)));
    assert_eq!(room.member_count(), 3);
}

// --- change role ---

#[test]
fn the_owner_can_promote_and_demote() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(change_role(MEMBER, Role::Admin, OWNER))
        .then_expect_events(vec![MemberRoleChanged {
            room_id: id(ROOM),
            user_id: id(MEMBER),
            role: Role::Admin,
            changed_by: id(OWNER),
            at: at(),
        }
        .into()]);
    Given::with(())
        .given(populated(Visibility::Public))
        .when(change_role(ADMIN, Role::Member, OWNER))
        .then_expect_events(vec![MemberRoleChanged {
            room_id: id(ROOM),
            user_id: id(ADMIN),
            role: Role::Member,
            changed_by: id(OWNER),
            at: at(),
        }
        .into()]);
}

#[test]
fn only_the_owner_changes_roles() {
    let result = Given::with(())
        .given(populated(Visibility::Public))
        .when(change_role(MEMBER, Role::Admin, ADMIN))
        .inspect_result();
    assert!(is_forbidden(result));
}

#[test]
fn nobody_can_be_made_owner() {
    let result = Given::with(())
        .given(populated(Visibility::Public))
        .when(change_role(ADMIN, Role::Owner, OWNER))
        .inspect_result();
    assert!(is_rule(result));
}

#[test]
fn the_owner_cannot_change_their_own_role() {
    let result = Given::with(())
        .given(populated(Visibility::Public))
        .when(change_role(OWNER, Role::Member, OWNER))
        .inspect_result();
    assert!(is_rule(result));
}

#[test]
fn changing_the_role_of_a_non_member_is_not_found() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(change_role(OUTSIDER, Role::Admin, OWNER))
        .then_expect_error(DomainError::not_found(
            "the user is not a member of this room",
        ));
}

#[test]
fn setting_the_same_role_is_a_no_op() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(change_role(ADMIN, Role::Admin, OWNER))
        .then_expect_events(vec![]);
}

#[test]
fn state_is_snapshotted_as_json() {
    let mut room = Room::default();
    for e in populated(Visibility::Private) {
        room.evolve(e);
    }
    room.evolve(invited(OUTSIDER, OWNER));
    let restored: Room = serde_json::from_value(serde_json::to_value(&room).unwrap()).unwrap();
    assert_eq!(restored.role_of(id(ADMIN)), Some(Role::Admin));
    assert!(restored.is_invited(id(OUTSIDER)));
    assert_eq!(restored.name().unwrap().as_str(), "general");
    assert_eq!(restored.visibility(), Some(Visibility::Private));
}

#[test]
fn a_direct_room_id_taken_by_a_group_room_is_a_conflict() {
    let mut given = created(Visibility::Public);
    if let RoomEvent::RoomCreated(e) = &mut given[0] {
        e.room_id = pair().direct_room_id();
    }
    Given::with(())
        .given(given)
        .when(RoomCommand::CreateDirectRoom {
            room_id: pair().direct_room_id(),
            pair: pair(),
            blocked: false,
            at: at(),
        })
        .then_expect_error(DomainError::conflict("room already exists"));
}

#[test]
fn a_block_also_refuses_an_existing_direct_room() {
    let result = Given::with(())
        .given(direct_created())
        .when(RoomCommand::CreateDirectRoom {
            room_id: pair().direct_room_id(),
            pair: pair(),
            blocked: true,
            at: at(),
        })
        .inspect_result();
    assert!(is_forbidden(result));
}

#[test]
fn the_owner_may_leave() {
    // No ownership transfer exists yet; an ownerless room keeps its admins.
    Given::with(())
        .given(populated(Visibility::Public))
        .when(leave(OWNER))
        .then_expect_events(vec![MemberLeft {
            room_id: id(ROOM),
            user_id: id(OWNER),
            at: at(),
        }
        .into()]);
}

/// Attack (issue 21, item 2). Fails before: a kicked user joined the public
/// room again at once, so a kick removed nobody.
#[test]
fn a_kicked_user_rejoins_only_after_a_cooldown_or_an_invite() {
    let mut given = populated(Visibility::Public);
    given.push(kicked(MEMBER, OWNER));
    let join_at = |when| RoomCommand::Join {
        user_id: id(MEMBER),
        at: when,
    };
    let soon = at() + KICK_COOLDOWN - chrono::TimeDelta::seconds(1);
    assert!(matches!(
        Given::with(())
            .given(given.clone())
            .when(join_at(soon))
            .inspect_result(),
        Err(DomainError::Forbidden(_))
    ));
    // After the cooldown, by themselves...
    let later = at() + KICK_COOLDOWN;
    assert_eq!(
        Given::with(())
            .given(given.clone())
            .when(join_at(later))
            .inspect_result()
            .unwrap()
            .len(),
        1
    );
    // ...or at once when the room invites them back.
    let mut invited_back = given;
    invited_back.push(invited(MEMBER, OWNER));
    assert_eq!(
        Given::with(())
            .given(invited_back)
            .when(join_at(soon))
            .inspect_result()
            .unwrap()
            .len(),
        1
    );
}

fn ban(user: u8, by: u8) -> RoomCommand {
    RoomCommand::Ban {
        user_id: id(user),
        banned_by: id(by),
        at: at(),
    }
}

fn banned(user: u8, by: u8) -> RoomEvent {
    MemberBanned {
        room_id: id(ROOM),
        user_id: id(user),
        banned_by: id(by),
        at: at(),
    }
    .into()
}

#[test]
fn a_moderator_bans_a_member_who_then_cannot_join_or_be_invited() {
    Given::with(())
        .given(populated(Visibility::Public))
        .when(ban(MEMBER, ADMIN))
        .then_expect_events(vec![banned(MEMBER, ADMIN)]);
    let mut after = populated(Visibility::Public);
    after.push(banned(MEMBER, ADMIN));
    // Out of the room, and kept out, even with an invite.
    let state = {
        let mut room = Room::default();
        for e in after.clone() {
            cqrs_es::Aggregate::apply(&mut room, e);
        }
        room
    };
    assert!(!state.is_member(id(MEMBER)));
    assert!(matches!(
        Given::with(())
            .given(after.clone())
            .when(join(MEMBER))
            .inspect_result(),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        Given::with(())
            .given(after.clone())
            .when(RoomCommand::Invite {
                user_id: id(MEMBER),
                invited_by: id(OWNER),
                at: at(),
            })
            .inspect_result(),
        Err(DomainError::Rule { .. })
    ));
    // Banning again changes nothing; lifting the ban lets them back.
    Given::with(())
        .given(after.clone())
        .when(ban(MEMBER, OWNER))
        .then_expect_events(vec![]);
    let mut lifted = after;
    lifted.push(
        MemberUnbanned {
            room_id: id(ROOM),
            user_id: id(MEMBER),
            unbanned_by: id(OWNER),
            at: at(),
        }
        .into(),
    );
    assert_eq!(
        Given::with(())
            .given(lifted)
            .when(join(MEMBER))
            .inspect_result()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn bans_follow_the_rules_of_kicks() {
    let given = || Given::with(()).given(populated(Visibility::Public));
    // Plain members do not ban; nobody bans the owner; admins do not ban admins.
    assert!(matches!(
        given().when(ban(ADMIN, MEMBER)).inspect_result(),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        given().when(ban(OWNER, ADMIN)).inspect_result(),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        given().when(ban(ADMIN2, ADMIN)).inspect_result(),
        Err(DomainError::Forbidden(_))
    ));
    assert!(matches!(
        given().when(ban(ADMIN, ADMIN)).inspect_result(),
        Err(DomainError::Rule { .. })
    ));
    // The owner bans an admin, and anyone may be banned before they ever join.
    assert_eq!(
        given()
            .when(ban(ADMIN, OWNER))
            .inspect_result()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        given()
            .when(ban(OUTSIDER, ADMIN))
            .inspect_result()
            .unwrap()
            .len(),
        1
    );
}
