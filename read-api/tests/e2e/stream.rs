//! `GET /v1/stream`: live updates as Server-Sent Events, filtered per caller and
//! resumable with `Last-Event-ID`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use parley_event_log::{ConsistencyToken, Cursor};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::app::{Backend, TestApp};

crate::both_backends!(
    a_member_receives_a_new_message,
    non_members_receive_nothing_of_a_room,
    a_reconnect_gets_exactly_the_missed_events,
    a_lagging_subscriber_is_closed_and_resumes_without_loss,
    a_malformed_last_event_id_is_400,
    a_friends_presence_change_arrives,
    without_the_event_log_the_stream_is_503,
    a_resumed_stream_filters_by_membership_at_the_time,
    events_wait_until_queries_see_them,
    a_shutdown_ends_each_stream_with_a_retry_hint_and_where_to_resume,
    a_resume_shows_no_text_that_was_redacted_or_edited_since,
    streams_per_user_are_capped_and_old_resumes_are_gone,
);

/// How long a test waits for one frame before failing.
const WAIT: Duration = Duration::from_secs(10);

/// One SSE frame, parsed.
#[derive(Debug, Default, Clone)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<String>,
    comments: Vec<String>,
}

impl Frame {
    fn parse(text: &str) -> Self {
        let mut frame = Frame::default();
        for line in text.lines() {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "" => frame.comments.push(value.to_string()),
                "id" => frame.id = Some(value.to_string()),
                "event" => frame.event = Some(value.to_string()),
                "data" => {
                    frame.data = Some(match frame.data.take() {
                        Some(d) => format!("{d}\n{value}"),
                        None => value.to_string(),
                    })
                }
                "retry" => frame.retry = Some(value.to_string()),
                other => panic!("unexpected SSE field {other:?}"),
            }
        }
        frame
    }

    fn envelope(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("a data frame")).unwrap()
    }
}

enum Next {
    Frame(Frame),
    End,
    Timeout,
}

/// An open `/v1/stream` response, read frame by frame.
struct Sse {
    body: Body,
    buffer: String,
    /// The last `id:` seen, as a browser's EventSource would remember it.
    last_id: Option<String>,
}

impl Sse {
    async fn open(app: &TestApp, token: &str, last_event_id: Option<&str>) -> Sse {
        let (status, sse) = Self::try_open(app, token, last_event_id).await;
        assert_eq!(status, StatusCode::OK);
        sse
    }

    async fn try_open(
        app: &TestApp,
        token: &str,
        last_event_id: Option<&str>,
    ) -> (StatusCode, Sse) {
        let mut req = Request::get("/v1/stream").header("authorization", format!("Bearer {token}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = app
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        if status == StatusCode::OK {
            assert_eq!(
                res.headers()["content-type"].to_str().unwrap(),
                "text/event-stream"
            );
        }
        (
            status,
            Sse {
                body: res.into_body(),
                buffer: String::new(),
                last_id: None,
            },
        )
    }

    /// The next frame, waiting at most `wait`.
    async fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let text: String = self.buffer.drain(..end + 2).collect();
                let frame = Frame::parse(text.trim_end_matches('\n'));
                if let Some(id) = &frame.id {
                    self.last_id = Some(id.clone());
                }
                return Next::Frame(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.body.frame()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => return Next::End,
                Ok(Some(frame)) => {
                    if let Ok(bytes) = frame.unwrap().into_data() {
                        self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
                    }
                }
            }
        }
    }

    /// The first frame: `retry: 1000` and the id the stream starts after.
    async fn hello(&mut self) -> Frame {
        match self.next(WAIT).await {
            Next::Frame(f) => {
                assert_eq!(f.retry.as_deref(), Some("1000"), "{f:?}");
                assert!(f.data.is_none());
                assert!(f.id.is_some());
                f
            }
            _ => panic!("no hello frame"),
        }
    }

    /// The next event (a frame with data).
    async fn event(&mut self) -> Frame {
        loop {
            match self.next(WAIT).await {
                Next::Frame(f) if f.data.is_some() => return f,
                Next::Frame(_) => continue,
                Next::End => panic!("the stream ended"),
                Next::Timeout => panic!("no event within {WAIT:?}"),
            }
        }
    }

