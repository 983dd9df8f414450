//! Messages: one aggregate per message (id chosen by the client), so sends to one room
//! never contend on a shared stream.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{event_enum, examples, Example};
use crate::error::DomainError;
use crate::values::{Emoji, MessageBody, MessageFormat, Role};

/// A message was sent to a room (version 2: with the body's `format`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageSent {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub sender_id: Uuid,
    pub body: MessageBody,
    pub reply_to: Option<Uuid>,
    pub sent_at: DateTime<Utc>,
    /// How the body is rendered; `plain` for every message sent before v2.
    pub format: MessageFormat,
}

/// `MessageSent` version 1, as stored before messages had a format: still read, and
/// upcast to today's [`MessageSent`] with `format: plain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "MessageSent")]
pub struct MessageSentV1 {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub sender_id: Uuid,
    pub body: MessageBody,
    pub reply_to: Option<Uuid>,
    pub sent_at: DateTime<Utc>,
}

impl From<MessageSentV1> for MessageSent {
    fn from(old: MessageSentV1) -> Self {
        Self {
            message_id: old.message_id,
            room_id: old.room_id,
            sender_id: old.sender_id,
            body: old.body,
            reply_to: old.reply_to,
            sent_at: old.sent_at,
            format: MessageFormat::Plain,
        }
    }
}

/// A message's body was replaced by its author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageEdited {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub editor_id: Uuid,
    pub body: MessageBody,
    pub edited_at: DateTime<Utc>,
}

/// A message was redacted (its content is to be hidden by read models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageRedacted {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub redacted_by: Uuid,
    pub redacted_at: DateTime<Utc>,
}

/// A user reacted to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReactionAdded {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub emoji: Emoji,
    pub at: DateTime<Utc>,
}

/// A user took a reaction back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReactionRemoved {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub emoji: Emoji,
    pub at: DateTime<Utc>,
}

event_enum! {
    /// Events of the `message` aggregate.
    pub enum MessageEvent for "message";
    {
        MessageSent = 2,
        MessageEdited = 1,
        MessageRedacted = 1,
        ReactionAdded = 1,
        ReactionRemoved = 1,
    }
    legacy { MessageSent = 1 => MessageSentV1 }
}

impl Example for MessageSent {
    fn example() -> Self {
        Self {
            message_id: examples::id(20),
            room_id: examples::id(10),
            sender_id: examples::id(1),
            body: MessageBody::parse("Hello, world!").unwrap(),
            reply_to: Some(examples::id(19)),
            sent_at: examples::at(),
            format: MessageFormat::Markdown,
        }
    }
}

impl Example for MessageSentV1 {
    fn example() -> Self {
        Self {
            message_id: examples::id(20),
            room_id: examples::id(10),
            sender_id: examples::id(1),
            body: MessageBody::parse("Hello, world!").unwrap(),
            reply_to: Some(examples::id(19)),
            sent_at: examples::at(),
        }
    }
}

impl Example for MessageEdited {
    fn example() -> Self {
        Self {
            message_id: examples::id(20),
            room_id: examples::id(10),
            editor_id: examples::id(1),
            body: MessageBody::parse("Hello, everyone!").unwrap(),
            edited_at: examples::at(),
        }
    }
}

impl Example for MessageRedacted {
    fn example() -> Self {
        Self {
            message_id: examples::id(20),
            room_id: examples::id(10),
            redacted_by: examples::id(1),
            redacted_at: examples::at(),
        }
    }
}

impl Example for ReactionAdded {
    fn example() -> Self {
        Self {
            message_id: examples::id(20),
            room_id: examples::id(10),
            user_id: examples::id(2),
            emoji: Emoji::parse("👍").unwrap(),
            at: examples::at(),
        }
    }
}

impl Example for ReactionRemoved {
    fn example() -> Self {
        Self {
            message_id: examples::id(20),
            room_id: examples::id(10),
            user_id: examples::id(2),
            emoji: Emoji::parse("👍").unwrap(),
            at: examples::at(),
        }
    }
}

