//! Turns a batch of log events into Kafka messages and waits for the broker's acks.

use std::time::Duration;

use parley_event_log::EventEnvelope;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use parley_kafka::{KafkaSettings, TopicKeys};

use crate::RelayError;

/// An idempotent producer bound to the events topic.
pub(crate) struct Publisher {
    producer: FutureProducer,
    topic: String,
    signing: Option<TopicKeys>,
}

impl Publisher {
    pub(crate) fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: settings.producer_config().create()?,
            topic: settings.topic.clone(),
            signing: settings.signing.clone(),
        })
    }

    /// Publishes every event in order, each with the topic's `generation` in its
    /// headers; `Ok` only once the broker acknowledged all.
    ///
    /// The whole batch is enqueued before any ack is awaited, so librdkafka packs
    /// it into a few large produce requests per partition.
    pub(crate) async fn publish(
        &self,
        events: &[EventEnvelope],
        generation: i64,
    ) -> Result<(), RelayError> {
        let generation = generation.to_string();
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            deliveries.push(self.enqueue(event, &generation).await?);
        }
        let total = deliveries.len();
        let mut failed = 0;
        let mut first = None;
        for delivery in deliveries {
            let error = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => error,
                Err(_) => KafkaError::Canceled,
            };
            failed += 1;
            first.get_or_insert(error);
        }
        match first {
            None => Ok(()),
            Some(first) => Err(RelayError::Unacknowledged {
                failed,
                total,
                first,
            }),
        }
    }

    /// The error that made the producer unusable, if any: it must be rebuilt.
    pub(crate) fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    async fn enqueue(
        &self,
        event: &EventEnvelope,
        generation: &str,
    ) -> Result<DeliveryFuture, RelayError> {
        let key = event.aggregate_id.to_string();
        let clean = without_secrets(event);
        let event = clean.as_ref().unwrap_or(event);
        let payload = serde_json::to_vec(event)?;
        let mut headers = headers(event, generation);
        if let Some(keys) = &self.signing {
            // Members with the keys park a record without it (kafka's `signing`).
            // (A literal, as for the others. It is parley_kafka::SIGNATURE_HEADER.)
            let signature = keys.sign(&payload);
            headers = headers.insert(Header {
                key: "parley_signature",
                value: Some(signature.as_str()),
            });
        }
        let mut record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                // librdkafka's local queue is full: let it drain, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
}

/// The event as it may leave the write side, when the stored one carries a
/// secret: an old version that held one (`UserRegistered` v1 and its password
/// hash) goes out in today's shape, which does not, and any secret field still
/// there is nulled. `None`: the event holds no secret and goes out as stored.
fn without_secrets(event: &EventEnvelope) -> Option<EventEnvelope> {
    use parley_event_schemas::{redact, upcast};
    let secret_type = redact::REDACTED_FIELDS
        .iter()
        .any(|(t, _)| *t == event.event_type);
    if !secret_type {
        return None;
    }
    let mut clean = event.clone();
    if let Some(version) = upcast::upcast(
        &clean.event_type,
        clean.event_version as u32,
        &mut clean.payload,
    ) {
        clean.event_version = version as i32;
    }
    redact::redact(&clean.event_type, &mut clean.payload);
    Some(clean)
}

/// The headers consumers may route or trace by without parsing the value.
fn headers(event: &EventEnvelope, generation: &str) -> OwnedHeaders {
    let version = event.event_version.to_string();
    let event_id = event.event_id.to_string();
    let headers = OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "event_type",
            value: Some(event.event_type.as_str()),
        })
        .insert(Header {
            key: "event_version",
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: "event_id",
            value: Some(event_id.as_str()),
        })
        // Which incarnation of the topic this is: it goes up each time the relay
        // recreates a lost topic, whose offsets then start again from 0.
        // (A literal, as for the others: event-schemas' tests read the header
        // names written here from this file. It is parley_kafka::GENERATION_HEADER.)
        .insert(Header {
            key: "topic_generation",
            value: Some(generation),
        });
    // The request's correlation id, so one send can be followed through the
    // topic without decoding values.
    let headers = match &event.metadata.correlation_id {
        Some(correlation_id) => headers.insert(Header {
            key: "correlation_id",
            value: Some(correlation_id.as_str()),
        }),
        None => headers,
    };
    match &event.metadata.traceparent {
        Some(traceparent) => headers.insert(Header {
            key: "traceparent",
            value: Some(traceparent.as_str()),
        }),
        None => headers,
    }
}

#[cfg(test)]
mod secret_tests {
    use super::without_secrets;
    use chrono::Utc;
    use parley_event_log::{EventEnvelope, Metadata};
    use uuid::Uuid;

    fn stored(event_type: &str, version: i32, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            event_version: version,
            aggregate_type: "user".into(),
            aggregate_id: Uuid::now_v7(),
            sequence: 1,
            position: 1,
            tx_id: 1,
            recorded_at: Utc::now(),
            metadata: Metadata::default(),
            payload,
        }
    }

    /// Attack (issue 21, item 9). Fails before: the relay published the stored
    /// payload, password hash included, to every reader of the topic.
    #[test]
    fn a_registration_that_stored_a_hash_goes_out_in_todays_shape() {
        let old = stored(
            "UserRegistered",
            1,
            serde_json::json!({"user_id": Uuid::now_v7(), "username": "alice", "display_name": "Alice",
                "password_hash": "$argon2id$v=19$secret", "registered_at": "2024-05-01T12:00:00Z"}),
        );
        let clean = without_secrets(&old).expect("rewritten");
        assert_eq!(clean.event_version, 2);
        assert!(!serde_json::to_string(&clean).unwrap().contains("argon2"));
        let message = stored("MessageSent", 2, serde_json::json!({"body": "hi"}));
        assert!(
            without_secrets(&message).is_none(),
            "others go out as stored"
        );
    }
}
