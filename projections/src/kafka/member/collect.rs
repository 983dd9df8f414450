//! Filling a batch from the consumer: messages of revoked partitions are
//! dropped, non-envelopes and (with signing keys) unsigned messages parked, and a newer topic generation restarts its
//! partition from the beginning.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kafka::partitions::{Offset, Position};
use crate::park_undecodable;
use parley_event_log::EventEnvelope;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

use super::assignment::{assigned, generation, MemberContext, Shared};
use super::Member;

impl Member {
    /// Fills a batch after its `first` message: up to `batch_size` events, waiting
    /// at most `batch_wait`; a client error event ends it early. A message that
    /// is not an envelope is parked here.
    /// A message of a newer topic generation than its partition's start ends
    /// the batch without its partition's events: see [`Member::restart_partition`].
    pub(super) async fn collect(
        &self,
        consumer: &StreamConsumer<MemberContext>,
        shared: &Arc<Mutex<Shared>>,
        first: rdkafka::message::BorrowedMessage<'_>,
    ) -> anyhow::Result<(Vec<EventEnvelope>, Vec<Offset>)> {
        let mut events = Vec::new();
        let mut offsets: Vec<Offset> = Vec::new();
        let deadline = tokio::time::Instant::now() + self.options.batch_wait;
        let mut next = Some(first);
        loop {
            if let Some(message) = next.take() {
                let at = Offset {
                    partition: message.partition(),
                    offset: message.offset(),
                    generation: generation(&message),
                };
                if self.restart_partition(consumer, shared, &at)? {
                    drop_partitions(&mut events, &mut offsets, |p| p == at.partition);
                    break;
                }
                let payload = message.payload().unwrap_or_default();
                let decoded = self.signed_by_the_relay(&message).and_then(|()| {
                    serde_json::from_slice::<EventEnvelope>(payload)
                        .map_err(|e| format!("not an event envelope: {e}"))
                });
                match decoded {
                    Ok(event) => {
                        events.push(event);
                        offsets.push(at);
                    }
                    Err(reason) => {
                        let raw = String::from_utf8_lossy(payload).into_owned();
                        for projection in &self.projections {
                            park_undecodable(
                                &self.store,
                                projection.name(),
                                &format!(
                                    "kafka:{}:{}:{}",
                                    self.settings.topic, at.partition, at.offset
                                ),
                                &reason,
                                &raw,
                            )
                            .await?;
                        }
                    }
                }
            }
            if events.len() >= self.options.batch_size {
                break;
            }
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(message)) => next = Some(message),
                // A client error event: the batch ends with what it holds
                // (nothing read is dropped).
                Ok(Err(e)) => {
                    self.report_error(&e.to_string());
                    break;
                }
                Err(_) => break,
            }
        }
        Ok((events, offsets))
    }

    /// With signing keys set, whether the relay signed `message`; a message it
    /// did not sign (another producer's, forged or mistaken) is parked, never
    /// applied.
    fn signed_by_the_relay(
        &self,
        message: &rdkafka::message::BorrowedMessage<'_>,
    ) -> Result<(), String> {
        let Some(keys) = &self.settings.signing else {
            return Ok(());
        };
        keys.verify_record(message)
            .map_err(|why| format!("not published by Parley's relay: {why}"))
    }

    /// Whether `at` is the first message seen of a newer topic generation than
    /// its partition's start: the topic was lost and the relay recreated it and
    /// republished the log into it, so offsets began again at 0 and the member
    /// may have been placed anywhere in the new partition by its stale offsets.
    /// Then the partition is read again from its beginning (librdkafka drops
    /// what it fetched before the seek) and the per-aggregate sequences skip
    /// what was applied before the loss.
    fn restart_partition(
        &self,
        consumer: &StreamConsumer<MemberContext>,
        shared: &Arc<Mutex<Shared>>,
        at: &Offset,
    ) -> anyhow::Result<bool> {
        let mut s = shared.lock().expect("member lock");
        let start = s.start.entry(at.partition).or_insert(Position::START);
        if at.generation <= start.generation {
            return Ok(false);
        }
        let from_the_beginning = start.next_offset == 0;
        *start = Position {
            generation: at.generation,
            next_offset: 0,
        };
        drop(s);
        if from_the_beginning {
            // Nothing applied from this partition yet: the member is reading
            // it from its beginning already (a new topic, or a new member).
            return Ok(false);
        }
        tracing::warn!(
            partition = at.partition,
            generation = at.generation,
            offset = at.offset,
            "the topic was recreated: reading the partition again from its beginning"
        );
        consumer.seek(
            &self.settings.topic,
            at.partition,
            rdkafka::Offset::Beginning,
            Duration::from_secs(5),
        )?;
        Ok(true)
    }

    /// [`rewind`](Self::rewind), saying whether it succeeded.
    pub(super) async fn try_rewind(
        &self,
        consumer: &StreamConsumer<MemberContext>,
        shared: &Arc<Mutex<Shared>>,
    ) -> bool {
        match self.rewind(consumer, shared).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "rewind failed; dropping what is read until one succeeds");
                false
            }
        }
    }

    /// Seeks every owned partition back to the lowest stored offset.
    pub(super) async fn rewind(
        &self,
        consumer: &StreamConsumer<MemberContext>,
        shared: &Arc<Mutex<Shared>>,
    ) -> anyhow::Result<()> {
        let restarts = self.store.server_restarts();
        let starts = self.load_starts().await?;
        self.loaded_at_restarts
            .store(restarts, std::sync::atomic::Ordering::SeqCst);
        let owned = assigned(shared);
        let mut s = shared.lock().expect("member lock");
        for p in owned {
            let at = starts.get(&p).copied().unwrap_or(Position::START);
            s.start.insert(p, at);
            consumer.seek(
                &self.settings.topic,
                p,
                rdkafka::Offset::Offset(at.next_offset),
                Duration::from_secs(5),
            )?;
        }
        Ok(())
    }
}

/// Removes from a batch (`events` and their `offsets`, index for index) the
/// events of every partition `dropped` picks.
pub(super) fn drop_partitions<E>(
    events: &mut Vec<E>,
    offsets: &mut Vec<Offset>,
    dropped: impl Fn(i32) -> bool,
) {
    debug_assert_eq!(events.len(), offsets.len());
    let mut keep = offsets.iter().map(|o| !dropped(o.partition));
    events.retain(|_| keep.next().unwrap_or(false));
    offsets.retain(|o| !dropped(o.partition));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Offset {
        Offset {
            partition,
            offset,
            generation: 1,
        }
    }

    #[test]
    fn dropping_partitions_keeps_the_other_events_with_their_offsets() {
        let mut events = vec!["a0", "b0", "a1", "c0", "b1"];
        let mut offsets = vec![at(1, 0), at(2, 0), at(1, 1), at(3, 0), at(2, 1)];
        drop_partitions(&mut events, &mut offsets, |p| p == 2);
        assert_eq!(events, ["a0", "a1", "c0"]);
        assert_eq!(offsets, [at(1, 0), at(1, 1), at(3, 0)]);
        drop_partitions(&mut events, &mut offsets, |p| p != 3);
        assert_eq!(events, ["c0"]);
        assert_eq!(offsets, [at(3, 0)]);
    }
}
