//! The hub: one per read API, it tails the event log and broadcasts each event
//! once every streamed projection that reads it has applied it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use parley_event_log::{Cursor, EventEnvelope, SharedLog};
use parley_http_kit::ApiError;
use parley_projections::{Progress, ReadStore};
use tokio::sync::{broadcast, watch};

use super::event::Published;
use super::{READ_BATCH, STREAMED_PROJECTIONS};

/// How long a new subscriber waits for a hub that is starting.
const START_WAIT: Duration = Duration::from_secs(5);
/// The longest the hub waits without a commit notification before it looks again.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// With a Kafka feed the hub starts at the log's head, but first waits until the
/// read models have applied this many of the newest events before it: they are
/// the ones most likely still in flight.
const START_WINDOW: i64 = 1000;

/// Tails the log and broadcasts every event the read models have applied.
#[derive(Clone)]
pub struct StreamHub {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    log: SharedLog,
    /// What the streamed models have applied, whatever feeds them.
    progress: Progress,
    /// The broadcast and the cursor of the last event sent on it, changed together
    /// so that a subscriber learns exactly where its receiver starts.
    state: Mutex<HubState>,
    started: std::sync::Once,
    ready: watch::Sender<bool>,
}

pub(super) struct HubState {
    position: Cursor,
    sender: broadcast::Sender<Arc<Published>>,
}

/// A receiver of the broadcast and where it starts: it gets every event after
/// `position` (until it lags).
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<Published>>,
    pub position: Cursor,
}

impl StreamHub {
    /// A hub over `log`, keeping `capacity` events for slow subscribers. Its tailing
    /// task starts with the first subscriber (inside the tokio runtime).
    pub fn new(log: SharedLog, progress: Progress, capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        let (ready, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                log,
                progress,
                state: Mutex::new(HubState {
                    position: Cursor::START,
                    sender,
                }),
                started: std::sync::Once::new(),
                ready,
            }),
        }
    }

    /// The cursor of the last event broadcast (or skipped with no one listening).
    pub fn position(&self) -> Cursor {
        self.shared.state.lock().expect("hub lock").position
    }

    /// Subscribes to the broadcast, starting the hub if needed.
    pub async fn subscribe(&self) -> Result<Subscription, ApiError> {
        self.shared.started.call_once(|| {
            tokio::spawn(run_hub(Arc::downgrade(&self.shared)));
        });
        let mut ready = self.shared.ready.subscribe();
        match tokio::time::timeout(START_WAIT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => {}
            _ => {
                return Err(ApiError::Unavailable(
                    "live updates are starting; retry".into(),
                ))
            }
        }
        let state = self.shared.state.lock().expect("hub lock");
        Ok(Subscription {
            receiver: state.sender.subscribe(),
            position: state.position,
        })
    }
}

impl Shared {
    fn publish(&self, event: EventEnvelope) {
        // Decoded and serialized here, once, not by each stream.
        let published = Arc::new(Published::new(event));
        let mut state = self.state.lock().expect("hub lock");
        state.position = published.event.cursor();
        // No receiver is no error: nobody is listening.
        let _ = state.sender.send(published);
    }

    /// With no subscriber there is nothing to send: the hub jumps to `to`.
    fn skip_if_alone(&self, to: Cursor) -> Option<Cursor> {
        let mut state = self.state.lock().expect("hub lock");
        if state.sender.receiver_count() > 0 {
            return None;
        }
        state.position = state.position.max(to);
        Some(state.position)
    }
}

pub(super) enum Step {
    /// Sent what the projections had applied; there may be more to read.
    Progress,
    /// Nothing more is visible: wait until a projector commits.
    Wait,
}

