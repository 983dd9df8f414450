use parley_event_log::LogError;
use rdkafka::error::KafkaError;

/// Why a relay step failed. Every one is retried; none stops the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{failed} of {total} events were not acknowledged: {first}")]
    Unacknowledged {
        failed: usize,
        total: usize,
        first: KafkaError,
    },
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("checkpoint: {0}")]
    Database(#[from] sqlx::Error),
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The topic check did not show the topic ready; checked again after a backoff.
    #[error("the topic is not ready ({0:?}); checking again")]
    TopicUnclear(parley_kafka::TopicState),
}

impl RelayError {
    /// Whether the failure was on the Kafka side (it marks the relay `kafka_ok=false`).
    pub fn is_kafka(&self) -> bool {
        matches!(
            self,
            Self::Kafka(_) | Self::Unacknowledged { .. } | Self::TopicUnclear(_)
        )
    }
}
