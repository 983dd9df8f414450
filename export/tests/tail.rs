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
use parley_kafka::KafkaSettings;
use parley_relay::Relay;
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
    // The relay publishes registrations stored as v1 (with a hash) as v2: the
    // topic holds no hash to redact.
    assert_eq!(summary.redacted, 0);
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

/// Waits until `path` holds at least `lines` complete lines; returns how many.
async fn wait_for_lines(path: &std::path::Path, lines: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = text.matches('\n').count();
        if complete >= lines {
            return complete;
        }
        assert!(
            Instant::now() < deadline,
            "{complete} of {lines} lines in {} after a minute",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `events tail --follow`: the tail catches up, keeps going, writes events
/// published later as they arrive (its output flushed while it waits, so a
/// reader sees them), and stops cleanly when asked.
#[tokio::test]
async fn a_following_tail_writes_later_events_as_they_arrive_and_stops_when_asked() {
    let Some(broker) = OwnBroker::start() else {
        return;
    };
    let (log, url) = pg_log().await;
    seed(&log, 100).await;
    let settings = KafkaSettings::new(broker.addr.clone()).with_topic("parley.events");
    // A relay running all along, as in production.
    let relay = Relay::connect(&url, settings.clone()).await.expect("relay");
    let relayed = relay.status();
    let (stop_relay, shutdown) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(relay.run(shutdown));
    let published = |n: u64| {
        let mut relayed = relayed.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(60),
                relayed.wait_for(|s| s.published_total >= n),
            )
            .await
            .expect("the relay publishes the log")
            .unwrap();
        }
    };
    published(100).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("follow.jsonl");
    let stop = Arc::new(AtomicBool::new(false));
    let following = {
        let (settings, stop) = (settings.clone(), stop.clone());
        let out = Box::new(std::fs::File::create(&path).unwrap());
        tokio::spawn(async move {
            tail(
                &settings,
                &Filter::default(),
                &TailOptions {
                    start: StartAt::Beginning,
                    follow: true,
                    stored_shape: false,
                    limit: None,
                },
                Sink::new(Format::Jsonl, out).unwrap(),
                stop,
            )
            .await
        })
    };
    assert_eq!(wait_for_lines(&path, 100).await, 100);

    // Later events reach the file while the tail runs.
    for n in 0..5 {
        append_raw(&log, "AnalystProbe", 1, json!({ "n": n })).await;
    }
    published(105).await;
    assert_eq!(wait_for_lines(&path, 105).await, 105);
    assert!(!following.is_finished(), "a following tail keeps running");
    let got = read_jsonl(&path);
    // Each probe is its own aggregate, so on its own partition: any order.
    let mut probes: Vec<i64> = got[100..]
        .iter()
        .map(|e| e.payload["n"].as_i64().unwrap())
        .collect();
    probes.sort_unstable();
    assert_eq!(probes, vec![0, 1, 2, 3, 4]);

    stop.store(true, Ordering::Relaxed);
    let summary = tokio::time::timeout(Duration::from_secs(10), following)
        .await
        .expect("the tail stops when asked")
        .unwrap()
        .expect("tail");
    assert_eq!(summary.events, 105);
    assert_eq!(summary.unknown, 5, "AnalystProbe is no type Parley knows");
    assert!(summary.partial, "stopped, not finished");
    let _ = stop_relay.send(true);
    let _ = relay_task.await;
}

/// With the topic's signing keys, the tail keeps only what the relay signed:
/// a record of a valid shape that another producer wrote is skipped and
/// counted, not written out as part of the log.
#[tokio::test]
async fn with_signing_keys_the_tail_skips_what_the_relay_did_not_sign() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let Some(broker) = OwnBroker::start() else {
        return;
    };
    let (log, url) = pg_log().await;
    seed(&log, 50).await;
    let keys =
        parley_kafka::TopicKeys::parse("a-signing-key-of-at-least-thirty-two-bytes").unwrap();
    let settings = KafkaSettings::new(broker.addr.clone())
        .with_topic("parley.events")
        .with_signing(keys);
    publish(&url, &settings, 50).await;

    // A forgery: a real event with another body, unsigned.
    let mut forged = expected(&log, false)
        .await
        .into_iter()
        .find(|e| e.event_type == "MessageSent")
        .unwrap();
    forged.event_id = uuid::Uuid::now_v7();
    forged.payload["body"] = json!("forged");
    let producer: FutureProducer = settings.producer_config().create().unwrap();
    let (key, value) = (
        forged.aggregate_id.to_string(),
        serde_json::to_vec(&forged).unwrap(),
    );
    producer
        .send(
            FutureRecord::to(&settings.topic).key(&key).payload(&value),
            Duration::from_secs(10),
        )
        .await
        .expect("published");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signed.jsonl");
    let summary = run_tail(&settings, Filter::default(), StartAt::Beginning, &path).await;
    assert_eq!((summary.events, summary.unsigned), (50, 1));
    assert!(read_jsonl(&path)
        .iter()
        .all(|e| e.event_id != forged.event_id));

    // Without the keys the forgery is indistinguishable: it comes out too.
    let mut unchecked = settings.clone();
    unchecked.signing = None;
    let summary = run_tail(&unchecked, Filter::default(), StartAt::Beginning, &path).await;
    assert_eq!((summary.events, summary.unsigned), (51, 0));
}
