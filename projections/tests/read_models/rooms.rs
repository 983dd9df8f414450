//! The rooms read model: members and roles, invites, direct rooms, the last message
//! and unread counts.

use parley_projections::models::Model;
use std::sync::Arc;

use parley_domain::values::{Role, Visibility};
use parley_projections::models::rooms::{self, Rooms};
use uuid::Uuid;

use crate::support::{project, Env, Script};

fn summary(list: &[rooms::RoomSummary], room_id: Uuid) -> &rooms::RoomSummary {
    list.iter()
        .find(|r| r.room_id == room_id)
        .expect("room in the list")
}

async fn members_roles_leave_and_kick(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol, dave) = (
        s.register("alice"),
        s.register("bob"),
        s.register("carol"),
        s.register("dave"),
    );
    let room = s.create_room(alice, "general", Visibility::Public);
    let created = s.events[s.events.len() - 2].recorded_at;
    s.join(room, bob);
    s.join(room, carol);
    s.join(room, dave);
    s.change_role(room, bob, Role::Admin, alice);
    s.kick(room, carol, bob);
    s.leave(room, dave);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let pool = store.pool();

    let details = rooms::room(pool, room).await.unwrap().expect("the room");
    assert_eq!(details.name.as_deref(), Some("general"));
    assert_eq!(details.topic.as_deref(), Some("about general"));
    assert_eq!(details.visibility, "public");
    assert!(!details.is_direct);
    assert_eq!(details.created_at, created);
    assert_eq!(details.member_count, 2);
    let members: Vec<_> = details
        .members
        .iter()
        .map(|m| (m.user_id, m.role.as_str()))
        .collect();
    assert_eq!(members, vec![(alice, "owner"), (bob, "admin")]);

    assert!(rooms::is_member(pool, room, alice).await.unwrap());
    assert!(rooms::is_member(pool, room, bob).await.unwrap());
    assert!(!rooms::is_member(pool, room, carol).await.unwrap());
    assert!(!rooms::is_member(pool, room, dave).await.unwrap());
    assert_eq!(rooms::room_ids_of(pool, bob).await.unwrap(), vec![room]);
    assert!(rooms::room_ids_of(pool, carol).await.unwrap().is_empty());
    assert!(rooms::rooms_of(pool, dave).await.unwrap().is_empty());
    assert_eq!(
        rooms::rooms_of(pool, alice).await.unwrap()[0].member_count,
        2
    );
    assert!(rooms::room(pool, Uuid::now_v7()).await.unwrap().is_none());

    // Rejoining after a kick makes a member again, with the new join time.
    s.join(room, carol);
    let rejoined_at = s.events.last().unwrap().recorded_at;
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let details = rooms::room(pool, room).await.unwrap().unwrap();
    assert_eq!(details.member_count, 3);
    let carol_member = details.members.iter().find(|m| m.user_id == carol).unwrap();
    assert_eq!(
        (carol_member.role.as_str(), carol_member.joined_at),
        ("member", rejoined_at)
    );
}

async fn invites_last_until_joined(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    let private = s.create_room(alice, "private", Visibility::Private);
    let other = s.create_room(alice, "other", Visibility::Private);
    s.invite(private, bob, alice);
    s.invite(private, carol, alice);
    s.invite(other, bob, alice);
    s.join(private, bob);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let pool = store.pool();

    let bobs: Vec<_> = rooms::invites_of(pool, bob)
        .await
        .unwrap()
        .iter()
        .map(|i| (i.room_id, i.invited_by))
        .collect();
    assert_eq!(bobs, vec![(other, alice)]);
    let carols = rooms::invites_of(pool, carol).await.unwrap();
    assert_eq!(carols.len(), 1);
    assert_eq!(carols[0].room_id, private);
    assert!(!rooms::is_member(pool, private, carol).await.unwrap());
    let details = rooms::room(pool, private).await.unwrap().unwrap();
    assert_eq!(details.visibility, "private");
    assert_eq!(details.member_count, 2);
}

async fn direct_rooms(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    let dm = s.direct_room(bob, alice);
    s.send(dm, bob, "psst");
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let pool = store.pool();

    assert_eq!(dm, parley_domain::ids::direct_room_id(alice, bob));
    let list = rooms::rooms_of(pool, alice).await.unwrap();
    assert_eq!(list.len(), 1);
    let r = &list[0];
    assert_eq!(r.room_id, dm);
    assert!(r.is_direct);
    assert_eq!(
        (r.name.as_deref(), r.topic.as_deref(), r.visibility.as_str()),
        (None, None, "private")
    );
    assert_eq!(r.member_count, 2);
    assert_eq!(r.unread_count, 1);
    assert_eq!(
        r.last_message.as_ref().unwrap().preview.as_deref(),
        Some("psst")
    );
    let details = rooms::room(pool, dm).await.unwrap().unwrap();
    assert!(details.is_direct);
    let mut members: Vec<_> = details
        .members
        .iter()
        .map(|m| (m.user_id, m.role.clone()))
        .collect();
    members.sort();
    let mut expected = vec![(alice, "member".to_string()), (bob, "member".to_string())];
    expected.sort();
    assert_eq!(members, expected);
    assert!(rooms::rooms_of(pool, carol).await.unwrap().is_empty());
}

