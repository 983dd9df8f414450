//! The command API over HTTP, called in-process (no socket), against each event
//! log backend: a fresh Postgres database per test, and a SQLite file per test.

/// Instantiates each listed test once per backend: `<module>::postgres::<test>`
/// and `<module>::sqlite::<test>`. A test is `async fn name(backend: Backend)`.
macro_rules! backend_tests {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
    };
}

mod helpers;

mod attacks;
mod concurrency;
mod errors;
mod friends;
mod health;
mod idempotency;
mod messages;
mod presence;
mod rooms;
mod sessions;
mod users;
