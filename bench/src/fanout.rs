//! `parley-bench fanout`: many WebSockets on one read API. The scaled mode on
//! Postgres as processes, one user per socket (each a member of one room),
//! sends at a steady rate over HTTP; then the time from a send's answer to
//! each member's frame, frames delivered per second, how fast sockets open,
//! the read API's memory per socket, and a reconnect storm: many sockets
//! dropped and reopened at once with resume, each checked for every event it
//! missed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use parley_event_log::ConsistencyToken;
use rand::Rng;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::mixed::wait_until_projected;
use super::scaled::{Scaled, Topology};
use super::seed::{access_tokens, seed_spread};
use crate::args::BenchFanoutArgs;

/// Sockets being opened at once while the run sets up.
const OPENING_AT_ONCE: usize = 256;

/// One socket's side of the run.
#[derive(Default)]
struct Seen {
    /// The id of the last event frame (where a resume starts).
    last_id: Option<String>,
    /// Each message frame: the message and when it arrived.
    messages: Vec<(Uuid, Instant)>,
}

/// What the socket tasks share with the run.
type Shared = Arc<Mutex<Seen>>;

/// Each answered send: its message, room (index), when answered, event id.
type Answered = Arc<Mutex<HashMap<Uuid, (usize, Instant, String)>>>;

pub async fn fanout(args: BenchFanoutArgs) -> anyhow::Result<()> {
    if args.rooms == 0 || args.members == 0 || args.seconds == 0 {
        bail!("--rooms, --members and --seconds must be at least 1");
    }
    let dep = Scaled::start(Topology::log_fed(&args.server.admin_url)).await?;
    let outcome = run(&args, &dep).await;
    dep.stop().await?;
    outcome
}

