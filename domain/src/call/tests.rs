use super::*;
use crate::codec::examples::{at, id};
use cqrs_es::test::TestFramework;

fn started() -> CallEvent {
    CallStarted {
        call_id: id(40),
        room_id: id(10),
        started_by: id(1),
        kind: CallKind::Audio,
        at: at(),
    }
    .into()
}

fn joined(user: u8) -> CallEvent {
    CallJoined {
        call_id: id(40),
        room_id: id(10),
        user_id: id(user),
        at: at(),
    }
    .into()
}

fn declined(user: u8) -> CallEvent {
    CallDeclined {
        call_id: id(40),
        room_id: id(10),
        user_id: id(user),
        at: at(),
    }
    .into()
}

fn left(user: u8) -> CallEvent {
    CallLeft {
        call_id: id(40),
        room_id: id(10),
        user_id: id(user),
        at: at(),
    }
    .into()
}

fn ended(reason: CallEnd) -> CallEvent {
    CallEnded {
        call_id: id(40),
        room_id: id(10),
        reason,
        at: at(),
    }
    .into()
}

fn start(member: bool) -> CallCommand {
    CallCommand::Start {
        call_id: id(40),
        room_id: id(10),
        user_id: id(1),
        kind: CallKind::Audio,
        user_is_member: member,
        at: at(),
    }
}

fn accept(user: u8) -> CallCommand {
    CallCommand::Accept {
        user_id: id(user),
        user_is_member: true,
        at: at(),
    }
}

fn decline(user: u8, direct: bool) -> CallCommand {
    CallCommand::Decline {
        user_id: id(user),
        user_is_member: true,
        room_is_direct: direct,
        at: at(),
    }
}

fn leave(user: u8) -> CallCommand {
    CallCommand::Leave {
        user_id: id(user),
        at: at(),
    }
}

#[test]
fn a_member_starts_a_call_and_a_stranger_cannot() {
    TestFramework::<Call>::with(())
        .given_no_previous_events()
        .when(start(true))
        .then_expect_events(vec![started()]);
    TestFramework::<Call>::with(())
        .given_no_previous_events()
        .when(start(false))
        .then_expect_error(DomainError::forbidden("you are not a member of this room"));
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(start(true))
        .then_expect_error(DomainError::conflict("this call id is taken"));
}

#[test]
fn answering_joins_once_and_only_members_may() {
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(accept(2))
        .then_expect_events(vec![joined(2)]);
    TestFramework::<Call>::with(())
        .given(vec![started(), joined(2)])
        .when(accept(2))
        .then_expect_events(vec![]);
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(CallCommand::Accept {
            user_id: id(3),
            user_is_member: false,
            at: at(),
        })
        .then_expect_error(DomainError::forbidden("you are not a member of this room"));
    TestFramework::<Call>::with(())
        .given(vec![started(), ended(CallEnd::Missed)])
        .when(accept(2))
        .then_expect_error(DomainError::conflict("the call is over"));
}

#[test]
fn a_direct_callee_declining_ends_the_call_a_group_member_does_not() {
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(decline(2, true))
        .then_expect_events(vec![declined(2), ended(CallEnd::Declined)]);
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(decline(2, false))
        .then_expect_events(vec![declined(2)]);
    TestFramework::<Call>::with(())
        .given(vec![started(), joined(2)])
        .when(decline(2, false))
        .then_expect_error(DomainError::conflict(
            "you are in this call: leave it instead",
        ));
}

#[test]
fn the_last_to_leave_ends_it_and_a_caller_hanging_up_while_it_rings_cancels_it() {
    TestFramework::<Call>::with(())
        .given(vec![started(), joined(2)])
        .when(leave(1))
        .then_expect_events(vec![left(1)]);
    TestFramework::<Call>::with(())
        .given(vec![started(), joined(2), left(1)])
        .when(leave(2))
        .then_expect_events(vec![left(2), ended(CallEnd::Completed)]);
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(leave(1))
        .then_expect_events(vec![left(1), ended(CallEnd::Cancelled)]);
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(leave(2))
        .then_expect_error(DomainError::conflict("you are not in this call"));
}

#[test]
fn an_unanswered_call_expires_as_missed_and_an_answered_one_is_left_be() {
    TestFramework::<Call>::with(())
        .given(vec![started()])
        .when(CallCommand::Expire { at: at() })
        .then_expect_events(vec![ended(CallEnd::Missed)]);
    TestFramework::<Call>::with(())
        .given(vec![started(), joined(2)])
        .when(CallCommand::Expire { at: at() })
        .then_expect_events(vec![]);
    TestFramework::<Call>::with(())
        .given(vec![started(), ended(CallEnd::Cancelled)])
        .when(CallCommand::Expire { at: at() })
        .then_expect_events(vec![]);
}

#[test]
fn commands_on_a_call_never_started_are_not_found() {
    TestFramework::<Call>::with(())
        .given_no_previous_events()
        .when(accept(2))
        .then_expect_error(DomainError::not_found("no such call"));
}
