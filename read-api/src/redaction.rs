//! Replayed events show today's text: a stream resume must not bring back a
//! body that was redacted or edited since (the log keeps it; readers do not).

use std::collections::HashMap;

use parley_event_log::EventEnvelope;
use parley_projections::models::history;
use parley_projections::ReadStore;
use uuid::Uuid;

/// Event types whose payload carries a message body.
const WITH_BODY: [&str; 2] = ["MessageSent", "MessageEdited"];

/// Today's body of each message among `events` that carries one (`None`
/// once redacted), as the history model holds it. A message the model does not
/// hold yet is left out: nothing has replaced its text.
pub async fn current_bodies(
    store: &ReadStore,
    events: &[EventEnvelope],
) -> Result<HashMap<Uuid, Option<String>>, sqlx::Error> {
    let ids: Vec<Uuid> = events
        .iter()
        .filter(|e| carries_body(e))
        .map(|e| e.aggregate_id)
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    history::current_bodies(store.pool(), &ids).await
}

/// The event with its body replaced by today's (`null` once redacted). Done
/// after the event was routed: routing decodes the payload, which a `null`
/// body would no longer pass.
pub fn with_current_body(
    event: &EventEnvelope,
    today: &HashMap<Uuid, Option<String>>,
) -> Option<EventEnvelope> {
    if !carries_body(event) {
        return None;
    }
    let body = today.get(&event.aggregate_id)?;
    let mut shown = event.clone();
    shown.payload["body"] = match body {
        Some(text) => serde_json::Value::String(text.clone()),
        None => serde_json::Value::Null,
    };
    Some(shown)
}

fn carries_body(event: &EventEnvelope) -> bool {
    event.aggregate_type == "message" && WITH_BODY.contains(&event.event_type.as_str())
}
