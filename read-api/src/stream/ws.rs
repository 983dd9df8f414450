//! `GET /v1/ws`: a caller's [`Connection`] over a WebSocket (the same events,
//! ids, resume and authorization as `/v1/stream`; only the framing differs),
//! and what only a two-way channel carries: typing indicators, call signals
//! ([`super::signal`]), and delivery receipts from clients (recorded through
//! the command API, see [`crate::receipts`]); members' markers come back as
//! `receipt` frames.
//!
//! Frames are JSON text (`docs/api.md`, the AsyncAPI document). The server
//! guards itself per socket: a frame is at most [`MAX_FRAME_BYTES`], client
//! frames are rate limited (a flood is refused frame by frame, then closed), a
//! typing start is relayed at most once per half [`TYPING_TTL`] per room, a
//! socket that does not take a frame within [`SEND_WITHIN`] or falls behind
//! the broadcast is closed with the id to resume from, and one that says
//! nothing (not even a pong) for [`IDLE_AFTER`] is closed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use parley_domain::ReadMarkerEvent;
use parley_event_log::Cursor;
use parley_http_kit::{ApiError, ApiQuery, Caller};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::bus::Ephemeral;
use super::connection::{Connection, Frame};
use super::event::{client_view, decoded, Decoded};
use super::format_cursor;
use super::socket::{close_for, parse_resume, Gone, Socket};
use super::sse::{resume_from, StreamQuery};
use super::typing::{Typing, TYPING_TTL};
use crate::ReadState;

/// The largest frame (and message) a client may send.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// What one read of a socket takes at most.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// A browser has this long to send its `auth` frame.
pub const AUTH_WITHIN: Duration = Duration::from_secs(5);
/// Between the server's pings.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A socket that says nothing (not even a pong) for this long is closed.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);
/// A socket that takes longer than this to take one frame is a slow consumer.
pub const SEND_WITHIN: Duration = Duration::from_secs(10);
/// How long a closing socket waits for the client's close frame.
pub(super) const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// Client frames per second a socket may send, and the burst above that.
const FRAMES_PER_SEC: f64 = 10.0;
const FRAME_BURST: f64 = 20.0;
/// Refused frames (rate, garbage, not allowed) before the socket is closed,
/// unless the client calms down first (see [`Session::take_budget`]).
const REFUSED_BEFORE_CLOSE: u32 = 50;
/// Rooms one socket may be typing in at once.
const TYPING_ROOMS: usize = 8;
/// How long the typer's blocks are trusted before they are read again.
const BLOCKS_FRESH_FOR: Duration = Duration::from_secs(10);

/// Close codes (RFC 6455 section 7.4, and the IANA registry).
pub(super) const CLOSE_NORMAL: u16 = 1000;
pub(super) const CLOSE_POLICY: u16 = 1008;
pub(super) const CLOSE_RESTART: u16 = 1012;
pub(super) const CLOSE_TRY_AGAIN: u16 = 1013;

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum ClientFrame {
    Auth {
        access_token: String,
        #[serde(default)]
        after: Option<String>,
    },
    Resume {
        after: String,
    },
    Typing {
        room_id: Uuid,
        typing: bool,
    },
    Delivered {
        room_id: Uuid,
        message_id: Uuid,
    },
    Signal {
        call_id: Uuid,
        to_user_id: Uuid,
        data: serde_json::Value,
    },
    Ping,
}

