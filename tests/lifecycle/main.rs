//! SIGTERM against real processes on Postgres: requests in flight finish, open
//! streams and WebSockets are told where to resume, a projector commits what it applied, and
//! every process exits 0 within its shutdown timeout.

#[path = "../metrics/support.rs"]
#[allow(dead_code)]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parley_event_log::testing::fresh_database;
use sqlx::{Connection, PgConnection};
use support::{spawn, Service, User};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// Sends SIGTERM to the service's process.
fn terminate(service: &Service) {
    let pid = service.child.id().expect("the process is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Waits for the process to exit (at most `within`); returns its exit status
/// and how long after `since` it came.
async fn exit_of(
    service: &mut Service,
    since: Instant,
    within: Duration,
) -> (std::process::ExitStatus, Duration) {
    let status = tokio::time::timeout(within, service.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the process did not exit within {within:?} of SIGTERM"))
        .expect("wait for the process");
    (status, since.elapsed())
}

/// A command API that migrates the fresh log at `log`.
async fn command_api(log: &str) -> Service {
    spawn(
        &["command-api"],
        &[("PARLEY_DATABASE_URL", log), ("PARLEY_MIGRATE", "true")],
        None,
    )
    .await
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut db = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}

/// Outcome of one send under load.
struct Sent {
    status: Result<u16, String>,
    answered: Instant,
}

/// Senders, each on a fresh connection per request (as behind a load balancer:
/// no request rides a connection the server is closing), until `stop`.
fn load(users: Vec<User>, rooms: Vec<Uuid>, stop: Arc<AtomicBool>) -> JoinSet<Vec<Sent>> {
    let mut senders = JoinSet::new();
    for (user, room) in users.into_iter().zip(rooms) {
        let stop = stop.clone();
        senders.spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let mut sent = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let request = http
                    .put(format!(
                        "{}/v1/rooms/{room}/messages/{}",
                        user.base,
                        Uuid::now_v7()
                    ))
                    .bearer_auth(&user.token)
                    .json(&serde_json::json!({"body": "under load"}));
                let status = request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| format!("{e:?}"));
                sent.push(Sent {
                    status,
                    answered: Instant::now(),
                });
            }
            sent
        });
    }
    senders
}

/// Polls `/health/ready` on fresh connections until it answers 503 (the signal
/// was handled), as a load balancer would; fails after 5 s.
async fn until_not_ready(service: &Service) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http
            .get(format!("{}/health/ready", service.base))
            .send()
            .await
            .expect("the service still accepts during the shutdown delay");
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["status"], "draining");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readiness stayed 200 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_command_api_drains_requests_in_flight_and_exits_0_in_time() {
    let log = fresh_database().await.unwrap();
    let mut api = spawn(
        &["command-api"],
        &[
            ("PARLEY_DATABASE_URL", log.as_str()),
            ("PARLEY_MIGRATE", "true"),
            ("PARLEY_SHUTDOWN_DELAY_SECS", "1"),
            ("PARLEY_SHUTDOWN_TIMEOUT_SECS", "10"),
        ],
        None,
    )
    .await;
    let mut users = Vec::new();
    let mut rooms = Vec::new();
    for i in 0..8 {
        let user = User::register(&api.base, &format!("sender{i}")).await;
        rooms.push(user.create_room().await);
        users.push(user);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = load(users, rooms, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let signalled = Instant::now();
    terminate(&api);
    until_not_ready(&api).await;
    // The load balancer has taken the instance out: no new requests.
    stop.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    while let Some(batch) = senders.join_next().await {
        sent.extend(batch.unwrap());
    }
    let (status, after) = exit_of(&mut api, signalled, Duration::from_secs(15)).await;

    assert!(status.success(), "exit status {status:?}");
    assert!(
        after < Duration::from_secs(10),
        "exited {after:?} after SIGTERM"
    );
    let failed: Vec<&Result<u16, String>> = sent
        .iter()
        .map(|s| &s.status)
        .filter(|s| **s != Ok(201))
        .collect();
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    let during_drain = sent.iter().filter(|s| s.answered > signalled).count();
    assert!(during_drain > 0, "no request was answered after the signal");
    let stored = count(
        &log,
        "SELECT count(*) FROM events WHERE event_type = 'MessageSent'",
    )
    .await;
    assert_eq!(
        stored as usize,
        sent.len(),
        "every answered send is in the log"
    );
}

#[tokio::test]
async fn a_read_api_ends_streams_and_sockets_with_where_to_resume_and_exits_0_at_once() {
    let log = fresh_database().await.unwrap();
    let read = fresh_database().await.unwrap();
    let api = command_api(&log).await;
    // The projectors create the read models' tables.
    let projector = spawn(
        &["projector"],
        &[
            ("PARLEY_DATABASE_URL", log.as_str()),
            ("PARLEY_READ_DATABASE_URL", read.as_str()),
        ],
        None,
    )
    .await;
    projector.wait_for("/health/ready").await;
    let mut reader = spawn(
        &["read-api"],
        &[
            ("PARLEY_DATABASE_URL", log.as_str()),
            ("PARLEY_READ_DATABASE_URL", read.as_str()),
            // Long: an open stream must not hold the exit up until it passes.
            ("PARLEY_SHUTDOWN_TIMEOUT_SECS", "30"),
        ],
        None,
    )
    .await;
    let alice = User::register(&api.base, "alice").await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/stream", reader.base))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the first frame")
            .expect("the stream is open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let hello = text.clone();
    let start_id = hello
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .expect("the first frame carries an id")
        .trim()
        .to_string();
    // And a WebSocket.
    let mut request = format!("{}/v1/ws", reader.base.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", alice.token).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let socket_hello: serde_json::Value =
        serde_json::from_str(&socket.next().await.unwrap().unwrap().to_string()).unwrap();
    assert_eq!(socket_hello["type"], "hello", "{socket_hello}");
    let socket_start = socket_hello["after"].as_str().unwrap().to_string();

    let signalled = Instant::now();
    terminate(&reader);
    // The socket: a goodbye frame, then close code 1012 with the id to
    // resume after.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut frames = Vec::new();
        while let Some(frame) = socket.next().await {
            match frame.expect("the socket broke instead of closing") {
                Message::Close(close) => return (frames, close),
                other => frames.push(other.to_string()),
            }
        }
        panic!("the socket ended without a close frame: {frames:?}")
    })
    .await
    .expect("the socket was not closed after SIGTERM");
    let (frames, close) = closed;
    assert!(frames.iter().any(|f| f.contains("goodbye")), "{frames:?}");
    let close = close.expect("a close code");
    assert_eq!(u16::from(close.code), 1012);
    assert_eq!(close.reason.as_str(), socket_start);
    // Everything after the hello until the server closes the stream.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = String::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => rest.push_str(std::str::from_utf8(&chunk).unwrap()),
                Err(e) => panic!("the stream broke instead of ending: {e}"),
            }
        }
        rest
    })
    .await
    .expect("the stream was not closed after SIGTERM");
    let goodbye = rest.trim_start_matches(&hello);
    assert!(goodbye.contains("shutting down"), "{goodbye:?}");
    assert!(
        goodbye.contains("retry: 1000") || goodbye.contains("retry:1000"),
        "{goodbye:?}"
    );
    assert!(goodbye.contains(&start_id), "resume id in {goodbye:?}");
    let (status, after) = exit_of(&mut reader, signalled, Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        after < Duration::from_secs(10),
        "an open stream held the exit up for {after:?}"
    );
}

