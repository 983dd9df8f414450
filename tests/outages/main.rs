//! Database outages under load (issue 23, item 4), with real processes: the
//! event log and the read models each on a PostgreSQL cluster of the test's
//! own (`initdb`, `pg_ctl`), stopped and started again while clients send.
//!
//! The deployment is the scaled one (command API, relay, a Kafka-fed projector
//! and read API), plus a log-fed projector writing a second read database: at
//! the end both sets of read models must equal each other and hold every
//! acknowledged message once, so nothing was skipped or applied twice on
//! either feed.

mod broker;
mod failover;
mod proxy;
mod slow;
#[allow(dead_code)]
#[path = "../scaled/support.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_event_log::testing::PrivateCluster;
use serde_json::json;
use support::{dump_models, Client, Deployment, Proc};
use uuid::Uuid;

/// The tests of this binary one at a time: each runs a deployment of its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each database stays down (production outages last longer; the
/// paths taken are the same after the first failed connection).
const OUTAGE: Duration = Duration::from_secs(8);

/// Logged during the broker outage and the slow read model: more than the
/// memory bound asserted on the relay and the member.
const PADDING_MIB: usize = 64;

/// What the senders saw, by phase.
#[derive(Default)]
struct Seen {
    /// Status codes answered to sends.
    statuses: HashMap<u16, usize>,
    /// 503s without a `Retry-After` header.
    unavailable_without_retry_after: usize,
    /// Message ids the command API acknowledged (2xx), per room.
    acknowledged: HashMap<Uuid, Vec<Uuid>>,
}

impl Seen {
    fn took(&mut self) -> Self {
        std::mem::take(self)
    }

    fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Sends acknowledged (201 first, 200 for a retry that finds it done).
    fn succeeded(&self) -> usize {
        self.acknowledged.values().map(Vec::len).sum()
    }
}

/// Clients sending messages without pause; a send that fails (an answer of 5xx
/// or no answer) is retried with the same message id, as a real client would,
/// until it is acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(clients: Vec<(Arc<Client>, Uuid)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let senders = clients
            .into_iter()
            .map(|(client, room)| {
                let (stop, seen) = (stop.clone(), seen.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = Uuid::new_v4();
                        send_until_acknowledged(&client, room, id, &seen).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            seen,
            senders,
        }
    }

    /// What was seen since the last call.
    fn phase(&self) -> Seen {
        self.seen.lock().unwrap().took()
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for sender in self.senders {
            sender.await.expect("a sender panicked");
        }
        let seen = self.seen.lock().unwrap().took();
        seen
    }
}