/// Live updates and typing indicators over a WebSocket.
///
/// Authenticate with `Authorization: Bearer`, or (browsers) with a first text
/// frame `{"type":"auth","access_token":...}` within 5 s. Resume with
/// `Last-Event-ID` / `last_event_id` as for `/v1/stream`, with `after` in the
/// auth frame, or at any time with `{"type":"resume","after":id}`; every
/// (re)start is announced by `{"type":"hello","after":id}`. Server frames:
/// `hello`, `event`, `receipt`, `typing`, `signal`, `pong`, `error`,
/// `goodbye`. Client frames: `auth`, `resume`, `typing`, `delivered`,
/// `signal`, `ping`. Closed with 1012
/// and the id to resume from when the server restarts, 1013 when the socket
/// fell behind, 1008 after too many refused frames.
#[utoipa::path(get, path = "/v1/ws", tag = "stream",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
    (status = 101, description = "Switching to the WebSocket protocol"),
    (status = 400, description = "Not a WebSocket upgrade, or a malformed Last-Event-ID"),
    (status = 401, description = "An Authorization header with no valid token"),
    (status = 410, description = "Last-Event-ID is older than the resume window"),
    (status = 429, description = "The caller has the most streams open already"),
    (status = 503, description = "No event log configured, the stream is starting, or too many sockets wait to authenticate")))]
pub async fn ws(
    State(state): State<ReadState>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    let upgrade =
        upgrade.map_err(|e| ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    if state.stream.is_none() || state.log.is_none() {
        return Err(ApiError::Unavailable(
            "live updates need the event log".into(),
        ));
    }
    let resume = resume_from(&parts.headers, &q)?;
    // With a header the caller is known now, so refusals are HTTP answers;
    // a browser's first frame is read after the upgrade.
    let opened = match parts.headers.contains_key(AUTHORIZATION) {
        true => {
            let Caller(me) = Caller::from_request_parts(&mut parts, &state).await?;
            Ok(open(&state, me, resume).await?)
        }
        // A place among the sockets waiting for their auth frame, held until
        // it comes.
        false => Err(state
            .unauthenticated
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::Unavailable(
                    "too many sockets are waiting to authenticate; try again shortly".into(),
                )
            })?),
    };
    let sockets = state.sockets.clone();
    Ok(upgrade
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        // tungstenite reads into a buffer it allocates whole, 128 KiB by
        // default: 138 KiB per idle socket in `parley-bench fanout`. Client
        // frames are small; a larger one still reads, in more calls.
        .read_buffer_size(READ_BUFFER_BYTES)
        // Each frame is flushed as it is sent: no buffer to fill first.
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            sockets.track_future(async move {
                let (sink, stream) = socket.split();
                let mut socket = Socket {
                    sink,
                    stream,
                    last_heard: Instant::now(),
                };
                let connection = match opened {
                    Ok(connection) => connection,
                    Err(waiting) => {
                        let authenticated = socket.authenticate(&state, resume).await;
                        drop(waiting);
                        match authenticated {
                            Some(connection) => connection,
                            None => return,
                        }
                    }
                };
                Session::new(state, connection).run(socket).await;
            })
        })
        .into_response())
}

pub(super) async fn open(
    state: &ReadState,
    me: Uuid,
    resume: Option<Cursor>,
) -> Result<Connection, ApiError> {
    let (Some(hub), Some(log)) = (&state.stream, &state.log) else {
        return Err(ApiError::Unavailable(
            "live updates need the event log".into(),
        ));
    };
    Connection::open(state, hub, log, me, resume).await
}

/// What one socket keeps besides its stream.
struct Session {
    state: ReadState,
    /// The caller's stream; none only while a resume opens the next.
    connection: Option<Connection>,
    me: Uuid,
    /// Frame budget: tokens and when they were counted.
    budget: (f64, Instant),
    /// Frames refused since the budget was last full.
    refused_lately: u32,
    /// Rooms the caller is typing in: until when, and when it was last relayed.
    typing: HashMap<Uuid, (Instant, Instant)>,
    /// The caller's blocks, either way, and when they were read.
    blocks: Option<(Instant, Vec<Uuid>)>,
    /// The newest message each room's `delivered` frames named since the last
    /// second's tick, which records them (at most one command per room and
    /// second, however often a client says so).
    delivered: HashMap<Uuid, Uuid>,
    _open: crate::metrics::OpenStream,
}

/// How a session ends.
enum End {
    /// The client went away or the socket failed: nothing more to send.
    Gone,
    /// Closed by the server with this code and reason.
    Close(u16, String),
}