async fn run(args: &BenchFanoutArgs, dep: &Scaled) -> anyhow::Result<()> {
    let sockets = args.rooms * args.members;
    let log = parley_event_log::open(&dep.log_db.url, 4).await?;
    eprintln!(
        "seeding {sockets} users in {} rooms of {} ...",
        args.rooms, args.members
    );
    // One message per room, so that the wait below has something to see.
    let chat = Arc::new(seed_spread(&log, sockets, args.rooms, 1, 1).await?);
    drop(log);
    let tokens: Arc<Vec<String>> = Arc::new(access_tokens(&chat.users)?);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;
    wait_until_projected(&http, &dep.read_api.base, &chat, &tokens).await?;
    let ws_base = dep.read_api.base.replacen("http://", "ws://", 1);
    // Each user's room: seed_spread puts user u in room u % rooms.
    let room_of: Vec<usize> = (0..sockets)
        .map(|u| {
            chat.members
                .iter()
                .position(|m| m.contains(&u))
                .expect("every user is in a room")
        })
        .collect();

    let rss_before = dep.read_api.rss_kib().unwrap_or(0);
    eprintln!("opening {sockets} sockets ...");
    let seen: Vec<Shared> = (0..sockets).map(|_| Shared::default()).collect();
    let opening = Instant::now();
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(sockets);
    let mut tasks = Vec::with_capacity(sockets);
    for (u, shared) in seen.iter().enumerate() {
        let (url, token, shared) = (
            format!("{ws_base}/v1/ws"),
            tokens[u].clone(),
            shared.clone(),
        );
        let (gate, opened) = (gate.clone(), opened_tx.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let socket = open(&url, &token, None).await;
            drop(permit);
            match socket {
                Ok(socket) => {
                    let _ = opened.send(Ok(())).await;
                    read_frames(socket, shared).await;
                }
                Err(e) => {
                    let _ = opened.send(Err(e)).await;
                }
            }
        }));
    }
    for _ in 0..sockets {
        match opened_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => bail!("a socket did not open: {e:#}"),
            None => bail!("the socket tasks ended"),
        }
    }
    let open_took = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = dep.read_api.rss_kib().unwrap_or(0);

    eprintln!(
        "sending {} per second for {} s ...",
        args.rate, args.seconds
    );
    let answered: Answered = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let sending = tokio::spawn(send_steadily(
        http.clone(),
        dep.command_api.base.clone(),
        chat.clone(),
        tokens.clone(),
        args.rate,
        Duration::from_secs(args.seconds),
        answered.clone(),
        errors.clone(),
    ));
    sending.await??;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Answer-to-frame latency of every delivery, and deliveries per second.
    let answers = answered.lock().unwrap().clone();
    let mut latencies = Vec::new();
    for shared in &seen {
        for (message, at) in &shared.lock().unwrap().messages {
            if let Some((_, answered_at, _)) = answers.get(message) {
                latencies.push(at.saturating_duration_since(*answered_at));
            }
        }
    }
    let expected: usize = answers.len() * args.members;
    latencies.sort();
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!("target            command API, log-fed projector, read API: processes on Postgres");
    println!(
        "sockets           {sockets} ({} rooms of {} members, one socket per user)",
        args.rooms, args.members
    );
    println!(
        "opened in         {:.2} s ({:.0} sockets/s, {OPENING_AT_ONCE} opening at once)",
        open_took.as_secs_f64(),
        sockets as f64 / open_took.as_secs_f64()
    );
    println!(
        "read-api RSS      {:.1} MiB before, {:.1} MiB with the sockets idle: {:.1} KiB per socket",
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss_idle.saturating_sub(rss_before) as f64 / sockets as f64
    );
    println!(
        "sends             {} answered ({} errors) over {} s",
        answers.len(),
        errors.load(Ordering::Relaxed),
        args.seconds
    );
    println!(
        "frames            {} of {expected} delivered, {:.0} frames/s",
        latencies.len(),
        latencies.len() as f64 / args.seconds as f64
    );
    println!(
        "answer to frame   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    if args.reconnect > 0 {
        storm(
            args, &ws_base, dep, &chat, &tokens, &room_of, &seen, &mut tasks,
        )
        .await?;
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Drops `--reconnect` sockets and reopens them all at once with resume while
/// sends go on; then checks each got every message of its room it missed.
#[allow(clippy::too_many_arguments)]
async fn storm(
    args: &BenchFanoutArgs,
    ws_base: &str,
    dep: &Scaled,
    chat: &Arc<super::seed::Spread>,
    tokens: &Arc<Vec<String>>,
    room_of: &[usize],
    seen: &[Shared],
    tasks: &mut [tokio::task::JoinHandle<()>],
) -> anyhow::Result<()> {
    let n = args.reconnect.min(seen.len());
    eprintln!("reconnect storm: {n} sockets drop and resume at once, sends going on ...");
    let mut resume_from = Vec::with_capacity(n);
    for (task, shared) in tasks.iter().zip(seen).take(n) {
        task.abort();
        let mut s = shared.lock().unwrap();
        resume_from.push(s.last_id.clone());
        s.messages.clear();
    }
    let http = reqwest::Client::new();
    let answered: Answered = Arc::default();
    let sending = tokio::spawn(send_steadily(
        http,
        dep.command_api.base.clone(),
        chat.clone(),
        tokens.clone(),
        args.rate,
        Duration::from_secs(5),
        answered.clone(),
        Arc::default(),
    ));
    let started = Instant::now();
    // Each socket is read from the moment it opens: one left unread while
    // the others open would be closed as a slow consumer.
    let reopened = futures::future::join_all((0..n).map(|u| {
        let (url, token) = (format!("{ws_base}/v1/ws"), tokens[u].clone());
        let (after, shared) = (resume_from[u].clone(), seen[u].clone());
        async move {
            let socket = open(&url, &token, after.as_deref()).await?;
            let took = started.elapsed();
            anyhow::Ok((tokio::spawn(read_frames(socket, shared)), took))
        }
    }))
    .await;
    let mut last_resumed = Duration::ZERO;
    let mut failed = 0;
    for (u, reopened) in reopened.into_iter().enumerate() {
        match reopened {
            Ok((task, took)) => {
                last_resumed = last_resumed.max(took);
                tasks[u] = task;
            }
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("a resume failed: {e:#}");
                }
            }
        }
    }
    sending.await??;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Every message sent to a resumed socket's room after its last id.
    let answers = answered.lock().unwrap().clone();
    let mut lost = 0;
    for u in 0..n {
        let got: HashSet<Uuid> = seen[u]
            .lock()
            .unwrap()
            .messages
            .iter()
            .map(|m| m.0)
            .collect();
        let after = resume_from[u].as_deref().map(parse_id);
        lost += answers
            .iter()
            .filter(|(_, (room, _, id))| *room == room_of[u] && Some(parse_id(id)) > after)
            .filter(|(message, _)| !got.contains(*message))
            .count();
    }
    println!(
        "reconnect storm   {} of {n} resumed ({failed} failed), the last after {:.2} s; {} messages missed",
        n - failed,
        last_resumed.as_secs_f64(),
        lost
    );
    // Not a figure: a resume that loses events or cannot happen is a bug.
    if failed > 0 || lost > 0 {
        bail!("the reconnect storm lost events or sockets: {failed} not resumed, {lost} messages missed");
    }
    Ok(())
}

