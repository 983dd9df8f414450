//! Presence: a user's status, and heartbeats that tell read models "still here".

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{event_enum, examples, Example};
use crate::error::DomainError;
use crate::values::{PresenceStatus, StatusMessage};

/// The least time between two heartbeat events of one user, so that clients calling
/// `PUT /v1/presence` often do not flood the log.
pub const HEARTBEAT_INTERVAL_SECS: i64 = 30;

/// A user's status or status message changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PresenceChanged {
    pub user_id: Uuid,
    pub status: PresenceStatus,
    pub status_message: Option<StatusMessage>,
    pub at: DateTime<Utc>,
}

/// A user is still around, with an unchanged status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PresenceHeartbeat {
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

impl Example for PresenceChanged {
    fn example() -> Self {
        Self {
            user_id: examples::id(1),
            status: PresenceStatus::Away,
            status_message: Some(StatusMessage::parse("Lunch").unwrap()),
            at: examples::at(),
        }
    }
}

impl Example for PresenceHeartbeat {
    fn example() -> Self {
        Self {
            user_id: examples::id(1),
            at: examples::at(),
        }
    }
}

event_enum! {
    /// Events of the `presence` aggregate.
    pub enum PresenceEvent for "presence";
    { PresenceChanged = 1, PresenceHeartbeat = 1 }
}

/// Commands of the `presence` aggregate.
#[derive(Debug, Clone)]
pub enum PresenceCommand {
    /// Set the status (doubles as a heartbeat).
    SetPresence {
        user_id: Uuid,
        status: PresenceStatus,
        status_message: Option<StatusMessage>,
        at: DateTime<Utc>,
    },
}

/// A user's presence (id = user id).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Presence {
    status: Option<PresenceStatus>,
    status_message: Option<StatusMessage>,
    last_event_at: Option<DateTime<Utc>>,
}

impl Presence {
    /// The current status, if ever set.
    pub fn status(&self) -> Option<PresenceStatus> {
        self.status
    }

    /// The current status message.
    pub fn status_message(&self) -> Option<&StatusMessage> {
        self.status_message.as_ref()
    }

    /// When the last presence event happened (the user was last seen).
    pub fn last_seen(&self) -> Option<DateTime<Utc>> {
        self.last_event_at
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(&self, command: PresenceCommand) -> Result<Vec<PresenceEvent>, DomainError> {
        match command {
            PresenceCommand::SetPresence {
                user_id,
                status,
                status_message,
                at,
            } => {
                if self.status != Some(status) || self.status_message != status_message {
                    return Ok(vec![PresenceChanged {
                        user_id,
                        status,
                        status_message,
                        at,
                    }
                    .into()]);
                }
                let due = self
                    .last_event_at
                    .is_none_or(|last| (at - last).num_seconds() >= HEARTBEAT_INTERVAL_SECS);
                if !due {
                    return Ok(vec![]);
                }
                Ok(vec![PresenceHeartbeat { user_id, at }.into()])
            }
        }
    }

    fn evolve(&mut self, event: PresenceEvent) {
        match event {
            PresenceEvent::PresenceChanged(e) => {
                self.status = Some(e.status);
                self.status_message = e.status_message;
                self.last_event_at = Some(e.at);
            }
            PresenceEvent::PresenceHeartbeat(e) => self.last_event_at = Some(e.at),
        }
    }
}

impl_aggregate!(Presence, "presence", PresenceCommand, PresenceEvent);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::examples::{at, id};
    use chrono::Duration;
    use cqrs_es::test::TestFramework;

    fn set(status: PresenceStatus, message: Option<&str>, secs: i64) -> PresenceCommand {
        PresenceCommand::SetPresence {
            user_id: id(1),
            status,
            status_message: message.map(|m| StatusMessage::parse(m).unwrap()),
            at: at() + Duration::seconds(secs),
        }
    }

    fn changed(status: PresenceStatus, message: Option<&str>, secs: i64) -> PresenceEvent {
        PresenceChanged {
            user_id: id(1),
            status,
            status_message: message.map(|m| StatusMessage::parse(m).unwrap()),
            at: at() + Duration::seconds(secs),
        }
        .into()
    }

    fn heartbeat(secs: i64) -> PresenceEvent {
        PresenceHeartbeat {
            user_id: id(1),
            at: at() + Duration::seconds(secs),
        }
        .into()
    }

    #[test]
    fn the_first_status_is_a_change() {
        TestFramework::<Presence>::with(())
            .given_no_previous_events()
            .when(set(PresenceStatus::Online, None, 0))
            .then_expect_events(vec![changed(PresenceStatus::Online, None, 0)]);
    }

    #[test]
    fn a_new_status_is_a_change_at_once() {
        TestFramework::<Presence>::with(())
            .given(vec![changed(PresenceStatus::Online, None, 0)])
            .when(set(PresenceStatus::Away, None, 1))
            .then_expect_events(vec![changed(PresenceStatus::Away, None, 1)]);
    }

    #[test]
    fn a_new_status_message_is_a_change_at_once() {
        TestFramework::<Presence>::with(())
            .given(vec![changed(PresenceStatus::Online, None, 0)])
            .when(set(PresenceStatus::Online, Some("busy"), 1))
            .then_expect_events(vec![changed(PresenceStatus::Online, Some("busy"), 1)]);
    }

    #[test]
    fn the_same_status_within_the_interval_is_a_no_op() {
        TestFramework::<Presence>::with(())
            .given(vec![changed(PresenceStatus::Online, None, 0)])
            .when(set(
                PresenceStatus::Online,
                None,
                HEARTBEAT_INTERVAL_SECS - 1,
            ))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_same_status_after_the_interval_is_a_heartbeat() {
        TestFramework::<Presence>::with(())
            .given(vec![changed(PresenceStatus::Online, None, 0)])
            .when(set(PresenceStatus::Online, None, HEARTBEAT_INTERVAL_SECS))
            .then_expect_events(vec![heartbeat(HEARTBEAT_INTERVAL_SECS)]);
    }

    #[test]
    fn the_interval_counts_from_the_last_heartbeat() {
        TestFramework::<Presence>::with(())
            .given(vec![
                changed(PresenceStatus::Online, None, 0),
                heartbeat(40),
            ])
            .when(set(PresenceStatus::Online, None, 50))
            .then_expect_events(vec![]);
    }
}
