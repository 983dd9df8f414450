//! The events topic: created with the configured partitions, and watched for loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// Whether the broker lists the topic, ready to use.
    pub async fn exists(&self) -> Result<bool, KafkaError> {
        Ok(self.state().await? == TopicState::Present)
    }

    /// What the cluster says of the topic. Asks for every topic's metadata,
    /// which (unlike asking for one topic) never makes a broker auto-create it.
    pub async fn state(&self) -> Result<TopicState, KafkaError> {
        let admin = self.admin.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = admin.inner().fetch_metadata(None, ADMIN_TIMEOUT)?;
            let listed = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| (t.error(), t.partitions().len()));
            Ok(TopicState::judge(listed.map(|(error, partitions)| {
                (error.map(RDKafkaErrorCode::from), partitions)
            })))
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}

/// What one metadata answer says of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// Listed, with partitions and no error.
    Present,
    /// Not listed, or listed as unknown: the cluster says it has no such topic.
    Missing,
    /// Listed with another error, or without partitions (a leader election, a
    /// broker that just restarted): says nothing about loss.
    Unclear,
}

impl TopicState {
    /// Judges the topic's entry in an all-topics metadata answer (`None`: not
    /// listed), as its error code and partition count.
    pub fn judge(listed: Option<(Option<RDKafkaErrorCode>, usize)>) -> Self {
        match listed {
            None | Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _)) => Self::Missing,
            Some((None, partitions)) if partitions > 0 => Self::Present,
            Some(_) => Self::Unclear,
        }
    }
}

/// How many checks in a row must find the topic missing before a relay that
/// has published to it believes it lost: recreating it republishes the whole
/// log, so one odd metadata answer must not be enough.
pub const MISSING_CHECKS_TO_RECREATE: u32 = 3;

/// Turns a relay's successive topic checks into a decision. A topic the relay
/// has published to counts as lost only when [`MISSING_CHECKS_TO_RECREATE`]
/// checks in a row, spread over at least `lost_after`, found it missing: a
/// broker that lists no topics for a moment after a restart is not a loss.
#[derive(Debug)]
pub struct LossDetector {
    lost_after: Duration,
    /// The first of the current run of missing answers, and how many.
    missing_since: Option<(Instant, u32)>,
}

/// What a relay does after a topic check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicVerdict {
    /// Publish.
    Publish,
    /// Check again after a backoff; do not publish meanwhile.
    CheckAgain,
    /// Create the topic (and republish from the start of the log).
    Recreate,
}

impl LossDetector {
    pub fn new(lost_after: Duration) -> Self {
        Self {
            lost_after,
            missing_since: None,
        }
    }

    /// `published_before`: whether this topic ever got events from the relay
    /// (a never-published topic is created at once: there is nothing to redo).
    pub fn observe(
        &mut self,
        state: TopicState,
        published_before: bool,
        now: Instant,
    ) -> TopicVerdict {
        match state {
            TopicState::Present => {
                self.missing_since = None;
                TopicVerdict::Publish
            }
            TopicState::Unclear => {
                self.missing_since = None;
                TopicVerdict::CheckAgain
            }
            TopicState::Missing => {
                let (since, seen) = self.missing_since.get_or_insert((now, 0));
                *seen += 1;
                let long_enough = now.duration_since(*since) >= self.lost_after;
                if !published_before || (*seen >= MISSING_CHECKS_TO_RECREATE && long_enough) {
                    self.missing_since = None;
                    TopicVerdict::Recreate
                } else {
                    TopicVerdict::CheckAgain
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unknown_answer_is_missing() {
        assert_eq!(TopicState::judge(Some((None, 8))), TopicState::Present);
        assert_eq!(TopicState::judge(None), TopicState::Missing);
        assert_eq!(
            TopicState::judge(Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), 0))),
            TopicState::Missing
        );
        for transient in [
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::BrokerNotAvailable,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            assert_eq!(
                TopicState::judge(Some((Some(transient), 8))),
                TopicState::Unclear
            );
        }
        assert_eq!(TopicState::judge(Some((None, 0))), TopicState::Unclear);
    }

    /// Attack (issue 21, item 11). Fails before: one metadata answer listing
    /// the topic with a transient error (or without partitions), or not
    /// listing it for a moment, made the relay recreate it and republish the
    /// whole log.
    #[test]
    fn a_published_topic_is_recreated_only_after_missing_for_a_while() {
        let lost_after = Duration::from_secs(30);
        let mut detector = LossDetector::new(lost_after);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            detector.observe(TopicState::Unclear, true, at(0)),
            TopicVerdict::CheckAgain
        );
        // Many missing answers within a few seconds are not enough...
        for s in 0..5 {
            assert_eq!(
                detector.observe(TopicState::Missing, true, at(s)),
                TopicVerdict::CheckAgain
            );
        }
        // ...and any other answer starts the count again.
        assert_eq!(
            detector.observe(TopicState::Unclear, true, at(40)),
            TopicVerdict::CheckAgain
        );
        assert_eq!(
            detector.observe(TopicState::Missing, true, at(41)),
            TopicVerdict::CheckAgain
        );
        assert_eq!(
            detector.observe(TopicState::Present, true, at(50)),
            TopicVerdict::Publish
        );
        // Missing, again and again, for as long as `lost_after`: lost.
        assert_eq!(
            detector.observe(TopicState::Missing, true, at(60)),
            TopicVerdict::CheckAgain
        );
        assert_eq!(
            detector.observe(TopicState::Missing, true, at(75)),
            TopicVerdict::CheckAgain
        );
        assert_eq!(
            detector.observe(TopicState::Missing, true, at(89)),
            TopicVerdict::CheckAgain
        );
        assert_eq!(
            detector.observe(TopicState::Missing, true, at(90)),
            TopicVerdict::Recreate
        );
    }

    #[test]
    fn a_topic_never_published_to_is_created_at_once() {
        let mut detector = LossDetector::new(Duration::from_secs(30));
        let now = Instant::now();
        assert_eq!(
            detector.observe(TopicState::Missing, false, now),
            TopicVerdict::Recreate
        );
        assert_eq!(
            detector.observe(TopicState::Unclear, false, now),
            TopicVerdict::CheckAgain
        );
    }
}
