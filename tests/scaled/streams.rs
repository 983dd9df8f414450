//! A read API started while clients send without pause serves streams: its
//! stream hub becomes ready once it has passed the events it starts behind,
//! not once nothing is pending (under steady sends something always is).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::support::{Client, Deployment};
use crate::wait_for_owners;

/// Sends into `rooms` without pause, one sender per room, until `stop`.
fn sending(
    client: &Client,
    rooms: &[Uuid],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    rooms
        .iter()
        .map(|&room| {
            let client = Client {
                http: reqwest::Client::new(),
                base: client.base.clone(),
                token: client.token.clone(),
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    client.send(room, Uuid::now_v7(), "steady").await;
                }
            })
        })
        .collect()
}

/// Opens `/v1/stream` as a client would, again after each 503 ("live updates
/// are starting"); fails the test when no stream opens `within`.
async fn open_stream(client: &Client, read_base: &str, within: Duration) -> reqwest::Response {
    let deadline = Instant::now() + within;
    let mut unavailable = 0;
    loop {
        let r = client
            .http
            .get(format!("{read_base}/v1/stream"))
            .bearer_auth(&client.token)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => return r,
            503 => unavailable += 1,
            other => panic!("opening the stream: {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "no stream opened in {within:?} under steady sends: {unavailable} answers of 503"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn streams_open_under_steady_sends(feed: &str) {
    let Some(dep) = Deployment::new().await else {
        return;
    };
    let command_api = dep.service(&["command-api", "--migrate"]).await;
    let _projector = if feed == "kafka" {
        let relay = dep.relay().await;
        let member = dep.projector();
        wait_for_owners(&dep, 1).await;
        (Some(relay), member)
    } else {
        (None, dep.spawn(&["projector", "--feed", "log"]))
    };
    let client = Client::register(command_api.base.as_deref().unwrap(), "gina").await;
    let mut rooms = Vec::new();
    for i in 0..4 {
        rooms.push(client.create_room(&format!("room {i}")).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let senders = sending(&client, &rooms, &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The read API starts in the middle of it; its hub starts with the first stream.
    let read_api = dep.service(&["read-api", "--feed", feed]).await;
    let read_base = read_api.base.as_deref().unwrap();
    let stream = open_stream(&client, read_base, Duration::from_secs(30)).await;
    let mut body = stream.bytes_stream();
    use futures::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(30), body.next()).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(
        matches!(first, Ok(Some(Ok(_)))),
        "the stream sent nothing: {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_api_started_under_steady_sends_serves_streams_fed_by_kafka() {
    streams_open_under_steady_sends("kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_api_started_under_steady_sends_serves_streams_fed_by_the_log() {
    streams_open_under_steady_sends("log").await;
}
