use super::*;
use crate::codec::examples::{at, id};
use cqrs_es::test::TestFramework;

const MSG: u8 = 20;
const ROOM: u8 = 10;
const AUTHOR: u8 = 1;
const OTHER: u8 = 2;

type Given = TestFramework<Message>;

fn body(text: &str) -> MessageBody {
    MessageBody::parse(text).unwrap()
}

fn thumbs() -> Emoji {
    Emoji::parse("👍").unwrap()
}

fn send(is_member: bool, reply_to: Option<Uuid>, reply_in_room: bool) -> MessageCommand {
    MessageCommand::SendMessage {
        message_id: id(MSG),
        room_id: id(ROOM),
        sender_id: id(AUTHOR),
        body: body("hi"),
        reply_to,
        sender_is_member: is_member,
        reply_in_room,
        at: at(),
    }
}

fn sent() -> MessageEvent {
    MessageSent {
        message_id: id(MSG),
        room_id: id(ROOM),
        sender_id: id(AUTHOR),
        body: body("hi"),
        reply_to: None,
        sent_at: at(),
        format: MessageFormat::Plain,
    }
    .into()
}

fn redacted(by: u8) -> MessageEvent {
    MessageRedacted {
        message_id: id(MSG),
        room_id: id(ROOM),
        redacted_by: id(by),
        redacted_at: at(),
    }
    .into()
}

fn edit(editor: u8, is_member: bool) -> MessageCommand {
    MessageCommand::EditMessage {
        editor_id: id(editor),
        body: body("edited"),
        editor_is_member: is_member,
        at: at(),
    }
}

fn redact(actor: u8, role: Option<Role>) -> MessageCommand {
    MessageCommand::RedactMessage {
        actor_id: id(actor),
        actor_role: role,
        at: at(),
    }
}

fn add(user: u8, is_member: bool) -> MessageCommand {
    MessageCommand::AddReaction {
        user_id: id(user),
        emoji: thumbs(),
        user_is_member: is_member,
        at: at(),
    }
}

fn remove(user: u8, is_member: bool) -> MessageCommand {
    MessageCommand::RemoveReaction {
        user_id: id(user),
        emoji: thumbs(),
        user_is_member: is_member,
        at: at(),
    }
}

fn reaction_added(user: u8) -> MessageEvent {
    ReactionAdded {
        message_id: id(MSG),
        room_id: id(ROOM),
        user_id: id(user),
        emoji: thumbs(),
        at: at(),
    }
    .into()
}

fn forbidden(r: Result<Vec<MessageEvent>, DomainError>) -> bool {
    matches!(r, Err(DomainError::Forbidden(_)))
}

fn rule(r: Result<Vec<MessageEvent>, DomainError>) -> bool {
    matches!(r, Err(DomainError::Rule { .. }))
}

#[test]
fn a_member_sends_a_message() {
    Given::with(())
        .given_no_previous_events()
        .when(send(true, None, true))
        .then_expect_events(vec![sent()]);
}

#[test]
fn a_member_replies_in_the_same_room() {
    let mut expected = MessageSent::example();
    expected.body = body("hi");
    expected.reply_to = Some(id(19));
    // Sends through the API are plain text (the example shows markdown).
    expected.format = MessageFormat::Plain;
    Given::with(())
        .given_no_previous_events()
        .when(send(true, Some(id(19)), true))
        .then_expect_events(vec![expected.into()]);
}

#[test]
fn a_non_member_cannot_send() {
    assert!(forbidden(
        Given::with(())
            .given_no_previous_events()
            .when(send(false, None, true))
            .inspect_result()
    ));
}

#[test]
fn a_reply_must_be_in_the_same_room() {
    Given::with(())
        .given_no_previous_events()
        .when(send(true, Some(id(99)), false))
        .then_expect_error(DomainError::rule_on(
            "reply_to",
            "the replied-to message is not in this room",
        ));
}

#[test]
fn a_message_id_cannot_be_reused() {
    Given::with(())
        .given(vec![sent()])
        .when(send(true, None, true))
        .then_expect_error(DomainError::conflict("message id already used"));
}

#[test]
fn commands_on_a_missing_message_are_not_found() {
    for command in [
        edit(AUTHOR, true),
        redact(AUTHOR, Some(Role::Owner)),
        add(AUTHOR, true),
        remove(AUTHOR, true),
    ] {
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(DomainError::not_found("message not found"));
    }
}

#[test]
fn the_author_edits() {
    Given::with(())
        .given(vec![sent()])
        .when(edit(AUTHOR, true))
        .then_expect_events(vec![MessageEdited {
            message_id: id(MSG),
            room_id: id(ROOM),
            editor_id: id(AUTHOR),
            body: body("edited"),
            edited_at: at(),
        }
        .into()]);
}

#[test]
fn only_the_author_edits() {
    assert!(forbidden(
        Given::with(())
            .given(vec![sent()])
            .when(edit(OTHER, true))
            .inspect_result()
    ));
}

#[test]
fn an_author_who_left_cannot_edit() {
    assert!(forbidden(
        Given::with(())
            .given(vec![sent()])
            .when(edit(AUTHOR, false))
            .inspect_result()
    ));
}

#[test]
fn a_redacted_message_cannot_be_edited() {
    assert!(rule(
        Given::with(())
            .given(vec![sent(), redacted(AUTHOR)])
            .when(edit(AUTHOR, true))
            .inspect_result()
    ));
}

#[test]
fn the_author_redacts_while_a_member() {
    Given::with(())
        .given(vec![sent()])
        .when(redact(AUTHOR, Some(Role::Member)))
        .then_expect_events(vec![redacted(AUTHOR)]);
}

