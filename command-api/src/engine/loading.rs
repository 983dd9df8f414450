//! An aggregate's state: its snapshot (a cache) and the events after it, and
//! the snapshots stored as streams grow.

use cqrs_es::Aggregate;
use parley_domain::codec::EventCodec;
use parley_domain::room::Room;
use parley_domain::user::User;
use parley_event_log::{SharedLog, Snapshot};
use parley_http_kit::ApiError;
use uuid::Uuid;

use super::Loaded;

/// A snapshot is stored each time an aggregate's version passes a multiple of this.
pub const SNAPSHOT_EVERY: i64 = 100;

/// Loads an aggregate from its snapshot and the events after it.
pub async fn load<A>(log: &SharedLog, id: Uuid) -> Result<Loaded<A>, ApiError>
where
    A: Aggregate,
    A::Event: EventCodec,
{
    let (mut state, mut version) = match log.load_snapshot(id).await? {
        Some(snap) if snap.aggregate_type == A::TYPE => {
            match serde_json::from_value::<A>(snap.state) {
                Ok(state) => (state, snap.version),
                // A snapshot of an older shape is only a cache: replay instead.
                Err(_) => (A::default(), 0),
            }
        }
        _ => (A::default(), 0),
    };
    for envelope in log.load_stream(id, version).await? {
        // An id belongs to the aggregate type that first used it: a stream of
        // another kind is never decoded as this one (the log refuses to mix them).
        if envelope.aggregate_type != A::TYPE {
            return Err(ApiError::IdOfAnotherKind(id));
        }
        let event = A::Event::from_payload(
            &envelope.event_type,
            envelope.event_version as u32,
            &envelope.payload,
        )
        .map_err(|e| ApiError::internal(anyhow::anyhow!("event {}: {e}", envelope.event_id)))?;
        state.apply(event);
        version = envelope.sequence;
    }
    Ok(Loaded { id, state, version })
}

pub(super) async fn snapshot(
    log: &SharedLog,
    aggregate_type: &str,
    id: Uuid,
) -> Result<(), ApiError> {
    async fn save<A>(log: &SharedLog, id: Uuid) -> Result<(), ApiError>
    where
        A: Aggregate,
        A::Event: EventCodec,
    {
        let loaded = load::<A>(log, id).await?;
        log.save_snapshot(Snapshot {
            aggregate_type: A::TYPE.to_string(),
            aggregate_id: id,
            version: loaded.version,
            state: serde_json::to_value(&loaded.state).map_err(ApiError::internal)?,
        })
        .await?;
        Ok(())
    }
    use parley_domain::{
        friendship::Friendship, message::Message, presence::Presence, read_marker::ReadMarker,
    };
    match aggregate_type {
        t if t == Room::TYPE => save::<Room>(log, id).await,
        t if t == Presence::TYPE => save::<Presence>(log, id).await,
        t if t == Friendship::TYPE => save::<Friendship>(log, id).await,
        t if t == Message::TYPE => save::<Message>(log, id).await,
        t if t == ReadMarker::TYPE => save::<ReadMarker>(log, id).await,
        t if t == User::TYPE => save::<User>(log, id).await,
        t if t == parley_domain::call::Call::TYPE => {
            save::<parley_domain::call::Call>(log, id).await
        }
        _ => Ok(()),
    }
}
