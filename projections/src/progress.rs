//! The read side's one question of the projectors, whatever feeds them: has
//! model M applied write W? Fed by the log, a model applies in log order, so
//! its checkpoint answers. Fed by Kafka, partitions advance independently and a
//! log cursor means nothing: the sequences recorded per aggregate answer.

use std::collections::HashMap;

use std::sync::Arc;

use parley_event_log::{ConsistencyToken, Cursor, EventEnvelope, LogError, SharedLog, StreamHead};
use uuid::Uuid;

use crate::kafka::partitions::{applied_sequence, applied_sequences};
use crate::{models, Projection, ReadStore};

/// What feeds the projectors writing the read models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FedBy {
    /// The event log, in its order (`parley projector --feed log`, `parley dev`).
    #[default]
    Log,
    /// Kafka partitions, each at its own pace (`--feed kafka`).
    Partitions,
}

/// The projectors' progress, as the read side sees it.
#[derive(Clone)]
pub struct Progress {
    store: ReadStore,
    /// The event log, when reachable: it tells a token's aggregates' types, and
    /// how far behind its head a log-fed model is.
    log: Option<SharedLog>,
    fed_by: FedBy,
    /// Every model, made once (the stream hub asks on every step).
    models: Arc<Vec<Arc<dyn Projection>>>,
}

/// Why the question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Where one log-fed model is, for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLag {
    pub projection: &'static str,
    pub position: i64,
    /// Events behind the log's head (`None`: the head is not known).
    pub lag: Option<i64>,
}

impl Progress {
    pub fn new(store: ReadStore, log: Option<SharedLog>, fed_by: FedBy) -> Self {
        Self {
            store,
            log,
            fed_by,
            models: Arc::new(models::all()),
        }
    }

    fn model(&self, name: &str) -> Option<&Arc<dyn Projection>> {
        self.models.iter().find(|m| m.name() == name)
    }

    /// What feeds the models (for logs and status; the questions below answer
    /// whatever it is).
    pub fn fed_by(&self) -> FedBy {
        self.fed_by
    }

    pub fn store(&self) -> &ReadStore {
        &self.store
    }

