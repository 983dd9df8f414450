//! Calls: started, answered, declined, left and missed through the command
//! API; every step reaches the room's members over the WebSocket, and
//! `GET /v1/calls/{call_id}` shows the call to them alone.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{Backend, TestApp};
use crate::ws::{pair, Ws, WAIT};

crate::both_backends!(
    a_call_rings_is_answered_and_ends_and_members_see_each_step,
    an_unanswered_call_becomes_a_missed_call,
    a_call_is_nobody_elses_business,
    signals_pass_only_between_the_calls_participants,
    a_loop_of_calls_is_refused,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signals_cross_replicas() {
        super::signals_cross_replicas(crate::app::Backend::Postgres).await;
    }
}

/// Starts a call; its id.
async fn start(app: &TestApp, token: &str, room: Uuid, kind: &str) -> Uuid {
    let started = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/calls"),
            Some(token),
            None,
            Some(json!({"kind": kind})),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    started.body["call_id"].as_str().unwrap().parse().unwrap()
}

async fn step(app: &TestApp, token: &str, call: Uuid, what: &str) -> StatusCode {
    app.call(
        "POST",
        &format!("/v1/calls/{call}/{what}"),
        Some(token),
        None,
        None,
    )
    .await
    .status
}

/// The call as `token`'s user sees it, once `done` says it is as expected.
async fn call_until(
    app: &TestApp,
    token: &str,
    call: Uuid,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let got = app
            .call("GET", &format!("/v1/calls/{call}"), Some(token), None, None)
            .await;
        if got.status == StatusCode::OK && done(&got.body) {
            return got.body;
        }
        assert!(
            started.elapsed() < WAIT,
            "the call is {} {}",
            got.status,
            got.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next event frame of `event_type`, skipping others.
async fn event_of(ws: &mut Ws, event_type: &str) -> Value {
    loop {
        let frame = ws.frame_of("event").await;
        if frame["event"]["event_type"] == event_type {
            return frame["event"]["payload"].clone();
        }
    }
}

async fn a_call_rings_is_answered_and_ends_and_members_see_each_step(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (mut b, _) = Ws::open(&app, &bob).await;

    let call = start(&app, &alice, room, "video").await;
    let rang = event_of(&mut b, "CallStarted").await;
    assert_eq!(rang["call_id"], json!(call));
    assert_eq!(rang["kind"], "video");
    assert_eq!(step(&app, &bob, call, "accept").await, StatusCode::OK);
    event_of(&mut b, "CallJoined").await;
    let active = call_until(&app, &alice, call, |c| c["status"] == "active").await;
    assert!(active["answered_at"].is_string(), "{active}");
    assert_eq!(active["members"].as_array().unwrap().len(), 2, "{active}");

    // Declining a call you are in is refused: leave it instead.
    assert_eq!(
        step(&app, &bob, call, "decline").await,
        StatusCode::CONFLICT
    );
    assert_eq!(step(&app, &alice, call, "leave").await, StatusCode::OK);
    assert_eq!(step(&app, &bob, call, "leave").await, StatusCode::OK);
    let ended = event_of(&mut b, "CallEnded").await;
    assert_eq!(ended["reason"], "completed");
    let over = call_until(&app, &bob, call, |c| c["status"] == "ended").await;
    assert_eq!(over["end_reason"], "completed");
    // Over is over.
    assert_eq!(step(&app, &bob, call, "accept").await, StatusCode::CONFLICT);
}

async fn an_unanswered_call_becomes_a_missed_call(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (mut b, _) = Ws::open(&app, &bob).await;
    let call = start(&app, &alice, room, "audio").await;
    // The test's command API rings for 3 s.
    let ended = event_of(&mut b, "CallEnded").await;
    assert_eq!(ended["call_id"], json!(call));
    assert_eq!(ended["reason"], "missed");
    let missed = call_until(&app, &alice, call, |c| c["status"] == "ended").await;
    assert_eq!(missed["end_reason"], "missed");
    assert!(missed["answered_at"].is_null(), "{missed}");
    // Answered calls are not missed: this one is still active well past 3 s.
    let answered = start(&app, &alice, room, "audio").await;
    assert_eq!(step(&app, &bob, answered, "accept").await, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = call_until(&app, &alice, answered, |_| true).await;
    assert_eq!(still["status"], "active", "{still}");
}

/// Attack: someone outside the room can neither see a call nor act on it,
/// and learns nothing from the answers (the same 404 as a call that does not
/// exist).
async fn a_call_is_nobody_elses_business(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (_, carol) = app.user("carol").await;
    let (mut c, _) = Ws::open(&app, &carol).await;
    let call = start(&app, &alice, room, "audio").await;
    call_until(&app, &bob, call, |_| true).await;

    let seen = app
        .call(
            "GET",
            &format!("/v1/calls/{call}"),
            Some(&carol),
            None,
            None,
        )
        .await;
    let nothing = app
        .call(
            "GET",
            &format!("/v1/calls/{}", Uuid::now_v7()),
            Some(&carol),
            None,
            None,
        )
        .await;
    assert_eq!(seen.status, StatusCode::NOT_FOUND);
    assert_eq!(nothing.status, StatusCode::NOT_FOUND);
    for what in ["accept", "decline", "leave"] {
        assert_eq!(
            step(&app, &carol, call, what).await,
            StatusCode::NOT_FOUND,
            "{what}"
        );
    }
    let refused = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/calls"),
            Some(&carol),
            None,
            Some(json!({"kind": "audio"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let carols = c.drain(Duration::from_millis(300)).await;
    assert!(
        carols.iter().all(|f| !f["event"]["event_type"]
            .as_str()
            .unwrap_or("")
            .starts_with("Call")),
        "{carols:?}"
    );
    // Nothing but audio or video.
    let odd = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/calls"),
            Some(&alice),
            None,
            Some(json!({"kind": "hologram"})),
        )
        .await;
    assert_eq!(odd.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// A room of three where Alice calls and Bob answers; Carol is a member of
/// the room, not of the call.
async fn call_of_two(app: &TestApp) -> (String, String, String, Uuid, Uuid) {
    let (alice, bob, room) = pair(app).await;
    let (_, carol) = app.user("carol").await;
    app.join(&carol, room).await;
    let call = start(app, &alice, room, "video").await;
    assert_eq!(step(app, &bob, call, "accept").await, StatusCode::OK);
    call_until(app, &alice, call, |c| c["status"] == "active").await;
    (alice, bob, carol, room, call)
}

fn user_of(token: &str) -> Uuid {
    crate::app::keys().verify_access(token).unwrap()
}

/// Attack: signals (SDP, ICE candidates) reach only the participant they are
/// for; a room member outside the call can neither send nor receive one.
async fn signals_pass_only_between_the_calls_participants(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, carol, _room, call) = call_of_two(&app).await;
    let (alice_id, bob_id) = (user_of(&alice), user_of(&bob));
    let (mut a, _) = Ws::open(&app, &alice).await;
    let (mut b, _) = Ws::open(&app, &bob).await;
    let (mut c, _) = Ws::open(&app, &carol).await;

    let offer = json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    a.send(json!({"type": "signal", "call_id": call, "to_user_id": bob_id, "data": offer}))
        .await;
    let got = b.frame_of("signal").await;
    assert_eq!(got["call_id"], json!(call));
    assert_eq!(got["from_user_id"], json!(alice_id));
    assert_eq!(got["data"], offer, "relayed as is");
    let answer = json!({"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n"});
    b.send(json!({"type": "signal", "call_id": call, "to_user_id": alice_id, "data": answer}))
        .await;
    let got = a.frame_of("signal").await;
    assert_eq!(got["from_user_id"], json!(bob_id));
    assert_eq!(got["data"], answer);
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 54400 typ host"});
    b.send(json!({"type": "signal", "call_id": call, "to_user_id": alice_id, "data": candidate}))
        .await;
    assert_eq!(a.frame_of("signal").await["data"], candidate);

    // Carol, in the room but not the call, heard none of it, and is refused
    // both ways.
    let carols = c.drain(Duration::from_millis(300)).await;
    assert!(carols.iter().all(|f| f["type"] != "signal"), "{carols:?}");
    c.send(json!({"type": "signal", "call_id": call, "to_user_id": alice_id, "data": {}}))
        .await;
    assert_eq!(c.frame_of("error").await["status"], 403);
    let carol_id = user_of(&carol);
    a.send(json!({"type": "signal", "call_id": call, "to_user_id": carol_id, "data": {}}))
        .await;
    assert_eq!(a.frame_of("error").await["status"], 403);
    // Too large for a notice between replicas.
    let huge = "x".repeat(crate::app::MAX_SIGNAL_BYTES + 1);
    a.send(json!({"type": "signal", "call_id": call, "to_user_id": bob_id, "data": {"sdp": huge}}))
        .await;
    assert_eq!(a.frame_of("error").await["status"], 400);

    // Once Bob left, nothing more goes to him.
    assert_eq!(step(&app, &bob, call, "leave").await, StatusCode::OK);
    call_until(&app, &alice, call, |c| {
        c["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state"] == "left")
    })
    .await;
    a.send(json!({"type": "signal", "call_id": call, "to_user_id": bob_id, "data": {}}))
        .await;
    assert_eq!(a.frame_of("error").await["status"], 403);
}

/// A signal sent on one read API replica reaches the participant connected
/// to another.
async fn signals_cross_replicas(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, _carol, _room, call) = call_of_two(&app).await;
    let (replica, _running) = app.another_read_api().await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    let mut b = Ws::try_connect_to(replica, Some(&bob), "").await.unwrap();
    b.frame_of("hello").await;
    let bob_id = user_of(&bob);
    // The other replica listens from its first socket on: send until it
    // arrives (signals are best effort across a link being set up).
    let started = Instant::now();
    loop {
        a.send(json!({"type": "signal", "call_id": call, "to_user_id": bob_id, "data": {"n": 1}}))
            .await;
        let frames = b.drain(Duration::from_millis(500)).await;
        if let Some(f) = frames.iter().find(|f| f["type"] == "signal") {
            assert_eq!(f["data"], json!({"n": 1}));
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the signal never crossed replicas"
        );
    }
}

/// Attack: a call rings every other member of the room, so a member cannot
/// start them in a loop (three at once, then one every ten seconds).
async fn a_loop_of_calls_is_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, _bob, room) = pair(&app).await;
    for _ in 0..3 {
        start(&app, &alice, room, "audio").await;
    }
    let refused = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/calls"),
            Some(&alice),
            None,
            Some(json!({"kind": "audio"})),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
}