impl Session {
    fn new(state: ReadState, connection: Connection) -> Self {
        Self {
            me: connection.user(),
            state,
            connection: Some(connection),
            budget: (FRAME_BURST, Instant::now()),
            refused_lately: 0,
            typing: HashMap::new(),
            blocks: None,
            delivered: HashMap::new(),
            _open: crate::metrics::OpenStream::of(crate::metrics::WS_CONNECTIONS),
        }
    }

    async fn run(mut self, mut socket: Socket) {
        let mut ephemeral = self.state.ephemeral.subscribe();
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        let mut pinged = Instant::now();
        let end = loop {
            let step = tokio::select! {
                frame = async {
                    match self.connection.as_mut() {
                        Some(connection) => connection.next().await,
                        None => std::future::pending().await,
                    }
                } => match frame {
                    Some(frame) => self.forward(&mut socket, frame).await,
                    None => Err(End::Gone),
                },
                message = socket.stream.next() => match message {
                    Some(Ok(message)) => {
                        socket.last_heard = Instant::now();
                        self.heard(&mut socket, message).await
                    }
                    _ => Err(End::Gone),
                },
                heard = ephemeral.recv() => match heard {
                    Ok(heard) if self.is_for_me(&heard.frame) => {
                        socket.send(heard.text.clone()).await.map_err(|Gone| End::Gone)
                    }
                    // Ephemeral: one that lagged skips what it missed.
                    _ => Ok(()),
                },
                _ = ticks.tick() => {
                    self.expire_typing().await;
                    if let Err(end) = self.record_delivered(&mut socket).await {
                        Err(end)
                    } else if socket.last_heard.elapsed() > IDLE_AFTER {
                        crate::metrics::ws_closed("idle");
                        Err(End::Close(CLOSE_NORMAL, "idle: nothing heard for 60 s".into()))
                    } else if pinged.elapsed() >= PING_EVERY {
                        pinged = Instant::now();
                        socket.ping().await.map_err(|Gone| End::Gone)
                    } else {
                        Ok(())
                    }
                },
            };
            if let Err(end) = step {
                break end;
            }
        };
        self.stop_typing_everywhere().await;
        // What the client said it received is kept, even on the way out.
        let _ = self.record_delivered(&mut socket).await;
        if let End::Close(code, reason) = end {
            socket.close(code, &reason).await;
        }
    }

    /// Sends one frame of the caller's stream.
    async fn forward(&mut self, socket: &mut Socket, frame: Frame) -> Result<(), End> {
        let text = match frame {
            Frame::Hello { after } => {
                json!({"type": "hello", "after": format_cursor(after)}).to_string()
            }
            Frame::Replayed(event) => match decoded(&event) {
                Decoded::Marker(marker) => receipt_frame(event.cursor(), &marker),
                _ => json!({
                    "type": "event",
                    "id": format_cursor(event.cursor()),
                    "event": client_view(&event),
                })
                .to_string(),
            },
            Frame::Live(published) => match &published.decoded {
                Decoded::Marker(marker) => receipt_frame(published.event.cursor(), marker),
                // Serialized once by the hub for every stream: spliced, not parsed.
                _ => format!(
                    r#"{{"type":"event","id":"{}","event":{}}}"#,
                    format_cursor(published.event.cursor()),
                    published.data
                ),
            },
            Frame::Goodbye { why, after } => {
                let after = format_cursor(after);
                let _ = socket
                    .send(json!({"type": "goodbye", "reason": why, "after": after}).to_string())
                    .await;
                let (why, code) = if self.state.closing.is_cancelled() {
                    ("shutdown", CLOSE_RESTART)
                } else {
                    ("slow", CLOSE_TRY_AGAIN)
                };
                crate::metrics::ws_closed(why);
                return Err(End::Close(code, after));
            }
        };
        socket.send(text).await.map_err(|Gone| End::Gone)
    }

