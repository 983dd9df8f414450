//! Typing indicators: ephemeral, never stored as events, relayed to the
//! room's other members who are connected, on this replica and on the others.
//!
//! A typer's socket publishes on the [`EphemeralBus`]; every socket hears
//! every indicator and passes on those of its caller's rooms that the caller
//! may see ([`Typing::shown_to`]).
//!
//! [`EphemeralBus`]: super::bus::EphemeralBus
//!
//! A start lasts [`TYPING_TTL`] unless renewed: receivers show it that long
//! (`expires_in_ms`), and the typer's socket publishes the stop itself when
//! the client goes quiet or away, so a lost "stop" never leaves
//! "typing..." stuck.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How long a typing start lasts unless renewed.
pub const TYPING_TTL: Duration = Duration::from_secs(6);

/// One typing indicator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Typing {
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub typing: bool,
    /// Users who must not see it: those the typer blocks and those who block
    /// the typer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_from: Vec<Uuid>,
}

impl Typing {
    /// Whether the caller `me`, a member of the room (the caller's socket
    /// knows), is shown this indicator: never their own, never across a block.
    pub fn shown_to(&self, me: Uuid) -> bool {
        self.user_id != me && !self.hidden_from.contains(&me)
    }

    /// The server frame.
    pub fn frame(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "typing",
            "room_id": self.room_id,
            "user_id": self.user_id,
            "typing": self.typing,
            "expires_in_ms": if self.typing { TYPING_TTL.as_millis() as u64 } else { 0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown_to_the_typer_or_across_a_block() {
        let (typer, member, blocked) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let typing = Typing {
            room_id: Uuid::now_v7(),
            user_id: typer,
            typing: true,
            hidden_from: vec![blocked],
        };
        assert!(typing.shown_to(member));
        assert!(!typing.shown_to(typer));
        assert!(!typing.shown_to(blocked));
    }
}