async fn last_message_and_preview(env: Env) {
    let store = env.store().await;
    let pool = store.pool().clone();
    let mut s = Script::new();
    let (alice, bob) = (s.register("alice"), s.register("bob"));
    let quiet = s.create_room(alice, "quiet", Visibility::Public);
    let busy = s.create_room(alice, "busy", Visibility::Public);
    s.join(busy, bob);
    let older = s.send(busy, bob, "older");
    let long = format!(
        "{}{}",
        "é".repeat(99),
        "🎉 and then some more text that no preview shows"
    );
    let last = s.send(busy, alice, &long);
    let last_sent = s.events.last().unwrap().recorded_at;
    project(&store, Arc::new(Rooms::live()), &s.events).await;

    // Most recent activity first: the busy room has a message after quiet's creation.
    let list = rooms::rooms_of(&pool, alice).await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.room_id).collect::<Vec<_>>(),
        vec![busy, quiet]
    );
    assert!(summary(&list, quiet).last_message.is_none());
    let lm = summary(&list, busy).last_message.clone().unwrap();
    assert_eq!(
        (lm.message_id, lm.sender_id, lm.sent_at, lm.redacted),
        (last, alice, last_sent, false)
    );
    let preview = lm.preview.unwrap();
    assert_eq!(preview.chars().count(), 100);
    assert_eq!(preview, format!("{}🎉", "é".repeat(99)));

    // Editing or redacting an older message leaves the preview alone.
    s.edit(older, busy, bob, "older, edited");
    s.redact(older, busy, bob);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let lm = summary(&rooms::rooms_of(&pool, alice).await.unwrap(), busy)
        .last_message
        .clone()
        .unwrap();
    assert_eq!(lm.message_id, last);
    assert_eq!(lm.preview.as_deref(), Some(preview.as_str()));

    // Editing the last one updates it; redacting it empties it.
    s.edit(last, busy, alice, "short now");
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let lm = summary(&rooms::rooms_of(&pool, alice).await.unwrap(), busy)
        .last_message
        .clone()
        .unwrap();
    assert_eq!(
        (lm.preview.as_deref(), lm.redacted, lm.sent_at),
        (Some("short now"), false, last_sent)
    );
    s.redact(last, busy, alice);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let lm = summary(&rooms::rooms_of(&pool, alice).await.unwrap(), busy)
        .last_message
        .clone()
        .unwrap();
    assert_eq!((lm.message_id, lm.preview, lm.redacted), (last, None, true));

    // A new message in the quiet room moves it to the top.
    let newest = s.send(quiet, alice, "wake up");
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let list = rooms::rooms_of(&pool, alice).await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.room_id).collect::<Vec<_>>(),
        vec![quiet, busy]
    );
    let lm = list[0].last_message.clone().unwrap();
    assert_eq!(
        (lm.message_id, lm.preview.as_deref()),
        (newest, Some("wake up"))
    );
    // A room joined later sorts by the join.
    let fresh = s.create_room(bob, "fresh", Visibility::Public);
    s.join(fresh, alice);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    assert_eq!(
        rooms::rooms_of(&pool, alice).await.unwrap()[0].room_id,
        fresh
    );
}

async fn unread_counts_follow_read_markers(env: Env) {
    let store = env.store().await;
    let pool = store.pool().clone();
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    let room = s.create_room(alice, "general", Visibility::Public);
    s.join(room, bob);
    let m1 = s.send(room, alice, "one");
    let m2 = s.send(room, alice, "two");
    let m3 = s.send(room, alice, "three");
    let b1 = s.send(room, bob, "bob's");
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let unread = |user: Uuid| {
        let pool = pool.clone();
        async move { summary(&rooms::rooms_of(&pool, user).await.unwrap(), room).unread_count }
    };
    assert_eq!(
        unread(bob).await,
        3,
        "others' messages count, not one's own"
    );
    assert_eq!(unread(alice).await, 1);

    s.read(room, bob, m2);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    assert_eq!(unread(bob).await, 1);
    s.read(room, bob, b1);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    assert_eq!(unread(bob).await, 0);
    // The marker may move back.
    s.read(room, bob, m1);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    assert_eq!(unread(bob).await, 2);

    // A redacted message is nothing to read.
    s.redact(m3, room, alice);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    assert_eq!(unread(bob).await, 1);

    // A member who joins later has read nothing from before they came.
    s.join(room, carol);
    let m4 = s.send(room, alice, "welcome carol");
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    assert_eq!(unread(carol).await, 1);
    assert_eq!(unread(bob).await, 2);
    s.read(room, alice, m4);
    s.read(room, carol, m4);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    assert_eq!(unread(alice).await, 0);
    assert_eq!(unread(carol).await, 0);
}

/// A ban takes the user out of the room and withdraws a pending invite.
async fn a_ban_removes_the_member_and_their_invite(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    let room = s.create_room(alice, "general", Visibility::Private);
    s.invite(room, bob, alice);
    s.join(room, bob);
    s.invite(room, carol, alice);
    s.ban(room, bob, alice);
    s.ban(room, carol, alice);
    project(&store, Arc::new(Rooms::live()), &s.events).await;
    let pool = store.pool();
    assert!(!rooms::is_member(pool, room, bob).await.unwrap());
    assert!(rooms::rooms_of(pool, bob).await.unwrap().is_empty());
    assert!(rooms::invites_of(pool, carol).await.unwrap().is_empty());
    assert_eq!(
        rooms::room(pool, room).await.unwrap().unwrap().member_count,
        1
    );
}

on_both_backends!(
    a_ban_removes_the_member_and_their_invite,
    members_roles_leave_and_kick,
    invites_last_until_joined,
    direct_rooms,
    last_message_and_preview,
    unread_counts_follow_read_markers,
);
