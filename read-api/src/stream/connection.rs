//! One caller's stream, whatever carries it: a greeting with where it starts,
//! the backlog after a resume, then the live broadcast, each event routed by
//! the caller's interest, and a goodbye with where to resume.

use std::collections::VecDeque;
use std::sync::Arc;

use parley_event_log::{Cursor, EventEnvelope, SharedLog};
use parley_http_kit::ApiError;
use parley_projections::ReadStore;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::event::Published;
use super::hub::{StreamHub, Subscription};
use super::interest::Interest;
use super::READ_BATCH;
use crate::ReadState;

/// What a stream sends, before a transport frames it.
pub enum Frame {
    /// The first: the cursor the stream starts after.
    Hello { after: Cursor },
    /// An event of the backlog, with today's body of a message.
    Replayed(Box<EventEnvelope>),
    /// A live event, decoded and serialized once by the hub.
    Live(Arc<Published>),
    /// The last: why the stream ends, and the cursor to resume after.
    Goodbye { why: String, after: Cursor },
}

pub(super) enum Phase {
    Backlog {
        up_to: Cursor,
        buffer: VecDeque<EventEnvelope>,
        exhausted: bool,
    },
    Live,
    Closed,
}

/// A batch of the backlog, with today's bodies of its messages.
type Backlog = (
    Vec<EventEnvelope>,
    std::collections::HashMap<Uuid, Option<String>>,
);

async fn read_backlog(log: SharedLog, store: ReadStore, after: Cursor) -> anyhow::Result<Backlog> {
    let batch = log.read_after(after, READ_BATCH).await?;
    let today = crate::redaction::current_bodies(&store, &batch).await?;
    Ok((batch, today))
}

/// One client's stream: the backlog after where it resumes, then the live
/// broadcast, each event routed by the caller's interest.
pub struct Connection {
    /// The read models: replayed bodies are shown as they are today.
    store: ReadStore,
    /// Today's bodies of the messages in the backlog batch being sent.
    today: std::collections::HashMap<Uuid, Option<String>>,
    log: SharedLog,
    receiver: broadcast::Receiver<Arc<Published>>,
    interest: Interest,
    phase: Phase,
    /// Every event at or below this cursor was sent or filtered out.
    seen: Cursor,
    /// The backlog read under way, if any (see [`Connection::next_frame`]).
    reading: Option<tokio::task::JoinHandle<anyhow::Result<Backlog>>>,
    /// Whether the first frame (`retry`, and the id the stream starts after) is out.
    greeted: bool,
    /// Cancelled when the server shuts down: the stream then says goodbye.
    closing: tokio_util::sync::CancellationToken,
    /// One of the caller's allowed open streams, until this one ends.
    _slot: crate::slots::Slot,
}

impl Connection {
    /// Opens the caller's stream, after `resume` (a cursor the client passed)
    /// or from now: 429 past the caller's open streams, 410 for a resume
    /// further back than the window, 503 while the hub starts.
    pub async fn open(
        state: &ReadState,
        hub: &StreamHub,
        log: &SharedLog,
        me: Uuid,
        resume: Option<Cursor>,
    ) -> Result<Self, ApiError> {
        let slot = state
            .streams_open
            .take(me)
            .ok_or_else(|| ApiError::TooManyRequests {
                retry_after_secs: 5,
            })?;
        // Subscribe first: whatever is broadcast from now on reaches this receiver, and
        // everything up to `position` is in the log for the backlog.
        let Subscription { receiver, position } = hub.subscribe().await?;
        if let Some(resume) = resume {
            // A resume reads the log from `resume`: bounded, so no id can turn a
            // stream into a scan of the whole log.
            if position.position - resume.position > state.stream_resume_window {
                return Err(ApiError::ResumeWindowPassed(format!(
                    "Last-Event-ID is more than {} events behind: start again from a fresh page of each room, then open the stream without it",
                    state.stream_resume_window
                )));
            }
        }
        let start = resume.unwrap_or(position);
        let interest = Interest::load(state, log, me, start, position).await?;
        let phase = if start < position {
            Phase::Backlog {
                up_to: position,
                buffer: VecDeque::new(),
                exhausted: false,
            }
        } else {
            Phase::Live
        };
        Ok(Connection {
            log: log.clone(),
            store: state.store.clone(),
            today: Default::default(),
            receiver,
            interest,
            phase,
            seen: start,
            reading: None,
            greeted: false,
            closing: state.closing.clone(),
            _slot: slot,
        })
    }

