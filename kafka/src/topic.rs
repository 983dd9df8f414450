//! The events topic: created with the configured partitions, and watched for loss.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::KafkaSettings;

/// How long an admin request or a metadata fetch may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An admin client for one topic.
#[derive(Clone)]
pub struct TopicAdmin {
    admin: Arc<AdminClient<DefaultClientContext>>,
    topic: String,
    partitions: i32,
    replication_factor: i32,
}

impl TopicAdmin {
    /// An admin client for the settings' topic. Connects lazily.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let admin = settings.client_config().create()?;
        Ok(Self {
            admin: Arc::new(admin),
            topic: settings.topic.clone(),
            partitions: settings.partitions,
            replication_factor: settings.replication_factor,
        })
    }

    /// The topic this admin looks after.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Creates the topic unless it exists. Returns whether it had to be created.
    pub async fn ensure(&self) -> Result<bool, KafkaError> {
        if self.exists().await? {
            return Ok(false);
        }
        self.create().await
    }

    /// Creates the topic with the configured partitions and replication. Returns
    /// false if it exists already.
    pub async fn create(&self) -> Result<bool, KafkaError> {
        let new_topic = NewTopic::new(
            &self.topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        let options = AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self.admin.create_topics([&new_topic], &options).await?;
        for result in results {
            match result {
                Ok(_) => {}
                // Another relay (or an operator) was quicker: the topic is there.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        tracing::info!(topic = %self.topic, partitions = self.partitions, "topic created");
        Ok(true)
    }

    /// Deletes the topic (benchmarks and tests free a broker's memory with it).
    pub async fn delete(&self) -> Result<(), KafkaError> {
        let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
        for result in self.admin.delete_topics(&[&self.topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    }

    /// Whether the broker lists the topic. Asks for every topic's metadata, which
    /// (unlike asking for one topic) never makes a broker auto-create it.
    pub async fn exists(&self) -> Result<bool, KafkaError> {
        let admin = self.admin.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = admin.inner().fetch_metadata(None, ADMIN_TIMEOUT)?;
            Ok(metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}

/// Creates the settings' topic unless it exists. Returns whether it had to be created.
pub async fn ensure_topic(settings: &KafkaSettings) -> Result<bool, KafkaError> {
    TopicAdmin::new(settings)?.ensure().await
}

/// Whether the settings' topic exists on the cluster.
pub async fn topic_exists(settings: &KafkaSettings) -> Result<bool, KafkaError> {
    TopicAdmin::new(settings)?.exists().await
}
