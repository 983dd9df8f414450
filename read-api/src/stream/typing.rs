//! Typing indicators: ephemeral, never stored as events, relayed to the
//! room's other members who are connected, on this replica and on the others.
//!
//! One [`TypingBus`] per read API. A typer's socket publishes; every socket
//! hears every indicator and passes on those of its caller's rooms that the
//! caller may see ([`Typing::shown_to`]). Across replicas the bus rides
//! PostgreSQL's `LISTEN/NOTIFY` on the read database, which every replica
//! already listens to for commit notices: no new moving part, and a typing
//! indicator is worth nothing a few seconds late, so a lost notice costs
//! nothing that matters. With the read store on SQLite (`parley dev`, one
//! process) the bus is in-process only.
//!
//! A start lasts [`TYPING_TTL`] unless renewed: receivers show it that long
//! (`expires_in_ms`), and the typer's socket publishes the stop itself when
//! the client goes quiet or away, so a lost "stop" never leaves
//! "typing..." stuck.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parley_event_log::notify::{self, Heard};
use parley_projections::{Backend, ReadStore};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// How long a typing start lasts unless renewed.
pub const TYPING_TTL: Duration = Duration::from_secs(6);

/// The NOTIFY channel between replicas.
const CHANNEL: &str = "parley_typing";

/// Indicators a slow socket may fall behind by before it misses some (they
/// are ephemeral: a socket that lags skips them, it is not closed for it).
const CAPACITY: usize = 1024;

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

/// What crosses between replicas: the indicator and the replica it came from
/// (which delivered it locally already).
#[derive(Serialize, Deserialize)]
struct Notice {
    origin: Uuid,
    #[serde(flatten)]
    typing: Typing,
}

/// The read API's typing indicators, local and between replicas.
#[derive(Clone)]
pub struct TypingBus {
    sender: broadcast::Sender<Arc<Typing>>,
    /// This replica, so that it skips its own notices.
    origin: Uuid,
    store: ReadStore,
    /// Whether the listener for other replicas' notices runs.
    listening: Arc<AtomicBool>,
}

impl TypingBus {
    pub fn new(store: ReadStore) -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            origin: Uuid::now_v7(),
            store,
            listening: Arc::default(),
        }
    }

    /// Hears every indicator from now on, of this replica and (on
    /// PostgreSQL) the others.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Typing>> {
        if self.store.backend() == Backend::Postgres && !self.listening.swap(true, Ordering::AcqRel)
        {
            tokio::spawn(listen(
                self.store.url().to_string(),
                self.origin,
                self.sender.downgrade(),
            ));
        }
        self.sender.subscribe()
    }

    /// Delivers `typing` to this replica's sockets at once and to the other
    /// replicas' through the read database (best effort: logged, not
    /// retried).
    pub async fn publish(&self, typing: Typing) {
        let _ = self.sender.send(Arc::new(typing.clone()));
        if self.store.backend() != Backend::Postgres {
            return;
        }
        let notice = Notice {
            origin: self.origin,
            typing,
        };
        let payload = serde_json::to_string(&notice).unwrap_or_default();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(self.store.pool())
            .await
        {
            tracing::debug!(error = %e, "typing: not relayed to other replicas");
        }
    }
}

/// Passes other replicas' indicators to this one's sockets, for as long as
/// the bus exists.
async fn listen(url: String, origin: Uuid, sender: broadcast::WeakSender<Arc<Typing>>) {
    let connect = || sqlx::postgres::PgListener::connect(&url);
    notify::listen(connect, &[CHANNEL], "typing", |heard| {
        let Some(sender) = sender.upgrade() else {
            return false;
        };
        if let Heard::Notification { payload, .. } = heard {
            match serde_json::from_str::<Notice>(payload) {
                Ok(notice) if notice.origin != origin => {
                    let _ = sender.send(Arc::new(notice.typing));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "typing: a malformed notice skipped"),
            }
        }
        true
    })
    .await;
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

    #[test]
    fn a_notice_round_trips() {
        let notice = Notice {
            origin: Uuid::now_v7(),
            typing: Typing {
                room_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
                typing: false,
                hidden_from: vec![Uuid::now_v7()],
            },
        };
        let back: Notice = serde_json::from_str(&serde_json::to_string(&notice).unwrap()).unwrap();
        assert_eq!(back.typing, notice.typing);
        assert_eq!(back.origin, notice.origin);
    }
}
