//! Live updates: `GET /v1/stream`, Server-Sent Events of what concerns the caller.
//!
//! One [`StreamHub`] per read API tails the event log and broadcasts each event once
//! every projection a client could query about it (history, rooms, friends and
//! presence) has applied it, so an event seen on the stream is already visible to
//! queries. Projectors fed by the log are judged by their checkpoints (the slowest
//! one); projectors fed by Kafka by the sequence they recorded for the event's
//! aggregate, since their partitions advance independently. Each connection filters the broadcast for
//! its caller: events of the caller's rooms, friend events involving the caller, and
//! presence changes of the caller and their friends.
//!
//! The SSE id of an event is its log cursor, `"{tx_id}.{position}"`. A client that
//! reconnects with `Last-Event-ID` first subscribes to the broadcast, then gets the
//! backlog from the log after that cursor, then the live events, skipping everything
//! at or below the last cursor it has passed: every missed event exactly once.
//!
//! The jobs, one module each, so that another transport (a WebSocket) shares
//! everything but the framing:
//! - [`hub`]: tails the log and broadcasts what the read models have applied;
//! - [`event`]: an event decoded and serialized once, as clients see it;
//! - [`classify`]: what an event is to one caller (a change to their rooms or
//!   friends, or news of one of them);
//! - [`interest`]: the caller's rooms and friends, kept current as events pass;
//! - [`connection`]: one caller's stream (backlog, then live), as frames;
//! - [`sse`]: `GET /v1/stream`, the frames as Server-Sent Events;
//! - [`ws`]: `GET /v1/ws`, the frames over a WebSocket, with typing, signals
//!   and receipts;
//! - [`socket`]: one WebSocket's sending, closing and first-frame auth;
//! - [`bus`]: ephemeral frames between sockets and replicas;
//! - [`typing`]: typing indicators;
//! - [`signal`]: call signals between a call's participants.

mod bus;
mod classify;
mod connection;
mod event;
mod hub;
mod interest;
mod signal;
mod socket;
mod sse;
mod typing;
mod ws;

use parley_event_log::Cursor;
use parley_projections::models::Model;
use parley_projections::models::{friends, history, presence, rooms};

pub use bus::{Ephemeral, EphemeralBus};
pub use connection::{Connection, Frame};
pub use event::{client_view, Published};
pub use hub::{StreamHub, Subscription};
pub use signal::{Signal, MAX_SIGNAL_BYTES};
#[doc(hidden)]
pub use sse::__path_stream;
pub use sse::{stream, StreamQuery};
pub use typing::{Typing, TYPING_TTL};
#[doc(hidden)]
pub use ws::__path_ws;
pub use ws::{ws, AUTH_WITHIN, IDLE_AFTER, MAX_FRAME_BYTES, SEND_WITHIN};

/// Events the hub keeps for slow subscribers before they lag (and are closed).
pub const DEFAULT_CAPACITY: usize = 4096;

/// The projections an event must have reached before it is streamed.
pub const STREAMED_PROJECTIONS: [&str; 4] = [
    history::History::NAME,
    rooms::Rooms::NAME,
    friends::Friends::NAME,
    presence::PresenceModel::NAME,
];

/// Events read from the log at once.
const READ_BATCH: i64 = 500;

/// The SSE id of a log cursor.
pub fn format_cursor(cursor: Cursor) -> String {
    format!("{}.{}", cursor.tx_id, cursor.position)
}

/// Parses an SSE id made by [`format_cursor`].
pub fn parse_cursor(raw: &str) -> Option<Cursor> {
    let (tx, position) = raw.trim().split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(tx) || !digits(position) {
        return None;
    }
    Some(Cursor {
        tx_id: tx.parse().ok()?,
        position: position.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            tx_id: 7812,
            position: 42,
        };
        assert_eq!(format_cursor(c), "7812.42");
        assert_eq!(parse_cursor("7812.42"), Some(c));
        assert_eq!(
            parse_cursor(" 0.3 "),
            Some(Cursor {
                tx_id: 0,
                position: 3
            })
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.b",
            "-1.2",
            "1.-2",
            "1.2.3",
            "+1.2",
            "99999999999999999999.1",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
