//! The users read model.

use parley_projections::models::Model;
use std::sync::Arc;

use parley_projections::models::users::{self, UserView, Users};
use uuid::Uuid;

use crate::support::{project, Env, Script};

async fn looks_up_known_users(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let alice = s.register("alice");
    let bob = s.register("Bob");
    project(&store, Arc::new(Users::live()), &s.events).await;
    let pool = store.pool();

    let unknown = Uuid::now_v7();
    let found = users::lookup(pool, &[bob, alice, unknown, alice])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(
        found[&alice],
        UserView {
            user_id: alice,
            username: "alice".into(),
            display_name: "ALICE".into()
        }
    );
    assert_eq!(
        found[&bob].username, "bob",
        "usernames are normalized by the domain"
    );
    assert!(!found.contains_key(&unknown));
    assert!(users::lookup(pool, &[]).await.unwrap().is_empty());

    // More ids than one IN list takes.
    let many: Vec<Uuid> = (0..1200).map(|_| Uuid::now_v7()).chain([alice]).collect();
    assert_eq!(users::lookup(pool, &many).await.unwrap().len(), 1);
}

on_both_backends!(looks_up_known_users);