/// Commands of the `message` aggregate. The `*_is_member` / `actor_role` / `reply_in_room`
/// facts are looked up by the caller in the room (and the replied-to message).
#[derive(Debug, Clone)]
pub enum MessageCommand {
    /// Send a new message.
    SendMessage {
        message_id: Uuid,
        room_id: Uuid,
        sender_id: Uuid,
        body: MessageBody,
        reply_to: Option<Uuid>,
        sender_is_member: bool,
        /// True when `reply_to` is `None` or names a message of this room.
        reply_in_room: bool,
        at: DateTime<Utc>,
    },
    /// Replace the body (author only).
    EditMessage {
        editor_id: Uuid,
        body: MessageBody,
        editor_is_member: bool,
        at: DateTime<Utc>,
    },
    /// Redact (the author while a member, or a room moderator).
    RedactMessage {
        actor_id: Uuid,
        /// The actor's role in the room; `None` when not a member.
        actor_role: Option<Role>,
        at: DateTime<Utc>,
    },
    /// Add a reaction (members only).
    AddReaction {
        user_id: Uuid,
        emoji: Emoji,
        user_is_member: bool,
        at: DateTime<Utc>,
    },
    /// Remove one's own reaction (members only).
    RemoveReaction {
        user_id: Uuid,
        emoji: Emoji,
        user_is_member: bool,
        at: DateTime<Utc>,
    },
}

/// The most different emoji one message can carry.
pub const MAX_DISTINCT_REACTIONS: usize = 20;
/// The most reactions one user can put on one message.
pub const MAX_REACTIONS_PER_USER: usize = 10;

/// A message (id = message id). The body lives in events and read models, not here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Message {
    message_id: Option<Uuid>,
    room_id: Option<Uuid>,
    sender_id: Option<Uuid>,
    redacted: bool,
    reactions: BTreeSet<(Uuid, Emoji)>,
}

struct Sent {
    message_id: Uuid,
    room_id: Uuid,
    sender_id: Uuid,
}

impl Message {
    /// Whether the message was sent.
    pub fn exists(&self) -> bool {
        self.message_id.is_some()
    }

    /// The room of the message, once sent.
    pub fn room_id(&self) -> Option<Uuid> {
        self.room_id
    }

    /// The author, once sent.
    pub fn sender_id(&self) -> Option<Uuid> {
        self.sender_id
    }

    /// Whether the message was redacted.
    pub fn is_redacted(&self) -> bool {
        self.redacted
    }

    /// Whether `user_id` reacted with `emoji`.
    pub fn has_reaction(&self, user_id: Uuid, emoji: &Emoji) -> bool {
        self.reactions.contains(&(user_id, emoji.clone()))
    }

    fn sent(&self) -> Result<Sent, DomainError> {
        match (self.message_id, self.room_id, self.sender_id) {
            (Some(message_id), Some(room_id), Some(sender_id)) => Ok(Sent {
                message_id,
                room_id,
                sender_id,
            }),
            _ => Err(DomainError::not_found("message not found")),
        }
    }

    /// Caps reactions so one message cannot carry an unbounded list (every page
    /// and stream frame that shows the message carries it too).
    fn check_reaction_room(&self, user_id: Uuid, emoji: &Emoji) -> Result<(), DomainError> {
        let mine = self.reactions.iter().filter(|(u, _)| *u == user_id).count();
        if mine >= MAX_REACTIONS_PER_USER {
            return Err(DomainError::rule_on(
                "emoji",
                format!("you can add at most {MAX_REACTIONS_PER_USER} reactions to a message"),
            ));
        }
        let distinct: BTreeSet<&Emoji> = self.reactions.iter().map(|(_, e)| e).collect();
        if !distinct.contains(emoji) && distinct.len() >= MAX_DISTINCT_REACTIONS {
            return Err(DomainError::rule_on(
                "emoji",
                format!("a message can carry at most {MAX_DISTINCT_REACTIONS} different reactions"),
            ));
        }
        Ok(())
    }

