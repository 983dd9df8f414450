//! Turns a batch of log events into Kafka messages and waits for the broker's acks.

use std::time::Duration;

use parley_event_log::EventEnvelope;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::{KafkaSettings, RelayError};

/// An idempotent producer bound to the events topic.
pub(crate) struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    pub(crate) fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: settings.producer_config().create()?,
            topic: settings.topic.clone(),
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
        let payload = serde_json::to_vec(event)?;
        let mut record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(&payload)
            .headers(headers(event, generation));
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

/// The header naming the topic generation a message was published in (as
/// [`headers`] writes it).
pub const GENERATION_HEADER: &str = "topic_generation";

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
        // names written here from this file. It is GENERATION_HEADER.)
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
