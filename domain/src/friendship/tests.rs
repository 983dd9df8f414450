use super::*;
use crate::codec::examples::{at, id};
use cqrs_es::test::TestFramework;

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

type Given = TestFramework<Friendship>;

fn request_id() -> Uuid {
    friendship_id(id(A), id(B))
}

fn send(from: u8, to: u8) -> FriendshipCommand {
    FriendshipCommand::SendFriendRequest {
        from: id(from),
        to: id(to),
        at: at(),
    }
}

fn sent(from: u8, to: u8) -> FriendshipEvent {
    FriendRequestSent {
        request_id: request_id(),
        from_user_id: id(from),
        to_user_id: id(to),
        at: at(),
    }
    .into()
}

fn accepted(from: u8, to: u8) -> FriendshipEvent {
    FriendRequestAccepted {
        request_id: request_id(),
        from_user_id: id(from),
        to_user_id: id(to),
        at: at(),
    }
    .into()
}

fn blocked(blocker: u8, blocked: u8) -> FriendshipEvent {
    UserBlocked {
        blocker_id: id(blocker),
        blocked_id: id(blocked),
        at: at(),
    }
    .into()
}

fn friends() -> Vec<FriendshipEvent> {
    vec![sent(A, B), accepted(A, B)]
}

fn accept(actor: u8) -> FriendshipCommand {
    FriendshipCommand::AcceptFriendRequest {
        actor: id(actor),
        at: at(),
    }
}

fn decline(actor: u8) -> FriendshipCommand {
    FriendshipCommand::DeclineFriendRequest {
        actor: id(actor),
        at: at(),
    }
}

fn cancel(actor: u8) -> FriendshipCommand {
    FriendshipCommand::CancelFriendRequest {
        actor: id(actor),
        at: at(),
    }
}

fn block(blocker: u8, blocked: u8) -> FriendshipCommand {
    FriendshipCommand::BlockUser {
        blocker: id(blocker),
        blocked: id(blocked),
        at: at(),
    }
}

fn unblock(blocker: u8, blocked: u8) -> FriendshipCommand {
    FriendshipCommand::UnblockUser {
        blocker: id(blocker),
        blocked: id(blocked),
        at: at(),
    }
}

fn state(events: Vec<FriendshipEvent>) -> Friendship {
    let mut f = Friendship::default();
    for e in events {
        f.evolve(e);
    }
    f
}

fn forbidden(r: Result<Vec<FriendshipEvent>, DomainError>) -> bool {
    matches!(r, Err(DomainError::Forbidden(_)))
}

// --- requests ---

#[test]
fn a_request_is_sent_with_the_friendship_id_as_request_id() {
    Given::with(())
        .given_no_previous_events()
        .when(send(A, B))
        .then_expect_events(vec![sent(A, B)]);
}

#[test]
fn nobody_befriends_themselves() {
    Given::with(())
        .given_no_previous_events()
        .when(send(A, A))
        .then_expect_error(DomainError::rule_on(
            "to_user_id",
            "cannot befriend yourself",
        ));
}

#[test]
fn friends_cannot_request_again() {
    Given::with(())
        .given(friends())
        .when(send(B, A))
        .then_expect_error(DomainError::rule_on(
            "to_user_id",
            "you are already friends",
        ));
}

#[test]
fn a_block_either_way_prevents_requests() {
    for (blocker, blocked_user) in [(A, B), (B, A)] {
        assert!(forbidden(
            Given::with(())
                .given(vec![blocked(blocker, blocked_user)])
                .when(send(A, B))
                .inspect_result()
        ));
    }
}

#[test]
fn sending_the_same_request_again_is_a_no_op() {
    Given::with(())
        .given(vec![sent(A, B)])
        .when(send(A, B))
        .then_expect_events(vec![]);
}

#[test]
fn requests_both_ways_make_friends() {
    Given::with(())
        .given(vec![sent(A, B)])
        .when(send(B, A))
        .then_expect_events(vec![accepted(A, B)]);
}

#[test]
fn the_recipient_accepts() {
    Given::with(())
        .given(vec![sent(A, B)])
        .when(accept(B))
        .then_expect_events(vec![accepted(A, B)]);
    assert!(state(friends()).are_friends());
    assert_eq!(state(friends()).pending(), None);
}

#[test]
fn only_the_recipient_accepts_or_declines() {
    for actor in [A, C] {
        let given = || Given::with(()).given(vec![sent(A, B)]);
        assert!(forbidden(given().when(accept(actor)).inspect_result()));
        assert!(forbidden(given().when(decline(actor)).inspect_result()));
    }
}

#[test]
fn the_recipient_declines() {
    Given::with(())
        .given(vec![sent(A, B)])
        .when(decline(B))
        .then_expect_events(vec![FriendRequestDeclined {
            request_id: request_id(),
            from_user_id: id(A),
            to_user_id: id(B),
            at: at(),
        }
        .into()]);
}

#[test]
fn the_sender_cancels() {
    Given::with(())
        .given(vec![sent(A, B)])
        .when(cancel(A))
        .then_expect_events(vec![FriendRequestCancelled {
            request_id: request_id(),
            from_user_id: id(A),
            to_user_id: id(B),
            at: at(),
        }
        .into()]);
}

#[test]
fn only_the_sender_cancels() {
    assert!(forbidden(
        Given::with(())
            .given(vec![sent(A, B)])
            .when(cancel(B))
            .inspect_result()
    ));
}