    /// The caller.
    pub fn user(&self) -> Uuid {
        self.interest.me()
    }

    /// Whether the caller is a member of `room`, as of the last event the
    /// stream passed (the stream follows the caller's joins and leaves).
    pub fn in_room(&self, room: Uuid) -> bool {
        self.interest.has_room(room)
    }

    /// Every event at or below this cursor was sent or filtered out: where
    /// the caller resumes.
    pub fn seen(&self) -> Cursor {
        self.seen
    }

    /// The frame that ends the stream, with where to resume.
    fn goodbye(&mut self, why: &str) -> Frame {
        self.phase = Phase::Closed;
        Frame::Goodbye {
            why: why.to_string(),
            after: self.seen,
        }
    }

    /// The next frame, or a goodbye (retry hint and resume id) once the server
    /// is shutting down.
    pub async fn next(&mut self) -> Option<Frame> {
        if matches!(self.phase, Phase::Closed) {
            return None;
        }
        let closing = self.closing.clone();
        tokio::select! {
            biased;
            _ = closing.cancelled() => Some(self.goodbye(
                "the server is shutting down; reconnect with Last-Event-ID to resume",
            )),
            // Cancel-safe: the broadcast receive changes nothing until it
            // completes, and a backlog read goes on in its own task.
            frame = self.next_frame() => frame,
        }
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        if !self.greeted {
            self.greeted = true;
            return Some(Frame::Hello { after: self.seen });
        }
        loop {
            match &mut self.phase {
                Phase::Backlog {
                    up_to,
                    buffer,
                    exhausted,
                } => {
                    if let Some(event) = buffer.pop_front() {
                        self.seen = event.cursor();
                        if self.interest.route(&event) {
                            let shown = crate::redaction::with_current_body(&event, &self.today);
                            return Some(Frame::Replayed(Box::new(shown.unwrap_or(event))));
                        }
                        continue;
                    }
                    if *exhausted {
                        self.seen = self.seen.max(*up_to);
                        self.phase = Phase::Live;
                        continue;
                    }
                    let up_to = *up_to;
                    // A task of its own, kept until it ends: a WebSocket
                    // polls this next to its other work and drops the call
                    // whenever a ping or typing comes first. Awaited in
                    // place, a read that queued longer than that for a
                    // connection was dropped and queued again, forever
                    // (seen in `parley-bench fanout`'s reconnect storm).
                    let reading = self.reading.get_or_insert_with(|| {
                        let (log, store, after) = (self.log.clone(), self.store.clone(), self.seen);
                        tokio::spawn(read_backlog(log, store, after))
                    });
                    let read = match reading.await {
                        Ok(read) => read,
                        Err(e) => Err(anyhow::Error::from(e)),
                    };
                    self.reading = None;
                    match read {
                        Ok((batch, today)) => {
                            self.today = today;
                            let Phase::Backlog {
                                buffer, exhausted, ..
                            } = &mut self.phase
                            else {
                                unreachable!("still in the backlog");
                            };
                            *exhausted = (batch.len() as i64) < READ_BATCH;
                            for event in batch {
                                if event.cursor() > up_to {
                                    *exhausted = true;
                                    break;
                                }
                                buffer.push_back(event);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stream: reading the backlog failed");
                            return Some(
                                self.goodbye("the event log is unavailable; reconnect to resume"),
                            );
                        }
                    }
                }
                Phase::Live => match self.receiver.recv().await {
                    Ok(published) => {
                        let cursor = published.event.cursor();
                        if cursor <= self.seen {
                            continue;
                        }
                        self.seen = cursor;
                        if self.interest.route_decoded(&published.decoded) {
                            return Some(Frame::Live(published));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "stream: subscriber lagged, closing");
                        return Some(self.goodbye(&format!(
                            "lagged behind by {missed} events; reconnect with Last-Event-ID to resume"
                        )));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                Phase::Closed => return None,
            }
        }
    }
}
