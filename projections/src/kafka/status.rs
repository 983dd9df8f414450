//! What `parley projections status` prints for the scaled mode: per projection
//! and partition, the offset applied, the topic's end offset, the lag, and which
//! group member owns the partition now.

use std::collections::HashMap;
use std::time::Duration;

use crate::kafka::partitions::stored_offsets;
use crate::ReadStore;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use sqlx::Row;

use parley_kafka::KafkaSettings;

/// A member whose row is older than this is not counted as an owner.
const MEMBER_STALE: Duration = Duration::from_secs(30);

/// One projection's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub projection: String,
    pub partition: i32,
    /// The next offset the projection will apply (0: none applied yet).
    pub next_offset: i64,
    /// The partition's end offset (high watermark).
    pub end_offset: i64,
    /// Messages not applied yet: `end_offset - next_offset`, never below 0.
    pub lag: i64,
    /// The member that owns the partition now (`host:pid:id`), if one reported
    /// in the last 30 s.
    pub owner: Option<String>,
}

/// Reads the lag of `projections` on the topic of `settings`.
pub async fn partition_lag(
    settings: &KafkaSettings,
    store: &ReadStore,
    projections: &[&str],
) -> anyhow::Result<Vec<PartitionLag>> {
    let ends = end_offsets(settings).await?;
    let owners = owners(store, &settings.topic).await?;
    let mut rows = Vec::new();
    for &projection in projections {
        let stored = stored_offsets(store, projection, &settings.topic).await?;
        for (&partition, &end) in &ends {
            let next = stored.get(&partition).map_or(0, |at| at.next_offset);
            rows.push(PartitionLag {
                projection: projection.to_string(),
                partition,
                next_offset: next,
                end_offset: end,
                lag: (end - next).max(0),
                owner: owners.get(&partition).cloned(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.projection, a.partition).cmp(&(&b.projection, b.partition)));
    Ok(rows)
}

/// What the read-model database alone tells of `projections` on `topic`: each
/// stored partition's next offset and owner, for when the broker cannot say
/// where the partitions end (it is down). `end_offset` and `lag` are -1.
pub async fn stored_positions(
    store: &ReadStore,
    topic: &str,
    projections: &[&str],
) -> anyhow::Result<Vec<PartitionLag>> {
    let owners = owners(store, topic).await?;
    let mut rows = Vec::new();
    for &projection in projections {
        for (partition, at) in stored_offsets(store, projection, topic).await? {
            rows.push(PartitionLag {
                projection: projection.to_string(),
                partition,
                next_offset: at.next_offset,
                end_offset: -1,
                lag: -1,
                owner: owners.get(&partition).cloned(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.projection, a.partition).cmp(&(&b.projection, b.partition)));
    Ok(rows)
}

/// The high watermark of every partition of the topic.
async fn end_offsets(
    settings: &KafkaSettings,
) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
    let config = settings.client_config();
    let topic = settings.topic.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            anyhow::bail!("topic {topic} not found");
        };
        if found.partitions().is_empty() {
            anyhow::bail!("topic {topic} has no partitions (does it exist?)");
        }
        let mut ends = std::collections::BTreeMap::new();
        for p in found.partitions() {
            let (_, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
            ends.insert(p.id(), high);
        }
        Ok(ends)
    })
    .await?
}

/// Which member reported owning each partition, among recent reports.
async fn owners(store: &ReadStore, topic: &str) -> Result<HashMap<i32, String>, sqlx::Error> {
    let since = chrono::Utc::now().timestamp_micros() - MEMBER_STALE.as_micros() as i64;
    let rows = sqlx::query(
        "SELECT member_id, partitions FROM projector_members
         WHERE topic = $1 AND updated_at >= $2 ORDER BY updated_at",
    )
    .bind(topic)
    .bind(since)
    .fetch_all(store.pool())
    .await?;
    let mut owners = HashMap::new();
    for row in rows {
        let member: String = row.try_get("member_id")?;
        let partitions: String = row.try_get("partitions")?;
        for p in partitions
            .split(',')
            .filter_map(|p| p.trim().parse::<i32>().ok())
        {
            // Newest report last: it wins.
            owners.insert(p, member.clone());
        }
    }
    Ok(owners)
}

/// The offsets `group` committed to Kafka, per partition of the topic (members
/// commit them for information after each applied batch; absent: none yet).
/// Reads them without joining the group.
pub async fn committed_offsets(
    settings: &KafkaSettings,
    group: &str,
) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
    let ends = end_offsets(settings).await?;
    let mut config = settings.client_config();
    config.set("group.id", group);
    let topic = settings.topic.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let mut list = rdkafka::TopicPartitionList::new();
        for partition in ends.keys() {
            list.add_partition(&topic, *partition);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    })
    .await?
}
