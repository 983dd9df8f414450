//! Parley's read side: a projector runtime and the read models it maintains.
//!
//! A [`Projector`] takes an ordered [`Feed`] of event envelopes (the event log
//! today; Kafka partitions in the scaled mode) and applies them in batches to one
//! [`Projection`], writing its checkpoint in the same transaction as the
//! read-model changes (invariant 4). Events it cannot apply are parked in a
//! dead-letter table with the reason, and the projector moves on (invariant 8).

mod backoff;
mod failpoint;
pub mod generations;
pub mod kafka;
pub mod metrics;
pub mod models;
mod progress;
mod projection;
pub mod rebuild;
mod restarts;
mod running;
mod runtime;
pub mod store;
mod together;
pub mod traces;

pub use progress::{EventAt, FedBy, ModelLag, Progress, ProgressError, WriteCheck};
pub use projection::{ApplyError, OwnSequences, Projection};
pub use restarts::restarted;
pub use running::{prepare_all, select, RunningProjectors};
pub use runtime::{
    apply_checkpointed, dead_letters, park_undecodable, BatchOutcome, Checkpointer, DeadLetter,
    Fate, Feed, LogFeed, Projector, BATCH_SIZE,
};
pub use store::{Backend, ReadStore, StoreError};
pub use together::Together;
