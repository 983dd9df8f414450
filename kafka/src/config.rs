//! Where the relay publishes, and how its Kafka clients are configured.

use rdkafka::ClientConfig;

use crate::TopicKeys;

/// The topic every event is published to unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "parley.events";
/// Partitions of a topic the relay creates: the ceiling on projector replicas.
pub const DEFAULT_PARTITIONS: i32 = 12;

/// The Kafka cluster and topic the relay publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092` or `k1:9092,k2:9092`.
    pub brokers: String,
    /// The events topic.
    pub topic: String,
    /// Partitions of the topic when the relay has to create it.
    pub partitions: i32,
    /// Replication factor of the topic when the relay has to create it.
    pub replication_factor: i32,
    /// librdkafka properties applied last, over Parley's defaults (TLS, SASL, tuning).
    pub client_overrides: Vec<(String, String)>,
    /// Keys the relay signs records with and members check them with
    /// ([`TopicKeys`]); `None`: records are neither signed nor checked.
    pub signing: Option<TopicKeys>,
}

impl KafkaSettings {
    /// Settings for `brokers` with the default topic, partitions and replication.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_string(),
            partitions: DEFAULT_PARTITIONS,
            replication_factor: 1,
            client_overrides: Vec::new(),
            signing: None,
        }
    }

    /// The same settings signing (relay) or checking (members) records with `keys`.
    pub fn with_signing(mut self, keys: TopicKeys) -> Self {
        self.signing = Some(keys);
        self
    }

    /// The same settings publishing to another topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// The same settings with one more librdkafka property.
    pub fn with_override(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client_overrides.push((key.into(), value.into()));
        self
    }

    /// A client config with the brokers and the overrides: the base of every client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.apply_overrides(&mut config);
        config
    }

    /// The relay's producer config: idempotent, `acks=all`, batched for throughput.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "parley-relay")
            // Idempotence keeps each partition's order through librdkafka's retries
            // and drops the duplicates those retries would otherwise write.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Batches fill from a whole log read at once (up to 5,000 events
            // enqueued together), so linger adds little to them; a live tail
            // waits for it on every read. 1 ms, not librdkafka's 5: the same
            // backlog throughput, and acks sooner (docs/benchmarks.md).
            .set("linger.ms", "1")
            .set("batch.num.messages", "10000")
            .set("batch.size", "1048576")
            .set("compression.type", "lz4")
            // A failed delivery surfaces (and the batch is retried by the relay)
            // after this long instead of librdkafka's default of five minutes.
            .set("message.timeout.ms", "30000")
            // Java clients' partitioner, so a key lands on the same partition
            // whichever client wrote it.
            .set("partitioner", "murmur2_random")
            // A lost topic must be noticed and recreated with the configured
            // partitions, not silently auto-created with the broker's default.
            .set("allow.auto.create.topics", "false");
        self.apply_overrides(&mut config);
        config
    }

    fn apply_overrides(&self, config: &mut ClientConfig) {
        for (key, value) in &self.client_overrides {
            config.set(key, value);
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self::new("127.0.0.1:9092")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let settings = KafkaSettings::new("k:9092")
            .with_override("linger.ms", "50")
            .with_override("security.protocol", "ssl");
        let producer = settings.producer_config();
        assert_eq!(producer.get("linger.ms"), Some("50"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        let base = settings.client_config();
        assert_eq!(base.get("bootstrap.servers"), Some("k:9092"));
        assert_eq!(base.get("security.protocol"), Some("ssl"));
        assert_eq!(base.get("linger.ms"), Some("50"));
    }

    #[test]
    fn defaults() {
        let settings = KafkaSettings::default();
        assert_eq!(settings.topic, "parley.events");
        assert_eq!(settings.partitions, 12);
        assert_eq!(settings.replication_factor, 1);
    }
}