#[test]
fn an_author_who_left_cannot_redact() {
    assert!(forbidden(
        Given::with(())
            .given(vec![sent()])
            .when(redact(AUTHOR, None))
            .inspect_result()
    ));
}

#[test]
fn a_moderator_redacts_others_messages() {
    for role in [Role::Owner, Role::Admin] {
        Given::with(())
            .given(vec![sent()])
            .when(redact(OTHER, Some(role)))
            .then_expect_events(vec![redacted(OTHER)]);
    }
}

#[test]
fn a_plain_member_cannot_redact_others_messages() {
    assert!(forbidden(
        Given::with(())
            .given(vec![sent()])
            .when(redact(OTHER, Some(Role::Member)))
            .inspect_result()
    ));
}

#[test]
fn redacting_twice_is_a_no_op() {
    Given::with(())
        .given(vec![sent(), redacted(AUTHOR)])
        .when(redact(AUTHOR, Some(Role::Member)))
        .then_expect_events(vec![]);
}

#[test]
fn a_member_reacts() {
    Given::with(())
        .given(vec![sent()])
        .when(add(OTHER, true))
        .then_expect_events(vec![reaction_added(OTHER)]);
}

#[test]
fn a_non_member_cannot_react_or_unreact() {
    let given = || Given::with(()).given(vec![sent(), reaction_added(OTHER)]);
    assert!(forbidden(given().when(add(OTHER, false)).inspect_result()));
    assert!(forbidden(
        given().when(remove(OTHER, false)).inspect_result()
    ));
}

#[test]
fn a_redacted_message_takes_no_reactions() {
    let given = || Given::with(()).given(vec![sent(), reaction_added(OTHER), redacted(AUTHOR)]);
    assert!(rule(given().when(add(OTHER, true)).inspect_result()));
    assert!(rule(given().when(remove(OTHER, true)).inspect_result()));
}

#[test]
fn the_same_reaction_twice_is_a_no_op() {
    Given::with(())
        .given(vec![sent(), reaction_added(OTHER)])
        .when(add(OTHER, true))
        .then_expect_events(vec![]);
}

#[test]
fn a_reaction_is_removed() {
    Given::with(())
        .given(vec![sent(), reaction_added(OTHER)])
        .when(remove(OTHER, true))
        .then_expect_events(vec![ReactionRemoved {
            message_id: id(MSG),
            room_id: id(ROOM),
            user_id: id(OTHER),
            emoji: thumbs(),
            at: at(),
        }
        .into()]);
}

#[test]
fn removing_an_absent_reaction_is_a_no_op() {
    // Another user's reaction with the same emoji does not count.
    Given::with(())
        .given(vec![sent(), reaction_added(AUTHOR)])
        .when(remove(OTHER, true))
        .then_expect_events(vec![]);
}

#[test]
fn state_exposes_the_message() {
    let mut message = Message::default();
    assert!(!message.exists());
    message.evolve(sent());
    message.evolve(reaction_added(OTHER));
    assert!(message.exists());
    assert_eq!(message.room_id(), Some(id(ROOM)));
    assert_eq!(message.sender_id(), Some(id(AUTHOR)));
    let restored: Message =
        serde_json::from_value(serde_json::to_value(&message).unwrap()).unwrap();
    assert!(restored.has_reaction(id(OTHER), &thumbs()));
    message.evolve(redacted(AUTHOR));
    assert!(message.is_redacted());
}

fn reaction_of(user: u8, emoji: &str) -> MessageEvent {
    ReactionAdded {
        message_id: id(MSG),
        room_id: id(ROOM),
        user_id: id(user),
        emoji: Emoji::parse(emoji).unwrap(),
        at: at(),
    }
    .into()
}

fn add_emoji(user: u8, emoji: &str) -> MessageCommand {
    MessageCommand::AddReaction {
        user_id: id(user),
        emoji: Emoji::parse(emoji).unwrap(),
        user_is_member: true,
        at: at(),
    }
}

/// Twenty distinct emoji: 🐀 (U+1F400) onwards.
fn animals(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| char::from_u32(0x1F400 + i as u32).unwrap().to_string())
        .collect()
}

#[test]
fn a_user_has_at_most_ten_reactions_on_a_message() {
    let mut given = vec![sent()];
    let emoji = animals(MAX_REACTIONS_PER_USER + 1);
    for e in &emoji[..MAX_REACTIONS_PER_USER] {
        given.push(reaction_of(OTHER, e));
    }
    let last = &emoji[MAX_REACTIONS_PER_USER];
    assert!(rule(
        Given::with(())
            .given(given.clone())
            .when(add_emoji(OTHER, last))
            .inspect_result()
    ));
    // Someone else still may.
    assert_eq!(
        Given::with(())
            .given(given)
            .when(add_emoji(AUTHOR, last))
            .inspect_result()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_message_carries_at_most_twenty_different_reactions() {
    let mut given = vec![sent()];
    let emoji = animals(MAX_DISTINCT_REACTIONS + 1);
    for (i, e) in emoji[..MAX_DISTINCT_REACTIONS].iter().enumerate() {
        given.push(reaction_of(30 + i as u8, e));
    }
    let new = &emoji[MAX_DISTINCT_REACTIONS];
    assert!(rule(
        Given::with(())
            .given(given.clone())
            .when(add_emoji(OTHER, new))
            .inspect_result()
    ));
    // Joining an emoji already there is fine.
    assert_eq!(
        Given::with(())
            .given(given)
            .when(add_emoji(OTHER, &emoji[0]))
            .inspect_result()
            .unwrap()
            .len(),
        1
    );
}