    /// The next event of type `kind`, with the events skipped on the way.
    async fn event_of(&mut self, kind: &str) -> (Frame, Vec<Frame>) {
        let mut skipped = Vec::new();
        loop {
            let f = self.event().await;
            if f.event.as_deref() == Some(kind) {
                return (f, skipped);
            }
            skipped.push(f);
        }
    }

    /// Every event until the stream stays silent for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Frame> {
        let mut events = Vec::new();
        loop {
            match self.next(quiet).await {
                Next::Frame(f) if f.data.is_some() => events.push(f),
                Next::Frame(_) => {}
                Next::End | Next::Timeout => return events,
            }
        }
    }
}

/// Sends a message; returns its id and the write's cursor.
async fn send(app: &TestApp, token: &str, room: Uuid, body: &str) -> (Uuid, Cursor) {
    let id = Uuid::now_v7();
    let sent = app
        .call(
            "PUT",
            &format!("/v1/rooms/{room}/messages/{id}"),
            Some(token),
            None,
            Some(json!({ "body": body })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{:?}", sent.body);
    let token = ConsistencyToken::decode(&sent.token.unwrap()).unwrap();
    (id, token.cursor)
}

fn sse_id(cursor: Cursor) -> String {
    format!("{}.{}", cursor.tx_id, cursor.position)
}

/// Waits (bounded) until the stream hub has broadcast everything up to `cursor`.
async fn hub_reaches(app: &TestApp, cursor: Cursor) {
    let hub = app.read.stream.clone().unwrap();
    let started = Instant::now();
    while hub.position() < cursor {
        assert!(
            started.elapsed() < WAIT,
            "the hub did not broadcast in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn parse_id(id: &str) -> Cursor {
    let (tx_id, position) = id.split_once('.').unwrap();
    Cursor {
        tx_id: tx_id.parse().unwrap(),
        position: position.parse().unwrap(),
    }
}

fn room_of(frame: &Frame) -> Option<String> {
    frame.envelope()["payload"]["room_id"]
        .as_str()
        .map(str::to_string)
}

async fn a_member_receives_a_new_message(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice_id, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    app.join(&bob, room).await;
    let mut stream = Sse::open(&app, &bob, None).await;
    stream.hello().await;
    let (message_id, cursor) = send(&app, &alice, room, "hello, bob").await;
    let (frame, _) = stream.event_of("MessageSent").await;
    assert_eq!(frame.id, Some(sse_id(cursor)));
    let envelope = frame.envelope();
    assert_eq!(envelope["event_type"], json!("MessageSent"));
    assert_eq!(envelope["event_version"], json!(2));
    assert_eq!(envelope["aggregate_type"], json!("message"));
    assert_eq!(envelope["aggregate_id"], json!(message_id));
    assert_eq!(envelope["sequence"], json!(1));
    assert_eq!(envelope["position"], json!(cursor.position));
    assert_eq!(envelope["metadata"]["actor_id"], json!(alice_id));
    // Attack (issue 21, item 8): alice's request id, correlation id and trace
    // context are hers. Fails before: the whole metadata was streamed to bob.
    assert_eq!(
        envelope["metadata"],
        json!({"actor_id": alice_id}),
        "only the actor of another user's request metadata is streamed"
    );
    assert_eq!(envelope["payload"]["room_id"], json!(room));
    assert_eq!(envelope["payload"]["body"], json!("hello, bob"));
    assert!(envelope["event_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .is_ok());
    // Streamed only once queries can see it: no consistency token needed.
    let history = app
        .call(
            "GET",
            &format!("/v1/rooms/{room}/messages"),
            Some(&bob),
            None,
            None,
        )
        .await;
    assert_eq!(history.body["messages"][0]["message_id"], json!(message_id));
}

async fn non_members_receive_nothing_of_a_room(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let (_, mallory) = app.user("mallory").await;
    let (mine, _) = app.room(&alice, "mine", "private").await;
    let (secret, _) = app.room(&mallory, "secret", "private").await;
    let (lobby, _) = app.room(&mallory, "lobby", "public").await;
    let mut stream = Sse::open(&app, &alice, None).await;
    stream.hello().await;
    send(&app, &mallory, secret, "hush").await;
    send(&app, &mallory, lobby, "public, but alice is not in it").await;
    let (message_id, _) = send(&app, &alice, mine, "only this one").await;
    let (frame, skipped) = stream.event_of("MessageSent").await;
    assert_eq!(frame.envelope()["aggregate_id"], json!(message_id));
    assert_eq!(room_of(&frame), Some(mine.to_string()));
    for other in skipped
        .iter()
        .chain(stream.drain(Duration::from_millis(300)).await.iter())
    {
        let envelope = other.envelope();
        for room in [secret, lobby] {
            assert_ne!(room_of(other), Some(room.to_string()), "{envelope}");
            assert_ne!(envelope["aggregate_id"], json!(room), "{envelope}");
        }
    }
}

async fn a_reconnect_gets_exactly_the_missed_events(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    app.join(&bob, room).await;
    let mut stream = Sse::open(&app, &bob, None).await;
    stream.hello().await;
    let mut first = Vec::new();
    for i in 0..3 {
        first.push(send(&app, &alice, room, &format!("before {i}")).await.0);
    }
    let mut received = Vec::new();
    while received.len() < 3 {
        let (frame, _) = stream.event_of("MessageSent").await;
        received.push(frame.envelope()["aggregate_id"].clone());
    }
    assert_eq!(
        received,
        first.iter().map(|id| json!(id)).collect::<Vec<_>>()
    );
    let last_id = stream.last_id.clone().unwrap();
    drop(stream);

    let mut missed = Vec::new();
    let mut last = Cursor::START;
    for i in 0..3 {
        let (id, cursor) = send(&app, &alice, room, &format!("missed {i}")).await;
        missed.push(id);
        last = cursor;
    }
    // Broadcast while bob was away: only the backlog from the log can have them.
    hub_reaches(&app, last).await;
    let mut stream = Sse::open(&app, &bob, Some(&last_id)).await;
    assert_eq!(stream.hello().await.id.as_deref(), Some(last_id.as_str()));
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(stream.event().await);
    }
    // Live again after the backlog, with nothing repeated in between.
    let (after, _) = send(&app, &alice, room, "after").await;
    events.push(stream.event().await);
    events.extend(stream.drain(Duration::from_millis(300)).await);
    let ids: Vec<Value> = events
        .iter()
        .map(|f| f.envelope()["aggregate_id"].clone())
        .collect();
    let mut expected: Vec<Value> = missed.iter().map(|id| json!(id)).collect();
    expected.push(json!(after));
    assert_eq!(ids, expected, "the missed messages, once each, in order");
    let resumed_after = parse_id(&last_id);
    assert!(events
        .iter()
        .all(|f| parse_id(f.id.as_deref().unwrap()) > resumed_after));
}

async fn a_lagging_subscriber_is_closed_and_resumes_without_loss(backend: Backend) {
    let app = TestApp::start_custom(backend, true, |s| s.stream_capacity = 2).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    app.join(&bob, room).await;
    let mut stream = Sse::open(&app, &bob, None).await;
    stream.hello().await;
    // Bob reads nothing while ten messages go out.
    let mut sent = Vec::new();
    let mut last = Cursor::START;
    for i in 0..10 {
        let (id, cursor) = send(&app, &alice, room, &format!("message {i}")).await;
        sent.push(json!(id));
        last = cursor;
    }
    hub_reaches(&app, last).await;
    // The stream ends with a comment and a retry hint.
    let mut received = Vec::new();
    let mut goodbye = None;
    loop {
        match stream.next(WAIT).await {
            Next::Frame(f) if f.data.is_some() => received.push(f),
            Next::Frame(f) if !f.comments.is_empty() => goodbye = Some(f),
            Next::Frame(_) => {}
            Next::End => break,
            Next::Timeout => panic!("a lagging stream was not closed"),
        }
    }
    let goodbye = goodbye.expect("a closing comment");
    assert!(goodbye.comments[0].contains("lagged"), "{goodbye:?}");
    assert_eq!(goodbye.retry.as_deref(), Some("1000"));
    // Resume where the browser would: after the last id it saw.
    let last_id = stream.last_id.clone().unwrap();
    let mut stream = Sse::open(&app, &bob, Some(&last_id)).await;
    stream.hello().await;
    while received
        .iter()
        .filter(|f| f.event.as_deref() == Some("MessageSent"))
        .count()
        < sent.len()
    {
        received.push(stream.event().await);
    }
    received.extend(stream.drain(Duration::from_millis(300)).await);
    let messages: Vec<Value> = received
        .iter()
        .filter(|f| f.event.as_deref() == Some("MessageSent"))
        .map(|f| f.envelope()["aggregate_id"].clone())
        .collect();
    assert_eq!(messages, sent, "every message once, in order");
    let ids: HashSet<&str> = received.iter().map(|f| f.id.as_deref().unwrap()).collect();
    assert_eq!(ids.len(), received.len(), "no event twice");
}

async fn a_malformed_last_event_id_is_400(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    for bad in ["abc", "12", "1.x", "-1.5", "1.2.3", "1.2 3"] {
        let (status, _) = Sse::try_open(&app, &alice, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let answer = app
        .call(
            "GET",
            "/v1/stream?last_event_id=zzz",
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["status"], json!(400));
    assert!(answer.body["detail"]
        .as_str()
        .unwrap()
        .contains("Last-Event-ID"));
    let anonymous = app.call("GET", "/v1/stream", None, None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

async fn a_friends_presence_change_arrives(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice_id, alice) = app.user("alice").await;
    let (bob_id, bob) = app.user("bob").await;
    let (carol_id, carol) = app.user("carol").await;
    let mut stream = Sse::open(&app, &alice, None).await;
    stream.hello().await;
    let request = app
        .call(
            "POST",
            "/v1/friend-requests",
            Some(&bob),
            None,
            Some(json!({ "to_user_id": alice_id })),
        )
        .await;
    assert_eq!(request.status, StatusCode::CREATED, "{:?}", request.body);
    let request_id = request.body["request_id"].as_str().unwrap().to_string();
    let accepted = app
        .call(
            "POST",
            &format!("/v1/friend-requests/{request_id}/accept"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert!(accepted.status.is_success(), "{:?}", accepted.body);
    // A stranger's presence is not alice's business; her friend's is.
    for (token, status) in [(&carol, "away"), (&bob, "away")] {
        let set = app
            .call(
                "PUT",
                "/v1/presence",
                Some(token),
                None,
                Some(json!({ "status": status })),
            )
            .await;
        assert!(set.status.is_success(), "{:?}", set.body);
    }
    let mut events = Vec::new();
    loop {
        let frame = stream.event().await;
        let done = frame.event.as_deref() == Some("PresenceChanged");
        events.push(frame);
        if done {
            break;
        }
    }
    let kinds: Vec<&str> = events.iter().map(|f| f.event.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "FriendRequestSent",
            "FriendRequestAccepted",
            "PresenceChanged"
        ]
    );
    let presence = events[2].envelope();
    assert_eq!(presence["payload"]["user_id"], json!(bob_id));
    assert_eq!(presence["payload"]["status"], json!("away"));
    for frame in stream.drain(Duration::from_millis(300)).await {
        assert_ne!(frame.envelope()["payload"]["user_id"], json!(carol_id));
    }
}

async fn without_the_event_log_the_stream_is_503(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let settings = parley_read_api::Settings::new(crate::app::keys());
    let config = crate::app::read_config(&app.read_url, None, settings);
    let router = parley_read_api::ReadApi::build(config)
        .await
        .unwrap()
        .application
        .router();
    let res = router
        .oneshot(
            Request::get("/v1/stream")
                .header("authorization", format!("Bearer {alice}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["detail"], json!("live updates need the event log"));
}

async fn a_resumed_stream_filters_by_membership_at_the_time(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let (bob_id, bob) = app.user("bob").await;
    let (left, _) = app.room(&alice, "left", "public").await;
    let (joined, _) = app.room(&alice, "joined", "public").await;
    app.join(&bob, left).await;
    let mut stream = Sse::open(&app, &bob, None).await;
    stream.hello().await;
    send(&app, &alice, left, "seen live").await;
    stream.event_of("MessageSent").await;
    let last_id = stream.last_id.clone().unwrap();
    drop(stream);

    // While bob is away: a message he may see, his leave, one he may not; and in
    // the other room one from before his join and one after it.
    let (while_member, _) = send(&app, &alice, left, "before bob left").await;
    let leave = app
        .call(
            "POST",
            &format!("/v1/rooms/{left}/leave"),
            Some(&bob),
            None,
            None,
        )
        .await;
    assert!(leave.status.is_success(), "{:?}", leave.body);
    send(&app, &alice, left, "after bob left").await;
    send(&app, &alice, joined, "before bob joined").await;
    app.join(&bob, joined).await;
    let (after_join, last) = send(&app, &alice, joined, "after bob joined").await;
    hub_reaches(&app, last).await;

    let mut stream = Sse::open(&app, &bob, Some(&last_id)).await;
    stream.hello().await;
    let mut events = Vec::new();
    loop {
        let frame = stream.event().await;
        let done = frame.envelope()["aggregate_id"] == json!(after_join);
        events.push(frame);
        if done {
            break;
        }
    }
    events.extend(stream.drain(Duration::from_millis(300)).await);
    let seen: Vec<(String, Value)> = events
        .iter()
        .map(|f| {
            let e = f.envelope();
            (
                f.event.clone().unwrap(),
                match e["aggregate_type"].as_str() {
                    Some("message") => e["aggregate_id"].clone(),
                    _ => e["payload"]["user_id"].clone(),
                },
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("MessageSent".to_string(), json!(while_member)),
            ("MemberLeft".to_string(), json!(bob_id)),
            ("MemberJoined".to_string(), json!(bob_id)),
            ("MessageSent".to_string(), json!(after_join)),
        ]
    );
}

async fn events_wait_until_queries_see_them(backend: Backend) {
    // No projectors run: nothing the log has is visible to queries yet.
    let app = TestApp::start_with(backend, false).await;
    let (_, alice) = app.user("alice").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    let mut stream = Sse::open(&app, &alice, None).await;
    stream.hello().await;
    let (message_id, _) = send(&app, &alice, room, "not yet").await;
    assert!(
        stream.drain(Duration::from_millis(500)).await.is_empty(),
        "streamed before the read models had it"
    );
    for projection in parley_projections::models::all() {
        parley_projections::Projector::new(
            projection,
            app.read.store.clone(),
            std::sync::Arc::new(parley_projections::LogFeed::new(app.log.clone())),
        )
        .catch_up()
        .await
        .unwrap();
    }
    let (frame, _) = stream.event_of("MessageSent").await;
    assert_eq!(frame.envelope()["aggregate_id"], json!(message_id));
}

/// SIGTERM (the service cancels `closing`): open streams end at once with a retry
/// hint and the id to resume after, so clients reconnect elsewhere and lose nothing.
async fn a_shutdown_ends_each_stream_with_a_retry_hint_and_where_to_resume(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    let mut stream = Sse::open(&app, &alice, None).await;
    stream.hello().await;
    let (first, cursor) = send(&app, &alice, room, "before the shutdown").await;
    let (frame, _) = stream.event_of("MessageSent").await;
    assert_eq!(frame.envelope()["aggregate_id"], json!(first));
    assert_eq!(frame.id.as_deref(), Some(sse_id(cursor).as_str()));

    app.read.closing.cancel();
    let goodbye = match stream.next(WAIT).await {
        Next::Frame(f) => f,
        Next::End => panic!("the stream ended without a goodbye"),
        Next::Timeout => panic!("the stream stayed open after the shutdown began"),
    };
    assert!(goodbye.data.is_none(), "{goodbye:?}");
    assert!(goodbye.comments[0].contains("shutting down"), "{goodbye:?}");
    assert_eq!(goodbye.retry.as_deref(), Some("1000"));
    assert_eq!(goodbye.id.as_deref(), Some(sse_id(cursor).as_str()));
    assert!(
        matches!(stream.next(WAIT).await, Next::End),
        "the stream ends"
    );
    // A stream opened while shutting down says goodbye at once, with where it
    // would have started.
    let mut late = Sse::open(&app, &alice, Some(&sse_id(cursor))).await;
    match late.next(WAIT).await {
        Next::Frame(f) => {
            assert!(f.comments[0].contains("shutting down"), "{f:?}");
            assert_eq!(f.id.as_deref(), Some(sse_id(cursor).as_str()));
        }
        _ => panic!("no goodbye on a stream opened while shutting down"),
    }
    assert!(matches!(late.next(WAIT).await, Next::End));
}

/// Attack (issue 21, item 10). Fails before: resuming from an id older than a
/// message replayed its `MessageSent` from the log with the original text,
/// after the author had redacted it or edited it away.
async fn a_resume_shows_no_text_that_was_redacted_or_edited_since(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    app.join(&bob, room).await;
    let mut stream = Sse::open(&app, &bob, None).await;
    let resume_from = stream.hello().await.id.unwrap();
    drop(stream);

    let (regretted, _) = send(&app, &alice, room, "my password is hunter2").await;
    let (typo, _) = send(&app, &alice, room, "secret typo").await;
    let edited = app
        .call(
            "PATCH",
            &format!("/v1/rooms/{room}/messages/{typo}"),
            Some(&alice),
            None,
            Some(json!({"body": "fixed"})),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{:?}", edited.body);
    let redacted = app
        .call(
            "DELETE",
            &format!("/v1/rooms/{room}/messages/{regretted}"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(redacted.status, StatusCode::OK, "{:?}", redacted.body);
    let last = ConsistencyToken::decode(&redacted.token.unwrap())
        .unwrap()
        .cursor;
    hub_reaches(&app, last).await;

    let mut stream = Sse::open(&app, &bob, Some(&resume_from)).await;
    stream.hello().await;
    let mut frames = Vec::new();
    while frames.len() < 4 {
        frames.push(stream.event().await);
    }
    let data: Vec<String> = frames.iter().map(|f| f.data.clone().unwrap()).collect();
    for text in ["hunter2", "secret typo"] {
        assert!(
            data.iter().all(|d| !d.contains(text)),
            "{text:?} came back in a resume: {data:?}"
        );
    }
    let sent_bodies: Vec<Value> = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("MessageSent"))
        .map(|f| f.envelope()["payload"]["body"].clone())
        .collect();
    assert_eq!(sent_bodies, vec![Value::Null, json!("fixed")]);
}

/// Attack (issue 21, item 5). Fails before: `Last-Event-ID: 0.0` made the
/// server read the whole log for one client, and one account could open any
/// number of streams.
async fn streams_per_user_are_capped_and_old_resumes_are_gone(backend: Backend) {
    let app = TestApp::start_custom(backend, true, |read| {
        read.max_streams_per_user = 2;
        read.stream_resume_window = 5;
    })
    .await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    let first = Sse::open(&app, &alice, None).await;
    let second = Sse::open(&app, &alice, None).await;
    let (status, _) = Sse::try_open(&app, &alice, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Another user is not affected, and a closed stream frees its place.
    Sse::open(&app, &bob, None).await;
    drop(first);
    let mut third = Sse::open(&app, &alice, None).await;
    let resume_from = third.hello().await.id.unwrap();
    drop((second, third));

    let mut last = Cursor::START;
    for i in 0..8 {
        last = send(&app, &alice, room, &format!("message {i}")).await.1;
    }
    hub_reaches(&app, last).await;
    let (status, _) = Sse::try_open(&app, &alice, Some(&resume_from)).await;
    assert_eq!(status, StatusCode::GONE);
    let (status, _) = Sse::try_open(&app, &alice, Some("0.0")).await;
    assert_eq!(status, StatusCode::GONE);
    // Within the window, a resume works.
    let recent = sse_id(last);
    let (status, _) = Sse::try_open(&app, &alice, Some(&recent)).await;
    assert_eq!(status, StatusCode::OK);
}
