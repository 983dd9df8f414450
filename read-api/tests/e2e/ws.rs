//! `GET /v1/ws`: the stream and typing indicators over a real WebSocket, on
//! the read API's real socket.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::{SinkExt, StreamExt};
use parley_event_log::ConsistencyToken;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::app::{Backend, TestApp};

crate::both_backends!(
    a_message_arrives_as_an_event_frame_whichever_way_the_client_authenticates,
    typing_reaches_other_members_only_and_stops_by_itself,
    typing_is_never_shown_across_a_block,
    garbage_gets_an_error_frame_and_the_socket_stays_usable,
    a_flood_of_frames_is_refused_then_closed,
    a_typing_flood_is_relayed_once,
    without_a_valid_token_there_is_no_socket,
    sockets_waiting_to_authenticate_are_capped,
    an_oversized_frame_ends_the_socket,
    a_resume_frame_replays_what_was_missed_and_an_old_one_is_refused,
    a_shutdown_closes_with_1012_and_another_replica_resumes_without_loss,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn typing_crosses_replicas() {
        super::typing_crosses_replicas(crate::app::Backend::Postgres).await;
    }
}

/// How long a test waits for one frame before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next read gave.
#[derive(Debug)]
enum Got {
    Frame(Value),
    Closed(Option<(u16, String)>),
    Timeout,
}

pub(crate) struct Ws(Stream);

impl Ws {
    /// Opens `/v1/ws{query}`, with `token` in the `Authorization` header.
    async fn try_connect(
        app: &TestApp,
        token: Option<&str>,
        query: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        Ws::try_connect_to(app.read_addr, token, query).await
    }

    pub(crate) async fn try_connect_to(
        address: std::net::SocketAddr,
        token: Option<&str>,
        query: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{address}/v1/ws{query}");
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws(stream))
    }

    /// A socket authenticated by header, past its `hello`.
    pub(crate) async fn open(app: &TestApp, token: &str) -> (Ws, String) {
        let mut ws = Ws::try_connect(app, Some(token), "").await.unwrap();
        let hello = ws.frame_of("hello").await;
        (ws, hello["after"].as_str().unwrap().to_string())
    }

    pub(crate) async fn send(&mut self, frame: Value) {
        self.0
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    async fn next(&mut self, wait: Duration) -> Got {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.0.next()).await {
                Err(_) => return Got::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return Got::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Got::Frame(serde_json::from_str(text.as_str()).unwrap())
                }
                Ok(Some(Ok(Message::Close(close)))) => {
                    return Got::Closed(close.map(|c| (u16::from(c.code), c.reason.to_string())))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next frame of `kind`, skipping others.
    pub(crate) async fn frame_of(&mut self, kind: &str) -> Value {
        loop {
            match self.next(WAIT).await {
                Got::Frame(f) if f["type"] == kind => return f,
                Got::Frame(_) => continue,
                other => panic!("waiting for a {kind} frame: {other:?}"),
            }
        }
    }

    /// Everything until nothing came for `quiet`.
    pub(crate) async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Got::Frame(f) = self.next(quiet).await {
            frames.push(f);
        }
        frames
    }

    /// Reads until the server closes; the close code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next(WAIT).await {
                Got::Frame(_) => continue,
                Got::Closed(Some(close)) => return close,
                other => panic!("expected a close frame: {other:?}"),
            }
        }
    }
}

/// Sends a message; its id and its event's stream id.
pub(crate) async fn send(app: &TestApp, token: &str, room: Uuid, body: &str) -> (Uuid, String) {
    let (id, consistency) = crate::cache::send(app, token, room, body).await;
    let cursor = ConsistencyToken::decode(&consistency).unwrap().cursor;
    (id, format!("{}.{}", cursor.tx_id, cursor.position))
}

/// A room of `alice`'s that `bob` joined, as both see it.
pub(crate) async fn pair(app: &TestApp) -> (String, String, Uuid) {
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    app.join(&bob, room).await;
    // The join is visible to queries (and so to a stream opened now).
    let seen = app.call("GET", "/v1/rooms", Some(&bob), None, None).await;
    assert_eq!(seen.status, StatusCode::OK);
    wait_member(app, &bob, room).await;
    (alice, bob, room)
}

