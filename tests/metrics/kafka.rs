//! The scaled mode's figures through a real broker (Tansu, a broker of the
//! test's own). Without `tansu` this skips, unless `PARLEY_KAFKA_TESTS=1`.

use std::time::Duration;

use parley_event_log::testing::fresh_database;
use parley_kafka::testing::OwnBroker;
use uuid::Uuid;

use crate::support::{spawn, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_and_a_member_report_published_applied_and_partition_lag() {
    let Some(broker) = OwnBroker::start() else {
        return;
    };
    let (log_url, read_url) = (
        fresh_database().await.unwrap(),
        fresh_database().await.unwrap(),
    );
    let id = Uuid::new_v4().simple().to_string();
    let (topic, group) = (
        format!("parley.metrics.{id}"),
        format!("parley-metrics-{id}"),
    );
    let env = [
        ("PARLEY_DATABASE_URL", log_url.as_str()),
        ("PARLEY_READ_DATABASE_URL", read_url.as_str()),
        ("PARLEY_KAFKA_BROKERS", broker.addr.as_str()),
        ("PARLEY_KAFKA_TOPIC", topic.as_str()),
        ("PARLEY_KAFKA_GROUP", group.as_str()),
    ];
    let api = spawn(&["command-api", "--migrate"], &env, None).await;
    let gina = User::register(&api.base, "gina").await;
    let room = gina.create_room().await;
    for _ in 0..5 {
        assert_eq!(
            gina.send(room, Uuid::now_v7(), "via kafka")
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }

    let relay = spawn(&["relay", "--partitions", "3"], &env, None).await;
    let relayed = relay
        .scrape_until("relay", Duration::from_secs(60), |s| {
            s.value("parley_relay_published_total", &[]) >= 7.0
                && s.get("parley_relay_lag_events", &[]) == Some(0.0)
        })
        .await;
    assert_eq!(relayed.get("parley_relay_leader", &[]), Some(1.0));
    let last = relayed.value("parley_relay_last_publish_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - last < 120.0 && last <= now + 1.0,
        "last publish at {last}, now {now}"
    );

    let member = spawn(
        &[
            "projector",
            "--feed",
            "kafka",
            "--session-timeout-ms",
            "6000",
        ],
        &env,
        None,
    )
    .await;
    member.wait_for("/health/ready").await;
    let history = [("projection", "history")];
    let scrape = member
        .scrape_until("projector-kafka", Duration::from_secs(90), |s| {
            s.value("parley_projection_applied_total", &history) >= 5.0
                && (0..3).all(|p| {
                    let p = p.to_string();
                    s.get(
                        "parley_projection_lag",
                        &[("projection", "history"), ("partition", p.as_str())],
                    )
                    .is_some()
                })
        })
        .await;
    assert!(scrape.value("parley_projection_batch_duration_seconds_count", &history) >= 1.0);
    assert_eq!(
        scrape.value("parley_projection_dead_letters_total", &history),
        0.0
    );
    // Every event applied: the lag comes down to 0 on every partition.
    member
        .scrape_until("projector-kafka", Duration::from_secs(30), |s| {
            s.get("parley_projection_lag", &history) == Some(0.0)
        })
        .await;
}
