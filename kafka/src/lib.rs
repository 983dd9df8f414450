//! The events topic as Parley's Kafka parts share it: client settings
//! ([`KafkaSettings`]), the topic's creation and loss checks ([`TopicAdmin`]) and
//! the headers every record carries. The relay (`parley-relay`) publishes to it;
//! the projector group member (`parley_projections::kafka`) consumes it.

mod config;
mod signing;
/// Test support (brokers of a test's own): only in test builds.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod topic;

pub use config::{KafkaSettings, DEFAULT_PARTITIONS, DEFAULT_TOPIC};
pub use signing::{TopicKeys, MIN_KEY_BYTES, SIGNATURE_HEADER};
pub use topic::{
    ensure_topic, topic_exists, LossDetector, TopicAdmin, TopicState, TopicVerdict,
    MISSING_CHECKS_TO_RECREATE,
};

/// Header with the topic generation a record was published under. A relay that
/// recreates a lost topic publishes the whole log again under the next
/// generation; a member that meets a newer one knows the partition's offsets
/// started again from 0.
pub const GENERATION_HEADER: &str = "topic_generation";