async fn wait_member(app: &TestApp, token: &str, room: Uuid) {
    let started = Instant::now();
    loop {
        let rooms = app.call("GET", "/v1/rooms", Some(token), None, None).await;
        let ids: Vec<&str> = rooms.body["rooms"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["room_id"].as_str()).collect())
            .unwrap_or_default();
        if ids.contains(&room.to_string().as_str()) {
            return;
        }
        assert!(started.elapsed() < WAIT, "the join was not projected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_message_arrives_as_an_event_frame_whichever_way_the_client_authenticates(
    backend: Backend,
) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (mut by_header, _) = Ws::open(&app, &alice).await;
    // A browser: no header, the token in the first frame.
    let mut by_frame = Ws::try_connect(&app, None, "").await.unwrap();
    by_frame
        .send(json!({"type": "auth", "access_token": bob}))
        .await;
    by_frame.frame_of("hello").await;

    let (message, id) = send(&app, &alice, room, "hello over a socket").await;
    for ws in [&mut by_header, &mut by_frame] {
        let frame = ws.frame_of("event").await;
        assert_eq!(frame["id"], json!(id));
        assert_eq!(frame["event"]["event_type"], "MessageSent");
        assert_eq!(frame["event"]["aggregate_id"], json!(message));
        assert_eq!(frame["event"]["payload"]["body"], "hello over a socket");
        // Only who acted, as on /v1/stream.
        assert!(
            frame["event"]["metadata"]["request_id"].is_null(),
            "{frame}"
        );
    }
}

async fn typing_reaches_other_members_only_and_stops_by_itself(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (_, carol) = app.user("carol").await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    let (mut b, _) = Ws::open(&app, &bob).await;
    let (mut c, _) = Ws::open(&app, &carol).await;

    a.send(json!({"type": "typing", "room_id": room, "typing": true}))
        .await;
    let started = Instant::now();
    let shown = b.frame_of("typing").await;
    assert_eq!(shown["room_id"], json!(room));
    assert_eq!(shown["typing"], true);
    assert_eq!(shown["expires_in_ms"], 6000);
    // Not renewed: it stops by itself, about 6 s later.
    let stopped = b.frame_of("typing").await;
    assert_eq!(stopped["typing"], false, "{stopped}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "stopped after {took:?}"
    );
    // Carol is no member: she saw none of it, and cannot type there.
    let carols: Vec<Value> = c.drain(Duration::from_millis(300)).await;
    assert!(carols.iter().all(|f| f["type"] != "typing"), "{carols:?}");
    c.send(json!({"type": "typing", "room_id": room, "typing": true}))
        .await;
    let refused = c.frame_of("error").await;
    assert_eq!(refused["status"], 403, "{refused}");
    // The typer never sees their own.
    let alices = a.drain(Duration::from_millis(300)).await;
    assert!(alices.iter().all(|f| f["type"] != "typing"), "{alices:?}");
}