    /// Takes one client frame.
    async fn heard(&mut self, socket: &mut Socket, message: Message) -> Result<(), End> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .refuse(socket, ApiError::BadRequest("frames are JSON text".into()))
                    .await
            }
            Message::Close(_) => return Err(End::Gone),
            // Pings are answered by the socket itself; pongs only count as heard.
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        if !self.take_budget() {
            return self
                .refuse(
                    socket,
                    ApiError::TooManyRequests {
                        retry_after_secs: 1,
                    },
                )
                .await;
        }
        let frame = match serde_json::from_str::<ClientFrame>(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                return self
                    .refuse(
                        socket,
                        ApiError::BadRequest(format!("unreadable frame: {e}")),
                    )
                    .await
            }
        };
        let answer = match frame {
            ClientFrame::Ping => {
                return socket
                    .send(json!({"type": "pong"}).to_string())
                    .await
                    .map_err(|Gone| End::Gone)
            }
            ClientFrame::Auth { .. } => Err(ApiError::BadRequest(
                "this socket is authenticated already".into(),
            )),
            ClientFrame::Resume { after } => return self.resume(socket, &after).await,
            ClientFrame::Typing { room_id, typing } => self.typing(room_id, typing).await,
            ClientFrame::Delivered {
                room_id,
                message_id,
            } => self.delivered(room_id, message_id),
            ClientFrame::Signal {
                call_id,
                to_user_id,
                data,
            } => super::signal::relay(&self.state, self.me, call_id, to_user_id, data).await,
        };
        match answer {
            Ok(()) => Ok(()),
            Err(e) => self.refuse(socket, e).await,
        }
    }

    /// Answers a refused frame with an error frame; closes a socket that
    /// keeps sending them.
    async fn refuse(&mut self, socket: &mut Socket, error: ApiError) -> Result<(), End> {
        self.refused_lately += 1;
        if self.refused_lately > REFUSED_BEFORE_CLOSE {
            crate::metrics::ws_closed("abuse");
            return Err(End::Close(CLOSE_POLICY, "too many refused frames".into()));
        }
        socket.error(&error).await.map_err(|Gone| End::Gone)
    }

    /// A token bucket over client frames. Refusals are forgiven once the
    /// bucket is full again: the client has calmed down.
    fn take_budget(&mut self) -> bool {
        let (tokens, at) = &mut self.budget;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * FRAMES_PER_SEC).min(FRAME_BURST);
        *at = now;
        if *tokens >= FRAME_BURST {
            self.refused_lately = 0;
        }
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Restarts the caller's stream after `after` (its `hello` tells where).
    /// The old stream's slot is given back first, so a caller at the most
    /// streams can resume; a resume that cannot open ends the socket.
    async fn resume(&mut self, socket: &mut Socket, after: &str) -> Result<(), End> {
        let after = match parse_resume(after) {
            Ok(after) => after,
            Err(e) => return self.refuse(socket, e).await,
        };
        self.connection = None;
        match open(&self.state, self.me, Some(after)).await {
            Ok(connection) => {
                self.connection = Some(connection);
                Ok(())
            }
            Err(e) => {
                let _ = socket.error(&e).await;
                let (code, reason) = close_for(&e);
                Err(End::Close(code, reason))
            }
        }
    }

    /// Takes a `delivered` frame, recorded at the next tick.
    fn delivered(&mut self, room: Uuid, message: Uuid) -> Result<(), ApiError> {
        if self.state.commands.is_none() {
            return Err(ApiError::Unavailable(
                "this server records no receipts (no command API configured)".into(),
            ));
        }
        if !self.in_room(room) {
            return Err(ApiError::Forbidden("not a member of this room".into()));
        }
        self.delivered.insert(room, message);
        Ok(())
    }

    /// Records the `delivered` frames of the last second, one command per
    /// room; a refusal comes back as an error frame naming the room.
    async fn record_delivered(&mut self, socket: &mut Socket) -> Result<(), End> {
        if self.delivered.is_empty() {
            return Ok(());
        }
        let Some(commands) = self.state.commands.clone() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut self.delivered);
        for refused in commands
            .record_all(&self.state.keys, self.me, pending)
            .await
        {
            self.refuse(socket, refused).await?;
        }
        Ok(())
    }

    /// Whether an ephemeral frame goes to this socket: typing in its rooms
    /// that its caller may see, signals addressed to its caller.
    fn is_for_me(&self, frame: &Ephemeral) -> bool {
        match frame {
            Ephemeral::Typing(t) => t.shown_to(self.me) && self.in_room(t.room_id),
            Ephemeral::Signal(s) => s.to_user_id == self.me,
        }
    }

    fn in_room(&self, room: Uuid) -> bool {
        self.connection.as_ref().is_some_and(|c| c.in_room(room))
    }

    async fn typing(&mut self, room: Uuid, typing: bool) -> Result<(), ApiError> {
        if !typing {
            if self.typing.remove(&room).is_some() {
                self.publish(room, false).await?;
            }
            return Ok(());
        }
        if !self.in_room(room) {
            return Err(ApiError::Forbidden("not a member of this room".into()));
        }
        let now = Instant::now();
        let relay = match self.typing.get(&room) {
            Some((_, relayed)) => now.duration_since(*relayed) >= TYPING_TTL / 2,
            None if self.typing.len() >= TYPING_ROOMS => {
                return Err(ApiError::TooManyRequests {
                    retry_after_secs: TYPING_TTL.as_secs(),
                })
            }
            None => true,
        };
        let relayed = match relay {
            true => {
                self.publish(room, true).await?;
                now
            }
            false => self.typing[&room].1,
        };
        self.typing.insert(room, (now + TYPING_TTL, relayed));
        Ok(())
    }

    /// Publishes the caller's typing in `room`, hidden across blocks.
    async fn publish(&mut self, room: Uuid, typing: bool) -> Result<(), ApiError> {
        let hidden_from = self.blocks().await?;
        self.state
            .ephemeral
            .publish(Ephemeral::Typing(Typing {
                room_id: room,
                user_id: self.me,
                typing,
                hidden_from,
            }))
            .await;
        Ok(())
    }

    /// The caller's blocks either way, read again when older than
    /// [`BLOCKS_FRESH_FOR`].
    async fn blocks(&mut self) -> Result<Vec<Uuid>, ApiError> {
        if let Some((at, blocks)) = &self.blocks {
            if at.elapsed() < BLOCKS_FRESH_FOR {
                return Ok(blocks.clone());
            }
        }
        let pool = self.state.store.pool();
        let blocks = parley_projections::models::friends::blocked_either_way(pool, self.me)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "typing: reading blocks failed");
                ApiError::Unavailable("typing is unavailable for a moment".into())
            })?;
        self.blocks = Some((Instant::now(), blocks.clone()));
        Ok(blocks)
    }

    /// Stops the typing that was not renewed in time.
    async fn expire_typing(&mut self) {
        let now = Instant::now();
        let expired: Vec<Uuid> = self
            .typing
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(room, _)| *room)
            .collect();
        for room in expired {
            self.typing.remove(&room);
            let _ = self.publish(room, false).await;
        }
    }

    async fn stop_typing_everywhere(&mut self) {
        let rooms: Vec<Uuid> = self.typing.drain().map(|(room, _)| room).collect();
        for room in rooms {
            let _ = self.publish(room, false).await;
        }
    }
}

/// A member's read or delivery marker as the `receipt` frame WebSockets get
/// in place of its event frame (with the event's id, so it resumes alike).
fn receipt_frame(at: Cursor, marker: &ReadMarkerEvent) -> String {
    let (kind, e) = match marker {
        ReadMarkerEvent::ReadMarkerMoved(e) => ("read", (e.room_id, e.user_id, e.message_id)),
        ReadMarkerEvent::DeliveryMarkerMoved(e) => {
            ("delivered", (e.room_id, e.user_id, e.message_id))
        }
    };
    let (room_id, user_id, message_id) = e;
    json!({
        "type": "receipt",
        "id": format_cursor(at),
        "room_id": room_id,
        "user_id": user_id,
        "message_id": message_id,
        "kind": kind,
    })
    .to_string()
}
