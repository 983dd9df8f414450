//! The read models, tested on every backend: each model's behaviour, and the
//! invariants the projector runtime and the models keep together (3, 4 and 8).

/// Runs each listed test (an `async fn(Env)` of the calling module) on Postgres and
/// on SQLite.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Env::postgres()).await;
                }
            )*
        }
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Env::sqlite()).await;
                }
            )*
        }
    };
}

mod script;
mod support;

mod friends;
mod history;
mod invariants;
mod partitions;
mod presence;
mod rebuild;
mod restarts;
mod rooms;
mod users;
