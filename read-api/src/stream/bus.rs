//! Ephemeral frames between sockets: typing indicators and call signals,
//! never stored as events, delivered to this replica's sockets at once and to
//! the other replicas' through the read database.
//!
//! One [`EphemeralBus`] per read API; every socket hears everything and keeps
//! what is for its caller. Across replicas the bus rides PostgreSQL's
//! `LISTEN/NOTIFY` on the read database (channel `parley_ephemeral`), which
//! every replica already listens to for commit notices: no new moving part.
//! These frames are worth nothing a few seconds late, so a lost notice costs
//! nothing that matters, and they are best effort by design. With the read
//! store on SQLite (`parley dev`, one process) the bus is in-process only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parley_event_log::notify::{self, Heard as Notified};
use parley_projections::{Backend, ReadStore};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::signal::Signal;
use super::typing::Typing;

/// The NOTIFY channel between replicas.
const CHANNEL: &str = "parley_ephemeral";

/// Frames a slow socket may fall behind by before it misses some (they are
/// ephemeral: a socket that lags skips them, it is not closed for it).
const CAPACITY: usize = 1024;

/// What crosses the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ephemeral {
    Typing(Typing),
    Signal(Signal),
}

impl Ephemeral {
    /// The server frame its receivers get.
    fn text(&self) -> String {
        match self {
            Ephemeral::Typing(t) => t.frame().to_string(),
            Ephemeral::Signal(s) => s.frame(),
        }
    }
}

/// What the bus sends sockets: the frame, and its text, serialized once however many
/// sockets send it.
#[derive(Debug)]
pub struct Sent {
    pub frame: Ephemeral,
    pub text: String,
}

impl Sent {
    fn new(frame: Ephemeral) -> Arc<Self> {
        Arc::new(Self {
            text: frame.text(),
            frame,
        })
    }
}

/// What crosses between replicas: the frame and the replica it came from
/// (which delivered it locally already).
#[derive(Serialize, Deserialize)]
struct Notice {
    origin: Uuid,
    #[serde(flatten)]
    frame: Ephemeral,
}

/// The read API's ephemeral frames, local and between replicas.
#[derive(Clone)]
pub struct EphemeralBus {
    sender: broadcast::Sender<Arc<Sent>>,
    /// This replica, so that it skips its own notices.
    origin: Uuid,
    store: ReadStore,
    /// Whether the listener for other replicas' notices runs.
    listening: Arc<AtomicBool>,
}

impl EphemeralBus {
    pub fn new(store: ReadStore) -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            origin: Uuid::now_v7(),
            store,
            listening: Arc::default(),
        }
    }

    /// Hears every frame from now on, of this replica and (on PostgreSQL)
    /// the others.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Sent>> {
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

    /// Delivers `frame` to this replica's sockets at once and to the other
    /// replicas' through the read database (best effort: logged, not
    /// retried).
    pub async fn publish(&self, frame: Ephemeral) {
        let _ = self.sender.send(Sent::new(frame.clone()));
        if self.store.backend() != Backend::Postgres {
            return;
        }
        let notice = Notice {
            origin: self.origin,
            frame,
        };
        let payload = serde_json::to_string(&notice).unwrap_or_default();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(self.store.pool())
            .await
        {
            tracing::debug!(error = %e, "ephemeral frame not relayed to other replicas");
        }
    }
}

/// Passes other replicas' frames to this one's sockets, for as long as the
/// bus exists.
async fn listen(url: String, origin: Uuid, sender: broadcast::WeakSender<Arc<Sent>>) {
    let connect = || sqlx::postgres::PgListener::connect(&url);
    notify::listen(connect, &[CHANNEL], "ephemeral", |heard| {
        let Some(sender) = sender.upgrade() else {
            return false;
        };
        if let Notified::Notification { payload, .. } = heard {
            match serde_json::from_str::<Notice>(payload) {
                Ok(notice) if notice.origin != origin => {
                    let _ = sender.send(Sent::new(notice.frame));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "a malformed ephemeral notice skipped"),
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
    fn notices_round_trip() {
        for frame in [
            Ephemeral::Typing(Typing {
                room_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
                typing: false,
                hidden_from: vec![Uuid::now_v7()],
            }),
            Ephemeral::Signal(Signal {
                call_id: Uuid::now_v7(),
                from_user_id: Uuid::now_v7(),
                to_user_id: Uuid::now_v7(),
                data: serde_json::json!({"sdp": "v=0", "type": "offer"}),
            }),
        ] {
            let notice = Notice {
                origin: Uuid::now_v7(),
                frame,
            };
            let back: Notice =
                serde_json::from_str(&serde_json::to_string(&notice).unwrap()).unwrap();
            assert_eq!(back.frame, notice.frame);
            assert_eq!(back.origin, notice.origin);
        }
    }
}