async fn send_until_acknowledged(client: &Client, room: Uuid, id: Uuid, seen: &Mutex<Seen>) {
    loop {
        let answer = client
            .http
            .put(format!("{}/v1/rooms/{room}/messages/{id}", client.base))
            .bearer_auth(&client.token)
            .json(&json!({"body": format!("message {id}")}))
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        let Ok(answer) = answer else {
            // No answer at all: the retry below finds out what happened.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let status = answer.status().as_u16();
        {
            let mut s = seen.lock().unwrap();
            *s.statuses.entry(status).or_default() += 1;
            if answer.status().is_success() {
                s.acknowledged.entry(room).or_default().push(id);
                return;
            }
            if status == 503 && !answer.headers().contains_key("retry-after") {
                s.unavailable_without_retry_after += 1;
            }
        }
        assert!(
            status >= 500,
            "a send answered {status}: {}",
            answer.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET `url` until it answers `want` (other answers allowed meanwhile), within `within`.
async fn until_status(http: &reqwest::Client, url: &str, token: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = http
            .get(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if got.as_ref().is_ok_and(|&s| s == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {want} within {within:?} (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The answers of `url` over `period`, every 250 ms.
async fn statuses_over(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    period: Duration,
) -> HashSet<u16> {
    let mut seen = HashSet::new();
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(15))
            .send()
            .await
        {
            seen.insert(r.status().as_u16());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

async fn create_database(cluster: &PrivateCluster, name: &str) -> String {
    let admin = sqlx::PgPool::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    cluster.url(name)
}

/// The command API, the relay, a member of the projector group (writing the
/// deployment's read database), and a log-fed projector writing `log_fed_url`:
/// two feeds whose read models must end equal.
async fn write_side_and_projectors(
    dep: &Deployment,
    log_fed_url: &str,
) -> (Proc, Proc, Proc, Proc) {
    let commands = dep
        .service(&["command-api", "--migrate", "--db-pool-size", "4"])
        .await;
    let relay = dep.relay().await;
    let member = dep.projector();
    let args = ["projector", "--feed", "log", "--db-pool-size", "2"];
    let mut log_fed = dep.spawn_with(&args, &[("PARLEY_READ_DATABASE_URL", log_fed_url)]);
    log_fed.until_ready(&args, Duration::from_secs(60)).await;
    (commands, relay, member, log_fed)
}

/// The log at `log` holds every send acknowledged in `phases` once, and no
/// other (clients retry a send until it is acknowledged).
async fn log_holds_each_acknowledged_send_once(log: &sqlx::PgPool, phases: &[&Seen]) {
    let acknowledged: HashSet<Uuid> = phases
        .iter()
        .flat_map(|phase| phase.acknowledged.values().flatten().copied())
        .collect();
    let sent: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT aggregate_id, COUNT(*) FROM events WHERE event_type = 'MessageSent' GROUP BY 1",
    )
    .fetch_all(log)
    .await
    .unwrap();
    assert!(sent.iter().all(|(_, n)| *n == 1), "a message sent twice");
    let in_log: HashSet<Uuid> = sent.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        in_log, acknowledged,
        "the log against the acknowledged sends"
    );
}

/// `n` registered users, each sending into a room of their own.
async fn senders(command_base: &str, n: usize) -> Vec<(Arc<Client>, Uuid)> {
    let mut clients = Vec::new();
    for i in 0..n {
        let client = Client::register(command_base, &format!("sender{i}")).await;
        let room = client.create_room(&format!("room {i}")).await;
        clients.push((Arc::new(client), room));
    }
    clients
}

/// Waits until the history model at `read_url` holds every message of the
/// log; what is still missing after `within`, with its place in the log.
async fn until_all_projected(
    log: &sqlx::PgPool,
    read_url: &str,
    within: Duration,
) -> Vec<(Uuid, String, i64, String)> {
    let read = sqlx::PgPool::connect(read_url).await.unwrap();
    let deadline = Instant::now() + within;
    loop {
        let projected: HashSet<String> =
            sqlx::query_scalar("SELECT message_id FROM history_messages")
                .fetch_all(&read)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let sent: Vec<(Uuid, String, i64, String)> = sqlx::query_as(
            "SELECT aggregate_id, tx_id::text, position, recorded_at::text FROM events
              WHERE event_type = 'MessageSent' ORDER BY position",
        )
        .fetch_all(log)
        .await
        .unwrap();
        let missing: Vec<_> = sent
            .into_iter()
            .filter(|(id, ..)| !projected.contains(&id.to_string()))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
                let around: Vec<(i64, String, String)> = sqlx::query_as(
                    "SELECT position, tx_id::text, event_type FROM events
                      WHERE position BETWEEN $1 - 15 AND $2 + 15 ORDER BY position",
                )
                .bind(first.2)
                .bind(last.2)
                .fetch_all(log)
                .await
                .unwrap();
                eprintln!("around the missing ones: {around:?}");
                let parked: Vec<(String, String)> = sqlx::query_as(
                    "SELECT projection, error FROM projection_dead_letters LIMIT 20",
                )
                .fetch_all(&read)
                .await
                .unwrap();
                eprintln!("parked: {parked:?}");
            }
            read.close().await;
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One scrape of `{base}/metrics`, as text.
async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A process's resident memory, in KiB (`VmRSS`; 0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Appends `mib` MiB of events no read model reads (4 KiB payloads), so that a
/// test puts more through the relay and the members than the memory bound it
/// asserts: a process that buffered everything would break the bound.
async fn pad_log(log_url: &str, mib: usize) {
    use parley_event_log::{AppendRequest, Metadata, NewEvent, StreamWrite};
    let log = parley_event_log::open(log_url, 2).await.unwrap();
    let filler = "x".repeat(4096);
    for _ in 0..mib * 256 / 64 {
        let events = (0..64)
            .map(|_| NewEvent {
                event_type: "Padding".into(),
                event_version: 1,
                payload: json!({ "filler": filler }),
            })
            .collect();
        log.append(AppendRequest {
            streams: vec![StreamWrite {
                aggregate_type: "test-padding".into(),
                aggregate_id: Uuid::now_v7(),
                expected_version: 0,
                events,
            }],
            metadata: Metadata::default(),
            recorded_at: chrono::Utc::now(),
            idempotency: None,
        })
        .await
        .unwrap();
    }
}

/// Every process is still running (none crashed on the outage).
fn all_alive(processes: &mut [(&str, &mut Proc)]) {
    for (name, proc) in processes {
        let exited = proc.child.try_wait().expect("process status");
        assert!(exited.is_none(), "{name} exited: {exited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_and_the_read_databases_stopped_under_load_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let log_cluster = PrivateCluster::start();
    let read_cluster = PrivateCluster::start();
    let log_url = create_database(&log_cluster, "parley").await;
    let read_url = create_database(&read_cluster, "parley").await;
    let log_fed_url = create_database(&read_cluster, "parley_log_fed").await;
    let Some(dep) = Deployment::on(log_url.clone(), read_url.clone()) else {
        return;
    };

    let (mut commands, mut relay, mut member, mut log_fed) =
        write_side_and_projectors(&dep, &log_fed_url).await;
    let mut reads = dep.service(&["read-api", "--feed", "kafka"]).await;
    let command_base = commands.base.clone().unwrap();
    let read_base = reads.base.clone().unwrap();

    let clients = senders(&command_base, 4).await;
    let (reader, reader_room) = (clients[0].0.clone(), clients[0].1);
    let http = reqwest::Client::new();
    let history_url = format!("{read_base}/v1/rooms/{reader_room}/messages?limit=10");

    // Warm: everything answers.
    let load = Load::start(clients);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warm = load.phase();
    assert!(
        warm.succeeded() > 0,
        "no send succeeded before the outage: {:?}",
        warm.statuses
    );

    // The event log's database goes away.
    log_cluster.ctl_stop();
    let stopped = Instant::now();
    until_status(
        &http,
        &format!("{command_base}/health/ready"),
        "",
        503,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    log_cluster.ctl_start();
    until_status(
        &http,
        &format!("{command_base}/health/ready"),
        "",
        200,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log_outage = load.phase();
    assert!(
        log_outage.count(503) > 0,
        "no send was refused while the log was down: {:?}",
        log_outage.statuses
    );
    assert_eq!(log_outage.count(500), 0, "{:?}", log_outage.statuses);
    assert_eq!(log_outage.unavailable_without_retry_after, 0);
    assert!(
        log_outage.succeeded() > 0,
        "no send succeeded after the log came back"
    );

    // The read models' database goes away: commands go on, queries say 503.
    read_cluster.ctl_stop();
    let stopped = Instant::now();
    until_status(
        &http,
        &history_url,
        &reader.token,
        503,
        Duration::from_secs(15),
    )
    .await;
    until_status(
        &http,
        &format!("{read_base}/health/ready"),
        "",
        503,
        Duration::from_secs(10),
    )
    .await;
    let during = statuses_over(
        &http,
        &format!("{read_base}/v1/stream"),
        &reader.token,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        during,
        HashSet::from([503]),
        "the stream while the read database is down"
    );
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    let read_outage_sends = load.phase();
    read_cluster.ctl_start();
    until_status(
        &http,
        &history_url,
        &reader.token,
        200,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        read_outage_sends.succeeded() > 0
            && read_outage_sends
                .statuses
                .keys()
                .all(|s| (200..300).contains(s)),
        "commands while the read database was down: {:?}",
        read_outage_sends.statuses
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.finish().await;
    assert_eq!(after.count(500), 0, "{:?}", after.statuses);
    all_alive(&mut [
        ("command-api", &mut commands),
        ("relay", &mut relay),
        ("projector --feed kafka", &mut member),
        ("projector --feed log", &mut log_fed),
        ("read-api", &mut reads),
    ]);

    // Every acknowledged message is in the log once, and nothing else is.
    let log = sqlx::PgPool::connect(&log_url).await.unwrap();
    log_holds_each_acknowledged_send_once(&log, &[&warm, &log_outage, &read_outage_sends, &after])
        .await;

    // Both feeds caught up and built the same read models from it.
    for (feed, url) in [("kafka", &read_url), ("log", &log_fed_url)] {
        let missing = until_all_projected(&log, url, Duration::from_secs(60)).await;
        assert!(
            missing.is_empty(),
            "fed by {feed}, {} messages never reached history: {missing:?}",
            missing.len()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (by_kafka, by_log) = (
            dump_models(&read_url).await,
            dump_models(&log_fed_url).await,
        );
        if by_kafka == by_log {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the read models differ between feeds:\n{}",
            support::difference(&by_kafka, &by_log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
