//! Invariant 4 against an operator's reset (issue 23, item 8): members resume
//! from the offsets stored with the read models, never from Kafka's committed
//! offsets. Resetting the group's committed offsets past the end (as
//! `kafka-consumer-groups.sh --reset-offsets --to-latest` would) while every
//! member is down skips nothing.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::send_all;
use crate::support::{wait_for_messages, Client, Deployment};

/// An offset past the end of every partition of the test's topic.
const PAST_THE_END: i64 = 1_000_000;

/// Commits `offset` for every partition of the topic as the group's, from a
/// client outside the group (the group is empty: every member is down).
fn reset_group(dep: &Deployment, partitions: i32, offset: i64) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &dep.broker.addr)
        .set("group.id", &dep.group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(&dep.topic, p, Offset::Offset(offset))
            .expect("an offset");
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .expect("the group's offsets reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_reset_past_the_end_while_members_are_down_skips_nothing() {
    let Some(dep) = Deployment::new().await else {
        return;
    };
    let command_api = dep.service(&["command-api", "--migrate"]).await;
    let _relay = dep.relay().await;
    let member = dep.projector();
    let client = Client::register(command_api.base.as_deref().unwrap(), "dora").await;
    let mut rooms: Vec<Uuid> = Vec::new();
    for i in 0..4 {
        rooms.push(client.create_room(&format!("room {i}")).await);
    }
    send_all(&client, &rooms, 10).await;
    wait_for_messages(&dep.read_url, 40, Duration::from_secs(120)).await;

    // Every member down; more messages arrive meanwhile.
    member.kill().await;
    send_all(&client, &rooms, 10).await;

    // The operator moves the group's committed offsets past the end.
    let settings = parley_kafka::KafkaSettings::new(&dep.broker.addr).with_topic(&dep.topic);
    reset_group(&dep, 6, PAST_THE_END);
    let committed = parley_projections::kafka::status::committed_offsets(&settings, &dep.group)
        .await
        .unwrap();
    assert!(
        !committed.is_empty() && committed.values().all(|&o| o == PAST_THE_END),
        "the reset did not take: {committed:?}"
    );

    // A new member starts where the read models stopped, not where Kafka says.
    let _member = dep.projector();
    wait_for_messages(&dep.read_url, 80, Duration::from_secs(120)).await;
}
