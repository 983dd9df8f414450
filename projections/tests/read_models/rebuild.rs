//! `rebuild`: a read model rebuilt into fresh tables while the live one keeps
//! serving (and keeps being fed), then swapped in, ends equal to a clean run.

use parley_projections::models::Model;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use parley_domain::message::{MessageEvent, MessageSent};
use parley_domain::values::{MessageBody, Visibility};
use parley_event_log::{Cursor, EventEnvelope};
use parley_projections::models::{history, rooms};
use parley_projections::rebuild::rebuild;
use parley_projections::{dead_letters, Feed, Projector, ReadStore};
use sqlx::Row;

use crate::support::{dump, project, Env, Script};

on_both_backends!(
    rebuild_during_reads_and_writes_equals_a_clean_run,
    a_send_logged_twice_is_parked_by_a_rebuild_and_the_rest_applies,
    unknown_projection_is_refused
);

/// A log that grows while it is read.
struct GrowingFeed(Mutex<Vec<EventEnvelope>>);

#[async_trait]
impl Feed for GrowingFeed {
    async fn read_after(&self, cursor: Cursor, limit: i64) -> anyhow::Result<Vec<EventEnvelope>> {
        let events = self.0.lock().unwrap();
        Ok(events
            .iter()
            .filter(|e| e.cursor() > cursor)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn wait(&self, _timeout: Duration) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn history_only(
    dump: std::collections::BTreeMap<String, Vec<Vec<String>>>,
) -> std::collections::BTreeMap<String, Vec<Vec<String>>> {
    dump.into_iter()
        .filter(|(t, _)| t.starts_with("history_"))
        .collect()
}

async fn rebuild_during_reads_and_writes_equals_a_clean_run(env: Env) {
    let mut script = Script::new();
    let alice = script.register("alice");
    let bob = script.register("bob");
    let room = script.create_room(alice, "general", Visibility::Public);
    script.join(room, bob);
    for i in 0..1200 {
        let id = script.send(
            room,
            if i % 2 == 0 { alice } else { bob },
            &format!("message {i}"),
        );
        if i % 7 == 0 {
            script.edit(
                id,
                room,
                if i % 2 == 0 { alice } else { bob },
                &format!("edited {i}"),
            );
        }
        if i % 11 == 0 {
            script.react(id, room, bob, "👍");
        }
        if i % 13 == 0 {
            script.redact(id, room, alice);
        }
    }
    let events = script.events.clone();
    let first = events.len() * 2 / 3;

    let store = env.store().await;
    let feed = Arc::new(GrowingFeed(Mutex::new(events[..first].to_vec())));
    // The live model, fed as the log grows.
    let live = Arc::new(Projector::new(
        Arc::new(history::History::live()),
        store.clone(),
        feed.clone(),
    ));
    live.prepare().await.unwrap();
    // The rooms model answers the membership side of the reader's queries.
    project(&store, Arc::new(rooms::Rooms::live()), &events).await;
    let (stop_live, stop_rx) = tokio::sync::watch::channel(false);
    let live_task = {
        let live = live.clone();
        tokio::spawn(async move { live.run(stop_rx).await })
    };

    // Readers keep querying the live model throughout.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (store, stop, answered) = (store.clone(), stop_reading.clone(), answered.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                history::page(store.pool(), room, history::PageRequest::Newest, 50, bob)
                    .await
                    .expect("queries keep answering during a rebuild");
                answered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // The log keeps growing while the rebuild runs.
    let writer = {
        let (feed, rest) = (feed.clone(), events[first..].to_vec());
        tokio::spawn(async move {
            for chunk in rest.chunks(40) {
                feed.0.lock().unwrap().extend_from_slice(chunk);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };

    let report = rebuild(&store, feed.clone(), history::History::NAME, |_, _| {})
        .await
        .expect("rebuild");
    writer.await.unwrap();
    assert!(report.events > 0);

    // Let the live projector apply what arrived after the swap, then stop it.
    let last = events.last().unwrap().cursor();
    let mut applied = live.subscribe();
    tokio::time::timeout(Duration::from_secs(30), applied.wait_for(|c| *c >= last))
        .await
        .unwrap()
        .unwrap();
    stop_live.send(true).unwrap();
    live_task.await.unwrap().unwrap();
    stop_reading.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    assert!(
        answered.load(Ordering::SeqCst) > 0,
        "the reader ran during the rebuild"
    );

    assert_equals_a_clean_run(&env, &store, &feed, &events).await;

    // No rebuild tables or checkpoints are left behind.
    let keys: Vec<String> = sqlx::query("SELECT projection FROM projection_checkpoints")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("projection"))
        .collect();
    assert!(keys.iter().all(|k| !k.contains("_r")), "{keys:?}");
    assert_eq!(
        store.checkpoint(history::History::NAME).await.unwrap(),
        last
    );
}

/// A rebuild inserts sent messages without a conflict check (its tables are
/// fresh and the log holds each send once). A log that breaks that rule anyway
/// must not fail the rebuild: the second send is parked and everything else
/// applies, ending equal to the live model.
async fn a_send_logged_twice_is_parked_by_a_rebuild_and_the_rest_applies(env: Env) {
    let mut script = Script::new();
    let alice = script.register("alice");
    let room = script.create_room(alice, "general", Visibility::Public);
    let first = script.send(room, alice, "first");
    let again = script.push(
        "message",
        first,
        MessageEvent::from(MessageSent {
            message_id: first,
            room_id: room,
            sender_id: alice,
            body: MessageBody::parse("sent again").unwrap(),
            reply_to: None,
            sent_at: script.now(),
            format: Default::default(),
        }),
    );
    let second = script.send(room, alice, "second");
    script.edit(first, room, alice, "first, edited");
    let events = script.events.clone();

    let store = env.store().await;
    let feed = Arc::new(GrowingFeed(Mutex::new(events.clone())));
    rebuild(&store, feed.clone(), history::History::NAME, |_, _| {})
        .await
        .expect("the rebuild finishes");

    let parked = dead_letters(&store, 10).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].event_id, again.event_id.to_string());
    let bodies: Vec<(String, Option<String>)> =
        sqlx::query("SELECT message_id, body FROM history_messages ORDER BY position")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("message_id"), r.get("body")))
            .collect();
    assert_eq!(
        bodies,
        [
            (first.to_string(), Some("first, edited".to_string())),
            (second.to_string(), Some("second".to_string())),
        ]
    );

    assert_equals_a_clean_run(&env, &store, &feed, &events).await;
}

/// Asserts that `store`'s history equals a clean run of `events` into a new store.
async fn assert_equals_a_clean_run(
    env: &Env,
    store: &ReadStore,
    feed: &Arc<GrowingFeed>,
    events: &[EventEnvelope],
) {
    let clean = env.store().await;
    project(&clean, Arc::new(history::History::live()), events).await;
    // `dump` reads every model's tables.
    for target in [store, &clean] {
        for projection in parley_projections::models::all() {
            Projector::new(projection, target.clone(), feed.clone())
                .prepare()
                .await
                .unwrap();
        }
    }
    assert_eq!(
        history_only(dump(store, false).await),
        history_only(dump(&clean, false).await)
    );
}

async fn unknown_projection_is_refused(env: Env) {
    let store = env.store().await;
    let feed = Arc::new(GrowingFeed(Mutex::new(Vec::new())));
    let err = rebuild(&store, feed, "nonsense", |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no projection named"), "{err}");
    assert!(
        err.to_string().contains("history"),
        "lists the known ones: {err}"
    );
}
