//! End to end over HTTP: command API + projectors + read API, wired as `parley dev`
//! wires them, on both backends (Postgres, and SQLite files).

mod app;
mod cache;
mod cache_writes;
mod calls;
mod missing_models;
mod read_your_writes;
mod receipts;
mod stream;
mod turn;
mod visibility;
mod ws;

macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::app::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::app::Backend::Sqlite).await;
                }
            )*
        }
    };
}
pub(crate) use both_backends;
