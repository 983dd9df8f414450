//! A call in a room (audio or video signaling, not media; id = the call id the
//! server hands out). It rings from the start; it is active once someone other
//! than the caller joins; it ends when everyone left, when a direct room's
//! callee declines, when the caller hangs up while it rings, or as missed when
//! nobody answered in time.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{event_enum, examples, Example};
use crate::error::DomainError;

/// Audio only, or with video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Audio,
    Video,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// Everyone who was in it left.
    Completed,
    /// Nobody answered in time.
    Missed,
    /// The callee of a direct room declined.
    Declined,
    /// The caller hung up before anyone answered.
    Cancelled,
}

/// A member started a call in a room; it rings for the room's other members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallStarted {
    pub call_id: Uuid,
    pub room_id: Uuid,
    pub started_by: Uuid,
    pub kind: CallKind,
    pub at: DateTime<Utc>,
}

/// A member joined (answered) the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallJoined {
    pub call_id: Uuid,
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A member declined the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallDeclined {
    pub call_id: Uuid,
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A participant left the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallLeft {
    pub call_id: Uuid,
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// The call is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallEnded {
    pub call_id: Uuid,
    pub room_id: Uuid,
    pub reason: CallEnd,
    pub at: DateTime<Utc>,
}

impl Example for CallStarted {
    fn example() -> Self {
        Self {
            call_id: examples::id(40),
            room_id: examples::id(10),
            started_by: examples::id(1),
            kind: CallKind::Video,
            at: examples::at(),
        }
    }
}

/// The three events of one member's step share a shape, and so an example.
macro_rules! member_step_example {
    ($($event:ident by $user:literal),*) => {$(
        impl Example for $event {
            fn example() -> Self {
                Self {
                    call_id: examples::id(40),
                    room_id: examples::id(10),
                    user_id: examples::id($user),
                    at: examples::at(),
                }
            }
        }
    )*};
}

member_step_example!(CallJoined by 2, CallDeclined by 2, CallLeft by 1);

impl Example for CallEnded {
    fn example() -> Self {
        Self {
            call_id: examples::id(40),
            room_id: examples::id(10),
            reason: CallEnd::Completed,
            at: examples::at(),
        }
    }
}

event_enum! {
    /// Events of the `call` aggregate.
    pub enum CallEvent for "call";
    { CallStarted = 1, CallJoined = 1, CallDeclined = 1, CallLeft = 1, CallEnded = 1 }
}

/// Commands of the `call` aggregate. Membership of the room, and whether it is
/// a direct room, are looked up by the caller.
#[derive(Debug, Clone)]
pub enum CallCommand {
    Start {
        call_id: Uuid,
        room_id: Uuid,
        user_id: Uuid,
        kind: CallKind,
        user_is_member: bool,
        at: DateTime<Utc>,
    },
    Accept {
        user_id: Uuid,
        user_is_member: bool,
        at: DateTime<Utc>,
    },
    Decline {
        user_id: Uuid,
        user_is_member: bool,
        room_is_direct: bool,
        at: DateTime<Utc>,
    },
    Leave {
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    /// Nobody answered in time (the command API's sweeper sends it when the
    /// ring timeout has passed); a call answered or over meanwhile is left be.
    Expire {
        at: DateTime<Utc>,
    },
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallStatus {
    Ringing,
    Active,
    Ended,
}

/// A call: who started it, who is in it now, who declined.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Call {
    call_id: Option<Uuid>,
    room_id: Option<Uuid>,
    started_by: Option<Uuid>,
    status: Option<CallStatus>,
    /// In the call now.
    participants: BTreeSet<Uuid>,
    declined: BTreeSet<Uuid>,
}

impl Call {
    /// Whether the call was started.
    pub fn exists(&self) -> bool {
        self.status.is_some()
    }

    /// The room of the call, once started.
    pub fn room_id(&self) -> Option<Uuid> {
        self.room_id
    }

    /// Ringing, active or ended; `None` before it starts.
    pub fn status(&self) -> Option<CallStatus> {
        self.status
    }

    /// Whether `user` is in the call now.
    pub fn is_participant(&self, user: Uuid) -> bool {
        self.participants.contains(&user)
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(&self, command: CallCommand) -> Result<Vec<CallEvent>, DomainError> {
        if let CallCommand::Start {
            call_id,
            room_id,
            user_id,
            kind,
            user_is_member,
            at,
        } = command
        {
            if self.exists() {
                return Err(DomainError::conflict("this call id is taken"));
            }
            if !user_is_member {
                return Err(DomainError::forbidden("you are not a member of this room"));
            }
            return Ok(vec![CallStarted {
                call_id,
                room_id,
                started_by: user_id,
                kind,
                at,
            }
            .into()]);
        }
        let (Some(call_id), Some(room_id), Some(status), Some(started_by)) =
            (self.call_id, self.room_id, self.status, self.started_by)
        else {
            return Err(DomainError::not_found("no such call"));
        };
        let ended = |reason, at| -> CallEvent {
            CallEnded {
                call_id,
                room_id,
                reason,
                at,
            }
            .into()
        };
        match command {
            CallCommand::Start { .. } => unreachable!("handled above"),
            CallCommand::Accept {
                user_id,
                user_is_member,
                at,
            } => {
                if !user_is_member {
                    return Err(DomainError::forbidden("you are not a member of this room"));
                }
                if status == CallStatus::Ended {
                    return Err(DomainError::conflict("the call is over"));
                }
                if self.participants.contains(&user_id) {
                    return Ok(vec![]);
                }
                Ok(vec![CallJoined {
                    call_id,
                    room_id,
                    user_id,
                    at,
                }
                .into()])
            }
            CallCommand::Decline {
                user_id,
                user_is_member,
                room_is_direct,
                at,
            } => {
                if !user_is_member {
                    return Err(DomainError::forbidden("you are not a member of this room"));
                }
                if status == CallStatus::Ended {
                    return Err(DomainError::conflict("the call is over"));
                }
                if self.participants.contains(&user_id) {
                    return Err(DomainError::conflict(
                        "you are in this call: leave it instead",
                    ));
                }
                if self.declined.contains(&user_id) {
                    return Ok(vec![]);
                }
                let mut events = vec![CallDeclined {
                    call_id,
                    room_id,
                    user_id,
                    at,
                }
                .into()];
                // In a direct room the one callee said no: nobody is left to ring.
                if room_is_direct && status == CallStatus::Ringing {
                    events.push(ended(CallEnd::Declined, at));
                }
                Ok(events)
            }
            CallCommand::Leave { user_id, at } => {
                if !self.participants.contains(&user_id) {
                    return Err(DomainError::conflict("you are not in this call"));
                }
                let mut events = vec![CallLeft {
                    call_id,
                    room_id,
                    user_id,
                    at,
                }
                .into()];
                if self.participants.len() == 1 {
                    let reason = match (status, user_id == started_by) {
                        (CallStatus::Ringing, true) => CallEnd::Cancelled,
                        _ => CallEnd::Completed,
                    };
                    events.push(ended(reason, at));
                }
                Ok(events)
            }
            CallCommand::Expire { at } => match status {
                CallStatus::Ringing => Ok(vec![ended(CallEnd::Missed, at)]),
                CallStatus::Active | CallStatus::Ended => Ok(vec![]),
            },
        }
    }

    fn evolve(&mut self, event: CallEvent) {
        match event {
            CallEvent::CallStarted(e) => {
                self.call_id = Some(e.call_id);
                self.room_id = Some(e.room_id);
                self.started_by = Some(e.started_by);
                self.status = Some(CallStatus::Ringing);
                self.participants.insert(e.started_by);
            }
            CallEvent::CallJoined(e) => {
                self.participants.insert(e.user_id);
                self.declined.remove(&e.user_id);
                if self.started_by != Some(e.user_id) {
                    self.status = Some(CallStatus::Active);
                }
            }
            CallEvent::CallDeclined(e) => {
                self.declined.insert(e.user_id);
            }
            CallEvent::CallLeft(e) => {
                self.participants.remove(&e.user_id);
            }
            CallEvent::CallEnded(_) => {
                self.status = Some(CallStatus::Ended);
                self.participants.clear();
            }
        }
    }
}

impl_aggregate!(Call, "call", CallCommand, CallEvent);

#[cfg(test)]
mod tests;
