//! `events tail` against a real broker (a Tansu of the test's own): what the relay
//! published comes back shaped like an export, filters apply, and a consumer
//! group reading the same topic is not disturbed.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_export::tail::{tail, StartAt, TailOptions};
use parley_export::{Filter, Format, Sink, Summary};
use parley_kafka::testing::OwnBroker;
use parley_kafka::{KafkaSettings, Relay};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::ClientContext;
use serde_json::json;
use support::*;

async fn publish(url: &str, settings: &KafkaSettings, events: u64) {
    let relay = Relay::connect(url, settings.clone()).await.expect("relay");
    let mut status = relay.status();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.published_total >= events),
    )
    .await
    .expect("the relay publishes the log")
    .unwrap();
    let _ = stop.send(true);
    let _ = task.await;
}

async fn run_tail(
    settings: &KafkaSettings,
    filter: Filter,
    start: StartAt,
    path: &std::path::Path,
) -> Summary {
    let format = Format::from_path(path).unwrap();
    let out = Box::new(std::fs::File::create(path).unwrap());
    tokio::time::timeout(
        Duration::from_secs(60),
        tail(
            settings,
            &filter,
            &TailOptions {
                start,
                follow: false,
                stored_shape: false,
                limit: None,
            },
            Sink::new(format, out).unwrap(),
            Arc::new(AtomicBool::new(false)),
        ),
    )
    .await
    .expect("the tail stops at the end offsets")
    .expect("tail")
}

/// Counts rebalances of a group member.
struct Counting(Arc<AtomicUsize>);
impl ClientContext for Counting {}
impl ConsumerContext for Counting {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_tail_reads_what_the_relay_published_without_disturbing_the_group() {
    let Some(broker) = OwnBroker::start() else {
        return;
    };
    let (log, url) = pg_log().await;
    seed(&log, 400).await;
    let settings = KafkaSettings::new(broker.addr.clone()).with_topic("parley.events");
    publish(&url, &settings, 400).await;

    // A projector-like group member that owns every partition before the tail starts.
    let rebalances = Arc::new(AtomicUsize::new(0));
    let member: StreamConsumer<Counting> = settings
        .client_config()
        .set("group.id", "parley-projections")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create_with_context(Counting(rebalances.clone()))
        .unwrap();
    member.subscribe(&["parley.events"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while member.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "the member got no partitions");
        let _ = tokio::time::timeout(Duration::from_millis(200), member.recv()).await;
    }
    let owned = member.assignment().unwrap().count();
    let rebalances_before = rebalances.load(Ordering::SeqCst);

    let dir = tempfile::tempdir().unwrap();
    let all_path = dir.path().join("all.jsonl");
    let summary = run_tail(&settings, Filter::default(), StartAt::Beginning, &all_path).await;
    let want = expected(&log, false).await;
    assert_eq!(summary.events, 400);
    assert_eq!(summary.redacted, 40);
    assert_eq!(summary.upcast, 40);
    let got = read_jsonl(&all_path);
    let ids: HashSet<_> = got.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 400);
    let by_id: HashMap<_, _> = want.iter().map(|e| (e.event_id, e)).collect();
    for e in &got {
        assert_eq!(
            Some(&e),
            by_id.get(&e.event_id),
            "tailed event differs from the log"
        );
        if e.event_type == "UserRegistered" {
            assert_eq!(e.payload["password_hash"], json!(null));
        }
    }

    // Parquet, filtered by type and time.
    let since = t0() + chrono::Duration::minutes(0) + chrono::Duration::seconds(1);
    let filter = Filter {
        types: vec!["MessageSent".into()],
        since: Some(since),
        ..Filter::default()
    };
    let want_filtered = want.iter().filter(|e| filter.matches(e)).count();
    let path = dir.path().join("sent.parquet");
    let summary = run_tail(&settings, filter.clone(), StartAt::Since(since), &path).await;
    assert_eq!(summary.events as usize, want_filtered);
    assert!(read_parquet(&path).iter().all(|e| filter.matches(e)));

    // Offsets: 0 is everything, past the end is nothing.
    let path = dir.path().join("offset.jsonl");
    let summary = run_tail(
        &settings,
        Filter::default(),
        StartAt::Offsets(vec![(None, 0)]),
        &path,
    )
    .await;
    assert_eq!(summary.events, 400);
    let summary = run_tail(
        &settings,
        Filter::default(),
        StartAt::Offsets(vec![(None, 1_000_000)]),
        &path,
    )
    .await;
    assert_eq!(summary.events, 0);

    // The group member kept its partitions all along: no rebalance happened.
    for _ in 0..10 {
        let _ = tokio::time::timeout(Duration::from_millis(200), member.recv()).await;
    }
    assert_eq!(rebalances.load(Ordering::SeqCst), rebalances_before);
    assert_eq!(member.assignment().unwrap().count(), owned);
}
