//! The history read model: edits, redactions, reactions, replies and paging.

use parley_projections::models::Model;
use std::sync::Arc;

use parley_domain::values::Visibility;
use parley_projections::models::history::{self, decode_cursor, History, PageRequest, MAX_PAGE};
use uuid::Uuid;

use crate::support::{project, Env, Script};

async fn edits_redactions_and_replies(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let alice = s.register("alice");
    let room = s.create_room(alice, "general", Visibility::Public);
    let first = s.send(room, alice, "hello");
    let reply = s.send_reply(room, alice, "a reply", Some(first));
    s.edit(first, room, alice, "hello, edited");
    let edit_at = s.events.last().unwrap().position;
    s.edit(first, room, alice, "hello, edited twice");
    let last_edit_at = s.events.last().unwrap().position;
    s.react(reply, room, alice, "👍");
    s.redact(reply, room, alice);
    // An edit after the redaction (never produced by the domain) cannot bring it back.
    s.edit(reply, room, alice, "resurrected");
    project(&store, Arc::new(History::live()), &s.events).await;

    let page = history::page(store.pool(), room, PageRequest::Newest, 50, alice)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 2);
    let (m1, m2) = (&page.messages[0], &page.messages[1]);
    assert_eq!(m1.message_id, first);
    assert_eq!(m1.body.as_deref(), Some("hello, edited twice"));
    assert_eq!(m1.edited_at, Some(Script::time_of(last_edit_at)));
    assert_ne!(m1.edited_at, Some(Script::time_of(edit_at)));
    assert!(!m1.redacted);
    assert_eq!(m1.reply_to, None);
    assert_eq!(m1.room_id, room);
    assert_eq!(m1.sender_id, alice);
    // The tombstone stays in place, body gone, reactions gone, reply kept.
    assert_eq!(m2.message_id, reply);
    assert!(m2.redacted);
    assert_eq!(m2.body, None);
    assert!(m2.reactions.is_empty());
    assert_eq!(m2.reply_to, Some(first));
    assert!(m1.position < m2.position);
    assert!(page.before.is_none() && page.after.is_none());
}

async fn reactions_count_and_me(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    let room = s.create_room(alice, "general", Visibility::Public);
    let m = s.send(room, alice, "react to me");
    s.react(m, room, alice, "👍");
    s.react(m, room, bob, "👍");
    s.react(m, room, bob, "🎉");
    s.react(m, room, carol, "🎉");
    s.react(m, room, carol, "👀");
    s.unreact(m, room, carol, "👀");
    s.unreact(m, room, alice, "👍");
    project(&store, Arc::new(History::live()), &s.events).await;

    let reactions = |viewer: Uuid| {
        let pool = store.pool().clone();
        async move {
            let page = history::page(&pool, room, PageRequest::Newest, 10, viewer)
                .await
                .unwrap();
            page.messages[0]
                .reactions
                .iter()
                .map(|r| (r.emoji.clone(), r.count, r.me))
                .collect::<Vec<_>>()
        }
    };
    let mut for_bob = reactions(bob).await;
    for_bob.sort();
    let mut expected = vec![("🎉".to_string(), 2, true), ("👍".to_string(), 1, true)];
    expected.sort();
    assert_eq!(for_bob, expected);
    let mut for_alice = reactions(alice).await;
    for_alice.sort();
    let mut expected = vec![("🎉".to_string(), 2, false), ("👍".to_string(), 1, false)];
    expected.sort();
    assert_eq!(for_alice, expected);
    let mut for_carol = reactions(carol).await;
    for_carol.sort();
    let mut expected = vec![("🎉".to_string(), 2, true), ("👍".to_string(), 1, false)];
    expected.sort();
    assert_eq!(for_carol, expected);
}

async fn pages_both_ways_with_cursors(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let alice = s.register("alice");
    let room = s.create_room(alice, "busy", Visibility::Public);
    let other = s.create_room(alice, "other", Visibility::Public);
    let mut sent = Vec::new();
    for i in 0..205 {
        sent.push(s.send(room, alice, &format!("m{i}")));
        if i % 50 == 0 {
            s.send(other, alice, "elsewhere");
        }
    }
    project(&store, Arc::new(History::live()), &s.events).await;
    let pool = store.pool();
    let ids = |page: &history::HistoryPage| {
        page.messages
            .iter()
            .map(|m| m.message_id)
            .collect::<Vec<_>>()
    };

    // The newest page, clamped to 200, oldest first.
    let newest = history::page(pool, room, PageRequest::Newest, 1000, alice)
        .await
        .unwrap();
    assert_eq!(newest.messages.len() as i64, MAX_PAGE);
    assert_eq!(ids(&newest), sent[5..].to_vec());
    assert!(newest.after.is_none());
    let before = decode_cursor(newest.before.as_deref().expect("older messages remain")).unwrap();

    // The rest, older.
    let older = history::page(pool, room, PageRequest::Before(before), 1000, alice)
        .await
        .unwrap();
    assert_eq!(ids(&older), sent[..5].to_vec());
    assert!(
        older.before.is_none(),
        "the oldest end has no before cursor"
    );
    let after = decode_cursor(older.after.as_deref().expect("newer messages exist")).unwrap();
    let back = history::page(pool, room, PageRequest::After(after), 3, alice)
        .await
        .unwrap();
    assert_eq!(ids(&back), sent[5..8].to_vec());

    // Forward from the start, 37 at a time, reaches everything once, in order.
    let mut walked = Vec::new();
    let mut request = PageRequest::After(0);
    loop {
        let page = history::page(pool, room, request, 37, alice).await.unwrap();
        assert!(page.messages.len() <= 37);
        walked.extend(ids(&page));
        match page.after.as_deref() {
            Some(cursor) => request = PageRequest::After(decode_cursor(cursor).unwrap()),
            None => break,
        }
    }
    assert_eq!(walked, sent);

    // Backward from the newest, 64 at a time.
    let mut walked = Vec::new();
    let mut request = PageRequest::Newest;
    loop {
        let page = history::page(pool, room, request, 64, alice).await.unwrap();
        let mut chunk = ids(&page);
        chunk.extend(walked);
        walked = chunk;
        match page.before.as_deref() {
            Some(cursor) => request = PageRequest::Before(decode_cursor(cursor).unwrap()),
            None => break,
        }
    }
    assert_eq!(walked, sent);

    // A limit below 1 still returns one message; the order is stable.
    let one = history::page(pool, room, PageRequest::Newest, 0, alice)
        .await
        .unwrap();
    assert_eq!(ids(&one), vec![sent[204]]);
    let again = history::page(pool, room, PageRequest::Newest, 1000, alice)
        .await
        .unwrap();
    assert_eq!(again, newest);
    let empty = history::page(pool, Uuid::now_v7(), PageRequest::Newest, 10, alice)
        .await
        .unwrap();
    assert!(empty.messages.is_empty() && empty.before.is_none() && empty.after.is_none());
}

on_both_backends!(
    edits_redactions_and_replies,
    reactions_count_and_me,
    pages_both_ways_with_cursors
);