/// Attack: a user blocked by the typer (or who blocked them) learns nothing
/// of their typing, though both are in the room.
async fn typing_is_never_shown_across_a_block(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (dave_id, dave) = app.user("dave").await;
    app.join(&dave, room).await;
    wait_member(&app, &dave, room).await;
    let blocked = app
        .call(
            "PUT",
            &format!("/v1/blocks/{dave_id}"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert!(blocked.status.is_success(), "{:?}", blocked.body);
    let seen = app
        .call(
            "GET",
            "/v1/blocks",
            Some(&alice),
            blocked.token.as_deref(),
            None,
        )
        .await;
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);

    let (mut a, _) = Ws::open(&app, &alice).await;
    let (mut b, _) = Ws::open(&app, &bob).await;
    let (mut d, _) = Ws::open(&app, &dave).await;
    a.send(json!({"type": "typing", "room_id": room, "typing": true}))
        .await;
    assert_eq!(b.frame_of("typing").await["typing"], true);
    a.send(json!({"type": "typing", "room_id": room, "typing": false}))
        .await;
    assert_eq!(b.frame_of("typing").await["typing"], false);
    let daves = d.drain(Duration::from_millis(500)).await;
    assert!(daves.iter().all(|f| f["type"] != "typing"), "{daves:?}");
    // Nor the other way: dave's typing does not reach alice.
    d.send(json!({"type": "typing", "room_id": room, "typing": true}))
        .await;
    assert_eq!(b.frame_of("typing").await["user_id"], json!(dave_id));
    let alices = a.drain(Duration::from_millis(500)).await;
    assert!(alices.iter().all(|f| f["type"] != "typing"), "{alices:?}");
}

async fn garbage_gets_an_error_frame_and_the_socket_stays_usable(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, _, room) = pair(&app).await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    for garbage in [
        Message::Text("this is not json".into()),
        Message::Text(r#"{"type":"teleport"}"#.into()),
        Message::Text(r#"{"type":"typing","room_id":"not-a-uuid","typing":true}"#.into()),
        Message::Text(r#"{"type":"resume","after":"yesterday"}"#.into()),
        Message::Binary(vec![0, 159, 146, 150].into()),
    ] {
        a.0.send(garbage).await.unwrap();
        let error = a.frame_of("error").await;
        assert_eq!(error["status"], 400, "{error}");
        assert!(!error["detail"].as_str().unwrap().is_empty());
    }
    a.send(json!({"type": "ping"})).await;
    a.frame_of("pong").await;
    let (_, id) = send(&app, &alice, room, "still here").await;
    assert_eq!(a.frame_of("event").await["id"], json!(id));
}

/// Attack: a client cannot make the server work flat out for it.
async fn a_flood_of_frames_is_refused_then_closed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, _, _) = pair(&app).await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    for _ in 0..200 {
        if a.0
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut pongs = 0;
    let mut refused = 0;
    let close = loop {
        match a.next(WAIT).await {
            Got::Frame(f) if f["type"] == "pong" => pongs += 1,
            Got::Frame(f) if f["type"] == "error" => {
                assert_eq!(f["status"], 429, "{f}");
                refused += 1;
            }
            Got::Frame(f) => panic!("unexpected {f}"),
            Got::Closed(close) => break close,
            Got::Timeout => panic!("the flood did not close the socket"),
        }
    };
    // The burst, and what the budget refilled while the flood was read.
    assert!((20..100).contains(&pongs), "{pongs} pongs");
    assert!(refused > 0);
    assert_eq!(close.map(|c| c.0), Some(u16::from(CloseCode::Policy)));
}

/// Attack: typing cannot flood a room; renewals within 3 s are not relayed.
async fn a_typing_flood_is_relayed_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    let (mut b, _) = Ws::open(&app, &bob).await;
    for _ in 0..15 {
        a.send(json!({"type": "typing", "room_id": room, "typing": true}))
            .await;
    }
    let shown = b.drain(Duration::from_millis(1500)).await;
    let typing: Vec<_> = shown.iter().filter(|f| f["type"] == "typing").collect();
    assert_eq!(typing.len(), 1, "{shown:?}");
}

async fn without_a_valid_token_there_is_no_socket(backend: Backend) {
    let app = TestApp::start(backend).await;
    // A bad header: refused before the upgrade.
    match Ws::try_connect(&app, Some("forged"), "").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    // A bad token in the first frame.
    let mut ws = Ws::try_connect(&app, None, "").await.unwrap();
    ws.send(json!({"type": "auth", "access_token": "forged"}))
        .await;
    assert_eq!(ws.frame_of("error").await["status"], 401);
    assert_eq!(ws.closed().await.0, u16::from(CloseCode::Policy));
    // Any other first frame.
    let mut ws = Ws::try_connect(&app, None, "").await.unwrap();
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.frame_of("error").await["status"], 401);
    assert_eq!(ws.closed().await.0, u16::from(CloseCode::Policy));
    // Nothing at all within 5 s.
    let mut ws = Ws::try_connect(&app, None, "").await.unwrap();
    let started = Instant::now();
    assert_eq!(ws.frame_of("error").await["status"], 401);
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(ws.closed().await.0, u16::from(CloseCode::Policy));
    // Not an upgrade at all.
    let plain = app.call("GET", "/v1/ws", None, None, None).await;
    assert_eq!(plain.status, StatusCode::BAD_REQUEST, "{:?}", plain.body);
}

/// Attack: sockets that never authenticate cannot pile up; each holds a
/// place for at most 5 s.
async fn sockets_waiting_to_authenticate_are_capped(backend: Backend) {
    let app = TestApp::start_custom(backend, true, |s| s.max_unauthenticated_sockets = 2).await;
    let (_, alice) = app.user("alice").await;
    let mut first = Ws::try_connect(&app, None, "").await.unwrap();
    let _second = Ws::try_connect(&app, None, "").await.unwrap();
    match Ws::try_connect(&app, None, "").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // A header needs no place.
    Ws::open(&app, &alice).await;
    // One authenticates: its place is free again.
    first
        .send(json!({"type": "auth", "access_token": alice}))
        .await;
    first.frame_of("hello").await;
    let mut third = Ws::try_connect(&app, None, "").await.unwrap();
    third
        .send(json!({"type": "auth", "access_token": alice}))
        .await;
    third.frame_of("hello").await;
}