pub(super) async fn run_hub(shared: Weak<Shared>) {
    let Some((log, progress)) = shared
        .upgrade()
        .map(|s| (s.log.clone(), s.progress.clone()))
    else {
        return;
    };
    let store = progress.store().clone();
    let feed = progress.fed_by();
    let mut committed = store.committed();
    let mut pending = VecDeque::new();
    // Ready once the events to pass at the start have gone out (`ready_at`),
    // not once nothing is pending: under steady writes something always is.
    let (mut cursor, ready_at) = loop {
        match progress
            .follow_from(&log, &STREAMED_PROJECTIONS, START_WINDOW)
            .await
        {
            Ok((cursor, to_pass)) => {
                let passed_at = to_pass.last().map_or(cursor, EventEnvelope::cursor);
                pending.extend(to_pass);
                break (cursor, passed_at);
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream hub: storage unavailable, retrying");
                if shared.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    };
    match shared.upgrade() {
        Some(s) => s.state.lock().expect("hub lock").position = cursor,
        None => return,
    }
    tracing::info!(position = cursor.position, ?feed, "stream hub started");
    loop {
        let Some(hub) = shared.upgrade() else { return };
        // Seen before reading the checkpoints: a commit after this point wakes
        // the wait below, so none is missed between the read and the wait.
        committed.borrow_and_update();
        let before = commits_of(&store, &STREAMED_PROJECTIONS);
        let step = step(&hub, &log, &progress, &mut cursor, &mut pending).await;
        if cursor >= ready_at && !*hub.ready.borrow() {
            hub.ready.send_replace(true);
        }
        drop(hub);
        match step {
            Ok(Step::Progress) => {}
            Ok(Step::Wait) => {
                // The oldest pending event waits only for the commits that
                // can let it through (fed by Kafka, those of the models that
                // read its type: not presence or users, for a message), so
                // others do not cost a step. Commits during the step count
                // (`before`).
                let needed = match pending.front() {
                    Some(head) => progress.gates(&STREAMED_PROJECTIONS, head),
                    None => STREAMED_PROJECTIONS.to_vec(),
                };
                loop {
                    // Projectors announce their commits; the timeout only
                    // covers a lost notification link.
                    match tokio::time::timeout(IDLE_WAIT, committed.changed()).await {
                        Ok(Ok(())) if moved(&store, &before, &needed) == Some(false) => continue,
                        Ok(Err(_)) => tokio::time::sleep(IDLE_WAIT).await,
                        _ => {}
                    }
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream hub: storage unavailable, retrying");
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    }
}

/// Commits heard of per projection (`None` while commits cannot be heard).
pub(super) fn commits_of(
    store: &ReadStore,
    names: &[&'static str],
) -> Vec<(&'static str, Option<u64>)> {
    names
        .iter()
        .map(|name| (*name, store.generation(&[name])))
        .collect()
}

/// Whether any of `needed` committed since `before` was read; `None` when that
/// cannot be told (commits not heard), so the caller steps anyway.
pub(super) fn moved(
    store: &ReadStore,
    before: &[(&'static str, Option<u64>)],
    needed: &[&'static str],
) -> Option<bool> {
    let mut any = false;
    for (name, was) in before.iter().filter(|(n, _)| needed.contains(n)) {
        let now = store.generation(&[name])?;
        any |= Some(now) != *was;
    }
    Some(any)
}

/// Broadcasts, in log order, the events every streamed projection that reads
/// them has applied (as [`Progress`] tells, whatever feeds the projections).
///
/// The events in hand are looked at first. While the oldest of them is not
/// applied nothing can go out, so the log is read further only once they have
/// all gone: each projector commit then costs the hub one lookup, not a log
/// read as well. With no one listening and nothing in hand, the hub skips to
/// where every projection has applied everything, when the feed can tell.
pub(super) async fn step(
    hub: &Shared,
    log: &SharedLog,
    progress: &Progress,
    cursor: &mut Cursor,
    pending: &mut VecDeque<EventEnvelope>,
) -> anyhow::Result<Step> {
    if pending.is_empty() {
        if let Some(through) = progress.applied_through(&STREAMED_PROJECTIONS).await? {
            if let Some(to) = hub.skip_if_alone(through) {
                *cursor = (*cursor).max(to);
                return Ok(Step::Wait);
            }
        }
    }
    let window = READ_BATCH as usize;
    if !pending.is_empty() {
        let sent = publish_applied(hub, progress, cursor, pending).await?;
        if !pending.is_empty() {
            // Step again at once only if the whole window went out: the events
            // after it may be applied too. Otherwise the next commit says when.
            return Ok(if sent == window {
                Step::Progress
            } else {
                Step::Wait
            });
        }
    }
    // Everything known went out: look for newer events.
    let newer = log.read_after(*cursor, READ_BATCH).await?;
    if newer.is_empty() {
        return Ok(Step::Wait);
    }
    pending.extend(newer);
    // A whole window out means a full read out: there may be more in the log.
    let sent = publish_applied(hub, progress, cursor, pending).await?;
    Ok(if sent == window {
        Step::Progress
    } else {
        Step::Wait
    })
}

/// Broadcasts the applied prefix of the oldest [`READ_BATCH`] `pending` events
/// and returns how many went out.
pub(super) async fn publish_applied(
    hub: &Shared,
    progress: &Progress,
    cursor: &mut Cursor,
    pending: &mut VecDeque<EventEnvelope>,
) -> anyhow::Result<usize> {
    let head: Vec<&EventEnvelope> = pending.iter().take(READ_BATCH as usize).collect();
    let visible = progress
        .applied_prefix(&STREAMED_PROJECTIONS, &head)
        .await?;
    for _ in 0..visible {
        let event = pending.pop_front().expect("counted");
        *cursor = event.cursor();
        hub.publish(event);
    }
    Ok(visible)
}