fn parse_id(id: &str) -> (i64, i64) {
    let (tx, position) = id.split_once('.').unwrap_or(("0", "0"));
    (tx.parse().unwrap_or(0), position.parse().unwrap_or(0))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a socket (header auth, resuming after `after`) and waits for its
/// hello. A 503 (the replica sheds load) is retried after its `Retry-After`
/// and a little jitter, as a client would, for up to a minute.
async fn open(url: &str, token: &str, after: Option<&str>) -> anyhow::Result<Socket> {
    let url = match after {
        Some(after) => format!("{url}?last_event_id={after}"),
        None => url.to_string(),
    };
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut request = url.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let mut socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(answer))
                if answer.status() == 503 && Instant::now() < give_up =>
            {
                let after: u64 = answer
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                let jitter = rand::thread_rng().gen_range(0..500);
                tokio::time::sleep(Duration::from_millis(after * 1000 + jitter)).await;
                continue;
            }
            Err(e) => return Err(e).context("opening a socket"),
        };
        return match socket.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("\"hello\"") => Ok(socket),
            other => bail!("no hello: {other:?}"),
        };
    }
}

/// Notes every message frame a socket gets, until it ends.
async fn read_frames(mut socket: Socket, shared: Shared) {
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let at = Instant::now();
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            continue;
        };
        if frame["type"] != "event" {
            continue;
        }
        let mut seen = shared.lock().unwrap();
        seen.last_id = frame["id"].as_str().map(str::to_string);
        if frame["event"]["event_type"] == "MessageSent" {
            if let Some(id) = frame["event"]["payload"]["message_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
            {
                seen.messages.push((id, at));
            }
        }
    }
}

/// Sends `rate` messages a second for `seconds` to random rooms as random
/// members, noting each answered message: its room, when, and its event id.
#[allow(clippy::too_many_arguments)]
async fn send_steadily(
    http: reqwest::Client,
    base: String,
    chat: Arc<super::seed::Spread>,
    tokens: Arc<Vec<String>>,
    rate: u64,
    seconds: Duration,
    answered: Answered,
    errors: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    if rate == 0 {
        tokio::time::sleep(seconds).await;
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let end = Instant::now() + seconds;
    let mut inflight = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let (room, member) = {
            let mut rng = rand::thread_rng();
            let room = rng.gen_range(0..chat.rooms.len());
            let members = &chat.members[room];
            (room, members[rng.gen_range(0..members.len())])
        };
        let (http, base, token, room_id) = (
            http.clone(),
            base.clone(),
            tokens[member].clone(),
            chat.rooms[room],
        );
        let (answered, errors) = (answered.clone(), errors.clone());
        inflight.spawn(async move {
            let message = Uuid::now_v7();
            let answer = http
                .put(format!("{base}/v1/rooms/{room_id}/messages/{message}"))
                .bearer_auth(&token)
                .json(&json!({"body": "fanout"}))
                .send()
                .await;
            let at = Instant::now();
            let id = answer
                .ok()
                .filter(|a| a.status().is_success())
                .and_then(|a| {
                    let token = a.headers().get("x-consistency-token")?.to_str().ok()?;
                    let cursor = ConsistencyToken::decode(token).ok()?.cursor;
                    Some(format!("{}.{}", cursor.tx_id, cursor.position))
                });
            match id {
                Some(id) => {
                    answered.lock().unwrap().insert(message, (room, at, id));
                }
                None => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while inflight.join_next().await.is_some() {}
    Ok(())
}
