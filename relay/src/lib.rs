//! Parley's relay: publishes the Postgres event log to the events topic. It is
//! write-side infrastructure: it reads only the log, and nothing of the read side.
//!
//! The [`Relay`] tails the log in its safe order (by writing transaction, then
//! position: see [`parley_event_log::Cursor`]) and publishes each event with
//! key = aggregate id, value = the event's JSON envelope, and headers
//! `event_type`, `event_version`, `event_id`, `topic_generation`, and
//! `correlation_id` and `traceparent` (when the event carries them).
//!
//! What it guarantees:
//! - **At least once.** The checkpoint (table `relay_checkpoints`, in the log's
//!   database) moves only after the broker acknowledged (`acks=all`) every event
//!   of a batch (it is written together with a later read, at most every
//!   `checkpoint_interval` while events keep coming). A crash, a Kafka
//!   outage or a failed batch means republishing from the checkpoint, so an
//!   event can appear more than once, never zero times.
//! - **Per-aggregate order.** The key is the aggregate id, so all of an
//!   aggregate's events land on one partition; the relay enqueues them in log
//!   order, which is sequence order within an aggregate, and the idempotent
//!   producer keeps that order through its own retries. A batch the relay
//!   retries is republished whole, from its first event, so every aggregate's
//!   events appear again in sequence order after any partial attempt.
//! - **Dedupe downstream.** Consumers apply an event only if its `sequence` is
//!   the next one for its aggregate (invariant 4) and skip ones they already
//!   applied, which makes the duplicates above harmless.
//! - **One publisher.** Replicas compete for a Postgres session advisory lock on a
//!   dedicated connection; exactly one publishes, the others retry every second
//!   and take over within seconds of the leader's session ending. The checkpoint
//!   never moves backwards, so a replica that lost the lock unawares cannot
//!   rewind it.
//! - **A lost topic is rebuilt.** If the topic disappears (a broker that lost its
//!   storage), the relay recreates it and republishes the whole log under the
//!   next topic generation (the `topic_generation` header, stored with the
//!   checkpoint). A projector that sees a newer generation knows the partition's
//!   offsets started again from 0 and reads it from the beginning.
//!
//! Kafka being down never stops the relay: it retries the same batch with a
//! backoff (capped at 5 s) and reports `kafka_ok=false` in its [`RelayStatus`],
//! which readiness probes read.
//!
//! ```no_run
//! # async fn demo() -> Result<(), parley_relay::RelayError> {
//! use parley_kafka::KafkaSettings;
//! use parley_relay::Relay;
//!
//! let settings = KafkaSettings::new("kafka-1:9092,kafka-2:9092");
//! let relay = Relay::connect("postgres://parley@db/parley", settings).await?;
//! let status = relay.status(); // leader, kafka_ok, cursor, published_total, last_error
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(relay.run(shutdown));
//! # Ok(()) }
//! ```

pub mod checkpoint;
mod error;
mod leader;
pub mod metrics;
mod publisher;
mod relay;

pub use error::RelayError;
pub use leader::lock_key;
pub use relay::{Relay, RelayOptions, RelayStatus};
