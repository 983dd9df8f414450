//! Concurrent starts (issue 23, item 1): replicas of every service started at
//! the same instant on empty databases all come up. Before the read models'
//! tables were created under a lock, two projectors starting together failed
//! on PostgreSQL's catalog (`pg_type_typname_nsp_index`), every time.
//!
//! A test binary of its own: fifteen processes' connections next to another
//! test's deployment exceeded the shared server's `max_connections` (100), and
//! cargo runs test binaries one after another.

// The scaled tests' deployment; this binary uses a part of it.
#[allow(dead_code)]
#[path = "../scaled/support.rs"]
mod support;

use std::time::Duration;

use futures::future::join_all;

use crate::support::Deployment;

/// Three of each service, by their arguments. Pools of two: the race is in
/// the start-up, not in the number of connections.
const SERVICES: [&[&str]; 5] = [
    &["command-api", "--migrate", "--db-pool-size", "2"],
    &["relay", "--partitions", "3"],
    &["projector", "--feed", "log", "--db-pool-size", "2"],
    &[
        "projector",
        "--feed",
        "kafka",
        "--session-timeout-ms",
        "6000",
        "--db-pool-size",
        "2",
    ],
    &["read-api", "--db-pool-size", "2"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_of_every_service_started_at_once_all_come_up() {
    for round in 0..3 {
        let Some(dep) = Deployment::new().await else {
            return;
        };
        // The log's tables first, as `parley migrate` would: the read API and
        // log-fed projectors do not migrate the log (command APIs racing to
        // migrate it are part of the test all the same).
        let mut started = Vec::new();
        for args in SERVICES {
            for _ in 0..3 {
                started.push((args, dep.spawn(args)));
            }
        }
        let waits = started
            .iter_mut()
            .map(|(args, proc)| proc.until_ready(args, Duration::from_secs(90)));
        join_all(waits).await;
        // Up and staying up: nobody died after its first good answer.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (args, proc) in &mut started {
            let exited = proc.child.try_wait().expect("process status");
            assert!(
                exited.is_none(),
                "round {round}: parley {args:?} exited: {exited:?}"
            );
        }
    }
}
