//! What a read model implements to be driven by the runtime.

use async_trait::async_trait;
use parley_event_log::EventEnvelope;
use sqlx::AnyConnection;

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied (undecodable, breaks the model's rules):
    /// it is parked in the dead-letter table and the projection moves on.
    #[error("poison event: {0}")]
    Poison(String),
    /// The store failed; the batch is rolled back and retried.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// A read model fed by the event stream.
///
/// `apply` runs inside the runtime's transaction, together with the checkpoint
/// update (invariant 4), and must be idempotent per event: applying an event the
/// model already holds changes nothing.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: checkpoint key, metric label, `parley projections rebuild NAME`.
    fn name(&self) -> &'static str;

    /// `CREATE TABLE IF NOT EXISTS ...` statements for this model's tables, in
    /// SQL both backends accept.
    fn schema(&self) -> Vec<String>;

    /// Applies one event (events of other kinds are ignored).
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError>;

    /// Applies a batch in order; per event, `None` when applied and `Some(reason)`
    /// when it is poison. A store error fails the whole batch (the runtime then
    /// retries event by event). Models override this to write runs of similar
    /// events with one statement.
    async fn apply_many(
        &self,
        conn: &mut AnyConnection,
        events: &[EventEnvelope],
    ) -> Result<Vec<Option<String>>, sqlx::Error> {
        let mut outcome = Vec::with_capacity(events.len());
        for event in events {
            match self.apply(conn, event).await {
                Ok(()) => outcome.push(None),
                Err(ApplyError::Poison(reason)) => outcome.push(Some(reason)),
                Err(ApplyError::Store(e)) => return Err(e),
            }
        }
        Ok(outcome)
    }
}