    /// A check of one write, remembering what it looked up (a waiting request
    /// asks again after every commit).
    pub fn check(&self) -> WriteCheck<'_> {
        WriteCheck {
            progress: self,
            types: HashMap::new(),
        }
    }

    /// How many of `events` (in log order), from the first, every one of
    /// `models` that reads them has applied. Fed by the log that is the prefix
    /// up to the slowest checkpoint; fed by Kafka, a message waits for history
    /// and rooms, not for friends.
    pub async fn applied_prefix(
        &self,
        models: &[&'static str],
        events: &[&EventEnvelope],
    ) -> anyhow::Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        if self.fed_by == FedBy::Log {
            let slowest = self.slowest_checkpoint(models).await?;
            return Ok(events.iter().take_while(|e| e.cursor() <= slowest).count());
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
        let applied = applied_sequences(&self.store, models, &ids).await?;
        let readers: Vec<_> = models.iter().filter_map(|name| self.model(name)).collect();
        Ok(events
            .iter()
            .take_while(|e| {
                readers
                    .iter()
                    .filter(|p| p.consumes(&e.aggregate_type))
                    .all(|p| {
                        applied
                            .get(&(p.name().to_string(), e.aggregate_id))
                            .is_some_and(|seq| *seq >= e.sequence)
                    })
            })
            .count())
    }

    /// A log position up to which every one of `models` has applied every
    /// event, when the feed has one: fed by the log, their slowest checkpoint.
    /// Kafka partitions advance independently, so there is none (`None`).
    pub async fn applied_through(&self, models: &[&str]) -> Result<Option<Cursor>, sqlx::Error> {
        match self.fed_by {
            FedBy::Log => Ok(Some(self.slowest_checkpoint(models).await?)),
            FedBy::Partitions => Ok(None),
        }
    }

    /// Where a reader that follows `models` from now on starts, and the events
    /// it must pass first (in log order, applied or not): fed by the log, at
    /// the slowest checkpoint with nothing to pass; fed by Kafka, just before
    /// the newest `window` events, which are to pass once applied.
    pub async fn follow_from(
        &self,
        log: &SharedLog,
        models: &[&str],
        window: i64,
    ) -> Result<(Cursor, Vec<EventEnvelope>), ProgressError> {
        if self.fed_by == FedBy::Log {
            return Ok((self.slowest_checkpoint(models).await?, Vec::new()));
        }
        let newest = log.read_newest(window).await?;
        let Some(first) = newest.first().map(EventEnvelope::cursor) else {
            return Ok((Cursor::START, Vec::new()));
        };
        // Nothing sorts between the event before `first` and this cursor.
        let before = Cursor {
            tx_id: first.tx_id,
            position: first.position - 1,
        };
        Ok((before, newest))
    }

    /// Those of `models` whose next commit may make `event` applied by all of
    /// them: fed by the log, any of them (the slowest checkpoint gates it);
    /// fed by Kafka, only those that read its aggregate's type (all of
    /// `models` when none does).
    pub fn gates(&self, models: &[&'static str], event: &EventEnvelope) -> Vec<&'static str> {
        if self.fed_by == FedBy::Log {
            return models.to_vec();
        }
        let readers = readers_among(&self.models, models, &event.aggregate_type);
        if readers.is_empty() {
            models.to_vec()
        } else {
            readers
        }
    }

    /// A reading that changes whenever `projection` commits: data read between
    /// two equal readings is the model's state at one moment. Fed by the log,
    /// its checkpoint; fed by Kafka, the sum of its partitions' offsets.
    pub async fn version(&self, projection: &str) -> Result<i64, sqlx::Error> {
        match self.fed_by {
            FedBy::Log => Ok(self.store.checkpoint(projection).await?.position),
            FedBy::Partitions => {
                crate::kafka::partitions::offsets_version(&self.store, projection).await
            }
        }
    }

    /// Whether `projection` has applied each of `events`: fed by the log, by
    /// its checkpoint; fed by Kafka, by the sequence it recorded for each
    /// event's aggregate.
    pub async fn applied_each(
        &self,
        projection: &str,
        events: &[EventAt],
    ) -> Result<Vec<bool>, sqlx::Error> {
        if self.fed_by == FedBy::Log {
            let checkpoint = self.store.checkpoint(projection).await?;
            return Ok(events.iter().map(|e| e.at <= checkpoint).collect());
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
        let applied = applied_sequences(&self.store, &[projection], &ids).await?;
        Ok(events
            .iter()
            .map(|e| {
                applied
                    .get(&(projection.to_string(), e.aggregate_id))
                    .is_some_and(|seq| *seq >= e.sequence)
            })
            .collect())
    }

    /// The slowest checkpoint among `models`: fed by the log, everything up to
    /// it is applied by all of them.
    pub async fn slowest_checkpoint(&self, models: &[&str]) -> Result<Cursor, sqlx::Error> {
        let cursors = self.store.checkpoints(models).await?;
        Ok(cursors.into_iter().min().unwrap_or(Cursor::START))
    }

    /// Where each model is against the log's head; `None` fed by Kafka, whose
    /// lag is per partition and the broker's to tell (`parley projections
    /// status --feed kafka`, the projector's metrics).
    pub async fn lag(&self) -> Option<Vec<ModelLag>> {
        if self.fed_by == FedBy::Partitions {
            return None;
        }
        let head = match &self.log {
            Some(log) => log.last_position().await.ok(),
            None => None,
        };
        let mut lags = Vec::new();
        for p in models::all() {
            let position = self
                .store
                .checkpoint(p.name())
                .await
                .unwrap_or_default()
                .position;
            lags.push(ModelLag {
                projection: p.name(),
                position,
                lag: head.map(|h| (h - position).max(0)),
            });
        }
        Some(lags)
    }
}

/// Those of `names` whose model (among `models`) reads `aggregate_type`.
fn readers_among(
    models: &[Arc<dyn Projection>],
    names: &[&'static str],
    aggregate_type: &str,
) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|name| {
            models
                .iter()
                .any(|m| m.name() == *name && m.consumes(aggregate_type))
        })
        .collect()
}

/// Where one event is: in the log, and in its aggregate's stream.
#[derive(Debug, Clone, Copy)]
pub struct EventAt {
    pub at: Cursor,
    pub aggregate_id: Uuid,
    pub sequence: i64,
}

/// One write's check: see [`WriteCheck::applied`].
pub struct WriteCheck<'a> {
    progress: &'a Progress,
    /// The aggregate types looked up so far (`None`: not in the log).
    types: HashMap<Uuid, Option<String>>,
}

impl WriteCheck<'_> {
    /// Whether every one of `models` has applied the write `token` names: by
    /// log cursor, or by every written aggregate's sequence.
    pub async fn applied(
        &mut self,
        token: &ConsistencyToken,
        models: &[&str],
    ) -> Result<bool, ProgressError> {
        let store = &self.progress.store;
        let checkpoints = store.checkpoints(models).await?;
        for (name, checkpoint) in models.iter().zip(checkpoints) {
            if checkpoint >= token.cursor {
                continue;
            }
            for stream in &token.streams {
                if applied_sequence(store, name, stream.aggregate_id).await? >= stream.sequence {
                    continue;
                }
                if !self.reads(name, stream).await? {
                    continue;
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether model `name` reads the aggregate of `stream`. Fed by Kafka, a
    /// model records no sequence for aggregate types it does not read (friends
    /// and messages), so a friends query with a send's token has nothing to
    /// wait for. Fed by the log the answer is always yes: there the checkpoint
    /// also orders the token's write after everything the client wrote before.
    async fn reads(&mut self, name: &str, stream: &StreamHead) -> Result<bool, ProgressError> {
        let log = match (&self.progress.log, self.progress.fed_by) {
            (Some(log), FedBy::Partitions) => log,
            _ => return Ok(true),
        };
        let Some(model) = self.progress.model(name) else {
            return Ok(true);
        };
        if model.aggregate_types().is_none() {
            return Ok(true);
        }
        let aggregate_type = match self.types.get(&stream.aggregate_id) {
            Some(known) => known.clone(),
            None => {
                let events = log
                    .load_stream(stream.aggregate_id, stream.sequence - 1)
                    .await?;
                let found = events.first().map(|e| e.aggregate_type.clone());
                self.types.insert(stream.aggregate_id, found.clone());
                found
            }
        };
        Ok(aggregate_type.is_none_or(|t| model.consumes(&t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_event_waits_only_for_the_models_that_read_it() {
        let all = models::all();
        let streamed = ["history", "rooms", "friends", "presence"];
        assert_eq!(
            readers_among(&all, &streamed, "message"),
            ["history", "rooms"]
        );
        assert_eq!(readers_among(&all, &streamed, "room"), ["rooms"]);
        assert_eq!(readers_among(&all, &streamed, "friendship"), ["friends"]);
        assert_eq!(readers_among(&all, &streamed, "presence"), ["presence"]);
        assert!(readers_among(&all, &streamed, "user").is_empty());
    }
}