#[tokio::test]
async fn a_projector_commits_what_it_applied_and_exits_0_under_load() {
    let log = fresh_database().await.unwrap();
    let read = fresh_database().await.unwrap();
    let api = command_api(&log).await;
    let mut projector = spawn(
        &["projector"],
        &[
            ("PARLEY_DATABASE_URL", log.as_str()),
            ("PARLEY_READ_DATABASE_URL", read.as_str()),
            ("PARLEY_PROJECTION", "history"),
            ("PARLEY_SHUTDOWN_TIMEOUT_SECS", "10"),
        ],
        None,
    )
    .await;
    projector.wait_for("/health/ready").await;
    let mut users = Vec::new();
    let mut rooms = Vec::new();
    for i in 0..4 {
        let user = User::register(&api.base, &format!("sender{i}")).await;
        rooms.push(user.create_room().await);
        users.push(user);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = load(users, rooms, stop.clone());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let signalled = Instant::now();
    terminate(&projector);
    let (status, after) = exit_of(&mut projector, signalled, Duration::from_secs(15)).await;
    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    while let Some(batch) = senders.join_next().await {
        sent += batch.unwrap().len();
    }
    assert!(status.success(), "exit status {status:?}");
    assert!(
        after < Duration::from_secs(10),
        "exited {after:?} after SIGTERM"
    );

    // The checkpoint and the rows were committed together: the history holds
    // exactly the messages at or before the checkpoint.
    let mut db = PgConnection::connect(&read).await.unwrap();
    let (tx_id, position): (i64, i64) = sqlx::query_as(
        "SELECT tx_id, position FROM projection_checkpoints WHERE projection = 'history'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let applied = count(&read, "SELECT count(*) FROM history_messages").await;
    let mut log_db = PgConnection::connect(&log).await.unwrap();
    let up_to_checkpoint: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'MessageSent' \
         AND (tx_id::text::bigint, position) <= ($1, $2)",
    )
    .bind(tx_id)
    .bind(position)
    .fetch_one(&mut log_db)
    .await
    .unwrap();
    assert!(
        applied > 0,
        "the projector applied nothing before the signal"
    );
    assert_eq!(applied, up_to_checkpoint, "rows and checkpoint agree");
    assert!(
        (applied as usize) < sent,
        "sends went on after the projector stopped ({applied} applied of {sent}): \
         the signal came under load"
    );
}