    fn reject_if_redacted(&self) -> Result<(), DomainError> {
        if self.redacted {
            return Err(DomainError::rule("the message was redacted"));
        }
        Ok(())
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(&self, command: MessageCommand) -> Result<Vec<MessageEvent>, DomainError> {
        match command {
            MessageCommand::SendMessage {
                message_id,
                room_id,
                sender_id,
                body,
                reply_to,
                sender_is_member,
                reply_in_room,
                at,
            } => {
                if self.exists() {
                    return Err(DomainError::conflict("message id already used"));
                }
                if !sender_is_member {
                    return Err(DomainError::forbidden(
                        "only members can send messages to this room",
                    ));
                }
                if reply_to.is_some() && !reply_in_room {
                    return Err(DomainError::rule_on(
                        "reply_to",
                        "the replied-to message is not in this room",
                    ));
                }
                Ok(vec![MessageSent {
                    message_id,
                    room_id,
                    sender_id,
                    body,
                    reply_to,
                    sent_at: at,
                    // The API has no way to ask for markdown yet: today's sends are plain.
                    format: MessageFormat::default(),
                }
                .into()])
            }
            MessageCommand::EditMessage {
                editor_id,
                body,
                editor_is_member,
                at,
            } => {
                let sent = self.sent()?;
                if editor_id != sent.sender_id {
                    return Err(DomainError::forbidden("only the author can edit a message"));
                }
                self.reject_if_redacted()?;
                if !editor_is_member {
                    return Err(DomainError::forbidden(
                        "only members can edit their messages in this room",
                    ));
                }
                Ok(vec![MessageEdited {
                    message_id: sent.message_id,
                    room_id: sent.room_id,
                    editor_id,
                    body,
                    edited_at: at,
                }
                .into()])
            }
            MessageCommand::RedactMessage {
                actor_id,
                actor_role,
                at,
            } => {
                let sent = self.sent()?;
                let is_author_member = actor_id == sent.sender_id && actor_role.is_some();
                let is_moderator = actor_role.is_some_and(|r| r.can_moderate());
                if !is_author_member && !is_moderator {
                    return Err(DomainError::forbidden(
                        "only the author or a room moderator can redact a message",
                    ));
                }
                if self.redacted {
                    return Ok(vec![]);
                }
                Ok(vec![MessageRedacted {
                    message_id: sent.message_id,
                    room_id: sent.room_id,
                    redacted_by: actor_id,
                    redacted_at: at,
                }
                .into()])
            }
            MessageCommand::AddReaction {
                user_id,
                emoji,
                user_is_member,
                at,
            } => {
                let sent = self.sent()?;
                if !user_is_member {
                    return Err(DomainError::forbidden("only members can react"));
                }
                self.reject_if_redacted()?;
                if self.has_reaction(user_id, &emoji) {
                    return Ok(vec![]);
                }
                self.check_reaction_room(user_id, &emoji)?;
                Ok(vec![ReactionAdded {
                    message_id: sent.message_id,
                    room_id: sent.room_id,
                    user_id,
                    emoji,
                    at,
                }
                .into()])
            }
            MessageCommand::RemoveReaction {
                user_id,
                emoji,
                user_is_member,
                at,
            } => {
                let sent = self.sent()?;
                if !user_is_member {
                    return Err(DomainError::forbidden("only members can react"));
                }
                self.reject_if_redacted()?;
                if !self.has_reaction(user_id, &emoji) {
                    return Ok(vec![]);
                }
                Ok(vec![ReactionRemoved {
                    message_id: sent.message_id,
                    room_id: sent.room_id,
                    user_id,
                    emoji,
                    at,
                }
                .into()])
            }
        }
    }

    fn evolve(&mut self, event: MessageEvent) {
        match event {
            MessageEvent::MessageSent(e) => {
                self.message_id = Some(e.message_id);
                self.room_id = Some(e.room_id);
                self.sender_id = Some(e.sender_id);
            }
            MessageEvent::MessageEdited(_) => {}
            MessageEvent::MessageRedacted(_) => {
                self.redacted = true;
                // Reactions of a redacted message are gone with its content.
                self.reactions.clear();
            }
            MessageEvent::ReactionAdded(e) => {
                self.reactions.insert((e.user_id, e.emoji));
            }
            MessageEvent::ReactionRemoved(e) => {
                self.reactions.remove(&(e.user_id, e.emoji));
            }
        }
    }
}

impl_aggregate!(Message, "message", MessageCommand, MessageEvent);

#[cfg(test)]
mod tests;