/// Attack: a frame over 16 KiB is not read into memory; the socket ends.
async fn an_oversized_frame_ends_the_socket(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, _, room) = pair(&app).await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    let huge =
        json!({"type": "typing", "room_id": room, "typing": true, "pad": "x".repeat(64 * 1024)});
    let _ = a.0.send(Message::Text(huge.to_string().into())).await;
    match a.next(WAIT).await {
        Got::Closed(close) => {
            if let Some((code, _)) = close {
                assert_eq!(code, u16::from(CloseCode::Size));
            }
        }
        other => panic!("the socket lived on after a 64 KiB frame: {other:?}"),
    }
}

async fn a_resume_frame_replays_what_was_missed_and_an_old_one_is_refused(backend: Backend) {
    let app = TestApp::start_custom(backend, true, |s| s.stream_resume_window = 5).await;
    let (alice, bob, room) = pair(&app).await;
    let (b, start) = Ws::open(&app, &bob).await;
    drop(b);
    let (first, _) = send(&app, &alice, room, "one").await;
    let (second, _) = send(&app, &alice, room, "two").await;
    // A browser resumes in its auth frame; a client may also resume later.
    let mut ws = Ws::try_connect(&app, None, "").await.unwrap();
    ws.send(json!({"type": "auth", "access_token": bob, "after": start}))
        .await;
    assert_eq!(ws.frame_of("hello").await["after"], json!(start));
    let replayed = [ws.frame_of("event").await, ws.frame_of("event").await];
    assert_eq!(replayed[0]["event"]["aggregate_id"], json!(first));
    assert_eq!(replayed[1]["event"]["aggregate_id"], json!(second));
    ws.send(json!({"type": "resume", "after": start})).await;
    assert_eq!(ws.frame_of("hello").await["after"], json!(start));
    assert_eq!(
        ws.frame_of("event").await["event"]["aggregate_id"],
        json!(first)
    );
    // Past the window: the documented 410, and the socket ends.
    let mut last = String::new();
    for i in 0..6 {
        last = send(&app, &alice, room, &format!("filler {i}")).await.1;
    }
    // The stream has passed them: the window has moved.
    while ws.frame_of("event").await["id"] != json!(last) {}
    ws.send(json!({"type": "resume", "after": start})).await;
    assert_eq!(ws.frame_of("error").await["status"], 410);
    assert_eq!(ws.closed().await.0, u16::from(CloseCode::Policy));
}

async fn a_shutdown_closes_with_1012_and_another_replica_resumes_without_loss(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (mut b, _) = Ws::open(&app, &bob).await;
    let (_, id) = send(&app, &alice, room, "before the shutdown").await;
    assert_eq!(b.frame_of("event").await["id"], json!(id));
    app.read.closing.cancel();
    let goodbye = b.frame_of("goodbye").await;
    assert_eq!(goodbye["after"], json!(id));
    assert_eq!(
        b.closed().await,
        (u16::from(CloseCode::Restart), id.clone())
    );
    // Sent while the client reconnects: the other replica replays it.
    let (missed, _) = send(&app, &alice, room, "while away").await;
    let (replica, _running) = app.another_read_api().await;
    let mut again = Ws::try_connect_to(replica, Some(&bob), &format!("?last_event_id={id}"))
        .await
        .unwrap();
    assert_eq!(again.frame_of("hello").await["after"], json!(id));
    assert_eq!(
        again.frame_of("event").await["event"]["aggregate_id"],
        json!(missed)
    );
}

/// Alice on one replica, Bob on another: typing crosses through the read
/// database's notifications.
async fn typing_crosses_replicas(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (replica, _running) = app.another_read_api().await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    let mut b = Ws::try_connect_to(replica, Some(&bob), "").await.unwrap();
    b.frame_of("hello").await;
    // The other replica listens from its first socket on; give it a moment
    // to be listening, then type until it shows (a start is relayed again
    // after 3 s).
    let started = Instant::now();
    loop {
        a.send(json!({"type": "typing", "room_id": room, "typing": true}))
            .await;
        match b.next(Duration::from_secs(4)).await {
            Got::Frame(f) if f["type"] == "typing" => {
                assert_eq!(f["typing"], true);
                break;
            }
            Got::Frame(_) | Got::Timeout => {}
            Got::Closed(c) => panic!("closed: {c:?}"),
        }
        assert!(started.elapsed() < WAIT, "typing never crossed replicas");
    }
    a.send(json!({"type": "typing", "room_id": room, "typing": false}))
        .await;
    assert_eq!(b.frame_of("typing").await["typing"], false);
}
