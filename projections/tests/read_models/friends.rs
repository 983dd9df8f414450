//! The friends read model: requests, friendships and blocks.

use parley_projections::models::Model;
use std::sync::Arc;

use parley_domain::ids::friendship_id;
use parley_projections::models::friends::{self, Direction, Friends};
use uuid::Uuid;

use crate::support::{project, Env, Script};

async fn friends_of(store: &parley_projections::ReadStore, user: Uuid) -> Vec<Uuid> {
    friends::friends_of(store.pool(), user)
        .await
        .unwrap()
        .iter()
        .map(|f| f.user_id)
        .collect()
}

async fn requests(
    store: &parley_projections::ReadStore,
    user: Uuid,
    direction: Direction,
) -> Vec<(Uuid, Uuid, Uuid)> {
    friends::requests_of(store.pool(), user, direction)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.request_id, r.from_user_id, r.to_user_id))
        .collect()
}

async fn request_accept_and_unfriend(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    s.request_friend(alice, bob);
    let sent_at = s.events.last().unwrap().recorded_at;
    s.request_friend(carol, alice);
    project(&store, Arc::new(Friends::live()), &s.events).await;

    let ab = friendship_id(alice, bob);
    assert_eq!(
        requests(&store, alice, Direction::Outgoing).await,
        vec![(ab, alice, bob)]
    );
    assert_eq!(
        requests(&store, bob, Direction::Incoming).await,
        vec![(ab, alice, bob)]
    );
    assert!(requests(&store, bob, Direction::Outgoing).await.is_empty());
    assert_eq!(
        requests(&store, alice, Direction::Incoming).await,
        vec![(friendship_id(carol, alice), carol, alice)]
    );
    assert_eq!(
        friends::requests_of(store.pool(), bob, Direction::Incoming)
            .await
            .unwrap()[0]
            .sent_at,
        sent_at
    );
    assert!(friends_of(&store, alice).await.is_empty());

    s.accept_friend(alice, bob);
    let since = s.events.last().unwrap().recorded_at;
    project(&store, Arc::new(Friends::live()), &s.events).await;
    assert_eq!(friends_of(&store, alice).await, vec![bob]);
    assert_eq!(friends_of(&store, bob).await, vec![alice]);
    assert_eq!(
        friends::friends_of(store.pool(), bob).await.unwrap()[0].since,
        since
    );
    assert!(requests(&store, bob, Direction::Incoming).await.is_empty());
    assert!(requests(&store, alice, Direction::Outgoing)
        .await
        .is_empty());

    s.accept_friend(carol, alice);
    project(&store, Arc::new(Friends::live()), &s.events).await;
    let mut alices = friends_of(&store, alice).await;
    assert_eq!(alices, vec![carol, bob], "newest friendship first");
    s.unfriend(bob, alice);
    project(&store, Arc::new(Friends::live()), &s.events).await;
    alices = friends_of(&store, alice).await;
    assert_eq!(alices, vec![carol]);
    assert!(friends_of(&store, bob).await.is_empty());
}

async fn decline_cancel_and_mutual_requests(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    s.request_friend(alice, bob);
    s.decline_friend(alice, bob);
    s.request_friend(alice, carol);
    s.cancel_friend(alice, carol);
    project(&store, Arc::new(Friends::live()), &s.events).await;
    for user in [alice, bob, carol] {
        assert!(requests(&store, user, Direction::Incoming).await.is_empty());
        assert!(requests(&store, user, Direction::Outgoing).await.is_empty());
        assert!(friends_of(&store, user).await.is_empty());
    }

    // After a decline, a new request (same id) from the other side.
    s.request_friend(bob, alice);
    project(&store, Arc::new(Friends::live()), &s.events).await;
    assert_eq!(
        requests(&store, alice, Direction::Incoming).await,
        vec![(friendship_id(alice, bob), bob, alice)]
    );
    // alice asks bob too: the domain accepts bob's request instead.
    s.accept_friend(bob, alice);
    project(&store, Arc::new(Friends::live()), &s.events).await;
    assert_eq!(friends_of(&store, alice).await, vec![bob]);
    assert_eq!(friends_of(&store, bob).await, vec![alice]);
    assert!(requests(&store, alice, Direction::Incoming)
        .await
        .is_empty());
    assert_eq!(
        "incoming".parse::<Direction>().unwrap(),
        Direction::Incoming
    );
    assert_eq!(
        "outgoing".parse::<Direction>().unwrap(),
        Direction::Outgoing
    );
    assert!("sideways".parse::<Direction>().is_err());
}

async fn blocks_end_friendships_and_requests(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol, dave) = (
        s.register("alice"),
        s.register("bob"),
        s.register("carol"),
        s.register("dave"),
    );
    s.request_friend(alice, bob);
    s.accept_friend(alice, bob);
    s.request_friend(carol, alice);
    s.block(alice, bob);
    s.block(alice, carol);
    s.block(dave, alice);
    project(&store, Arc::new(Friends::live()), &s.events).await;
    let pool = store.pool();

    assert!(friends_of(&store, alice).await.is_empty());
    assert!(friends_of(&store, bob).await.is_empty());
    assert!(requests(&store, alice, Direction::Incoming)
        .await
        .is_empty());
    assert!(requests(&store, carol, Direction::Outgoing)
        .await
        .is_empty());
    let blocked: Vec<_> = friends::blocks_of(pool, alice)
        .await
        .unwrap()
        .iter()
        .map(|b| b.user_id)
        .collect();
    assert_eq!(blocked, vec![carol, bob], "newest block first");
    assert!(
        friends::blocks_of(pool, bob).await.unwrap().is_empty(),
        "blocks are directional"
    );
    assert!(friends::is_blocked_either_way(pool, alice, bob)
        .await
        .unwrap());
    assert!(friends::is_blocked_either_way(pool, bob, alice)
        .await
        .unwrap());
    assert!(friends::is_blocked_either_way(pool, alice, dave)
        .await
        .unwrap());
    assert!(!friends::is_blocked_either_way(pool, bob, carol)
        .await
        .unwrap());

    s.unblock(alice, bob);
    s.block(bob, alice);
    s.unblock(alice, carol);
    project(&store, Arc::new(Friends::live()), &s.events).await;
    assert!(
        friends::is_blocked_either_way(pool, alice, bob)
            .await
            .unwrap(),
        "bob still blocks alice"
    );
    assert!(!friends::is_blocked_either_way(pool, alice, carol)
        .await
        .unwrap());
    let blocked: Vec<_> = friends::blocks_of(pool, alice)
        .await
        .unwrap()
        .iter()
        .map(|b| b.user_id)
        .collect();
    assert!(blocked.is_empty());
    assert_eq!(
        friends::blocks_of(pool, bob).await.unwrap()[0].user_id,
        alice
    );
    assert!(
        friends_of(&store, alice).await.is_empty(),
        "unblocking does not restore a friendship"
    );
}

on_both_backends!(
    request_accept_and_unfriend,
    decline_cancel_and_mutual_requests,
    blocks_end_friendships_and_requests
);