#[test]
fn answering_without_a_pending_request_is_not_found() {
    for command in [accept(B), decline(B), cancel(A)] {
        Given::with(())
            .given(friends())
            .when(command)
            .then_expect_error(DomainError::not_found("no pending friend request"));
    }
}

/// Attack (issue 21, item 2). Fails before: a declined request could be sent
/// again at once, so a "no" could be met with the same request, over and over.
#[test]
fn a_declined_request_can_be_sent_again_only_after_a_cooldown() {
    let declined = || -> FriendshipEvent {
        FriendRequestDeclined {
            request_id: request_id(),
            from_user_id: id(A),
            to_user_id: id(B),
            at: at(),
        }
        .into()
    };
    let send_at = |from: u8, to: u8, when| FriendshipCommand::SendFriendRequest {
        from: id(from),
        to: id(to),
        at: when,
    };
    let soon = at() + DECLINED_REQUEST_COOLDOWN - chrono::TimeDelta::seconds(1);
    assert!(matches!(
        Given::with(())
            .given(vec![sent(A, B), declined()])
            .when(send_at(A, B, soon))
            .inspect_result(),
        Err(DomainError::Rule { .. })
    ));
    // The one who declined may ask at once...
    let asked = Given::with(())
        .given(vec![sent(A, B), declined()])
        .when(send_at(B, A, soon))
        .inspect_result()
        .unwrap();
    assert_eq!(asked.len(), 1);
    // ...and the declined sender once the cooldown is over.
    let later = at() + DECLINED_REQUEST_COOLDOWN;
    let asked = Given::with(())
        .given(vec![sent(A, B), declined()])
        .when(send_at(A, B, later))
        .inspect_result()
        .unwrap();
    assert_eq!(asked.len(), 1);
}

// --- remove ---

#[test]
fn either_friend_removes_the_friendship() {
    Given::with(())
        .given(friends())
        .when(FriendshipCommand::RemoveFriend {
            actor: id(B),
            friend: id(A),
            at: at(),
        })
        .then_expect_events(vec![FriendRemoved {
            user_id: id(B),
            friend_id: id(A),
            at: at(),
        }
        .into()]);
}

#[test]
fn removing_a_non_friend_is_not_found() {
    Given::with(())
        .given(vec![sent(A, B)])
        .when(FriendshipCommand::RemoveFriend {
            actor: id(A),
            friend: id(B),
            at: at(),
        })
        .then_expect_error(DomainError::not_found("you are not friends"));
}

// --- blocks ---

#[test]
fn a_user_blocks_another() {
    Given::with(())
        .given_no_previous_events()
        .when(block(A, B))
        .then_expect_events(vec![blocked(A, B)]);
}

#[test]
fn nobody_blocks_themselves() {
    Given::with(())
        .given_no_previous_events()
        .when(block(A, A))
        .then_expect_error(DomainError::rule_on("user_id", "cannot block yourself"));
}

#[test]
fn blocking_twice_is_a_no_op() {
    Given::with(())
        .given(vec![blocked(A, B)])
        .when(block(A, B))
        .then_expect_events(vec![]);
}

#[test]
fn blocks_are_directional() {
    Given::with(())
        .given(vec![blocked(A, B)])
        .when(block(B, A))
        .then_expect_events(vec![blocked(B, A)]);
    let s = state(vec![blocked(A, B)]);
    assert!(s.blocked_by(id(A)) && !s.blocked_by(id(B)) && s.is_blocked_either_way());
    // B cannot lift A's block.
    Given::with(())
        .given(vec![blocked(A, B)])
        .when(unblock(B, A))
        .then_expect_error(DomainError::not_found("you have not blocked this user"));
}

#[test]
fn a_block_ends_friendship_and_pending_request() {
    let s = state(vec![sent(A, B), accepted(A, B), blocked(B, A)]);
    assert!(!s.are_friends());
    let s = state(vec![sent(A, B), blocked(B, A)]);
    assert_eq!(s.pending(), None);
}

#[test]
fn the_blocker_unblocks() {
    Given::with(())
        .given(vec![blocked(A, B)])
        .when(unblock(A, B))
        .then_expect_events(vec![UserUnblocked {
            blocker_id: id(A),
            blocked_id: id(B),
            at: at(),
        }
        .into()]);
    let s = state(vec![
        blocked(A, B),
        UserUnblocked {
            blocker_id: id(A),
            blocked_id: id(B),
            at: at(),
        }
        .into(),
    ]);
    assert!(!s.is_blocked_either_way());
}

#[test]
fn unblocking_without_a_block_is_not_found() {
    Given::with(())
        .given_no_previous_events()
        .when(unblock(A, B))
        .then_expect_error(DomainError::not_found("you have not blocked this user"));
}

#[test]
fn state_is_snapshotted_as_json() {
    let s = state(vec![sent(A, B), blocked(B, A)]);
    let restored: Friendship = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert!(restored.blocked_by(id(B)));
}

#[test]
fn nobody_removes_themselves_as_a_friend() {
    Given::with(())
        .given(friends())
        .when(FriendshipCommand::RemoveFriend {
            actor: id(A),
            friend: id(A),
            at: at(),
        })
        .then_expect_error(DomainError::not_found("you are not friends"));
}
