//! The read API as a service: [`ReadApi::build`] opens the read store (and the
//! event log, when given) and binds the address from typed settings. The binary
//! runs what it returns; tests call the same router in-process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use parley_event_log::SharedLog;
use parley_http_kit::prometheus::Pool;
use parley_http_kit::{Application, Lifecycle, ShutdownSettings};
use parley_projections::ReadStore;

use crate::{router, ReadState, Settings};

/// A read API query still running after this is stuck: its queries are key
/// lookups and short scans, so it gives its connection back.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a shutdown waits for WebSockets to send their goodbye (each
/// needs one frame and a close; a socket that cannot take them in this long
/// is a slow consumer whose client resumes anyway).
pub const SOCKETS_CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// What the read API is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The read models' database.
    pub read_database_url: String,
    pub db_pool_size: u32,
    /// The event log, for `/v1/stream`, consistency tokens and readiness lag;
    /// without it those answer 503.
    pub database_url: Option<String>,
    pub settings: Settings,
    pub shutdown: ShutdownSettings,
}

/// The read API, bound and ready to run.
pub struct ReadApi {
    pub application: Application,
    pub state: ReadState,
}

impl ReadApi {
    /// Opens the stores and binds the address.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let url = &config.read_database_url;
        let store = ReadStore::open_with_timeout(url, config.db_pool_size, STATEMENT_TIMEOUT)
            .await
            .with_context(|| {
                format!(
                    "opening the read store at {}",
                    parley_event_log::redact_url(url)
                )
            })?;
        // Two handles on the log: backlog resumes and token checks on one, the
        // live stream's hub on the other, so a burst of resumes cannot starve
        // the hub.
        let (log, hub_log) = match &config.database_url {
            Some(url) => (Some(connect(url).await?), Some(connect(url).await?)),
            None => (None, None),
        };
        let lifecycle = Lifecycle::new(config.shutdown);
        let mut pools = vec![Pool::Read(store.pool().clone())];
        pools.extend(log.clone().map(Pool::Log));
        let state = ReadState::with_hub_log(store, log, hub_log, config.settings)
            .with_closing(lifecycle.closing());
        let application = Application::bind(
            "read-api",
            config.listen,
            router(state.clone()),
            pools,
            lifecycle,
        )
        .await?;
        Ok(Self { application, state })
    }

    /// Serves until SIGTERM, then drains: requests in flight, then the
    /// WebSockets' goodbyes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.application.run_until_stopped().await;
        self.state.sockets_closed(SOCKETS_CLOSE_WITHIN).await;
        served
    }
}

async fn connect(url: &str) -> anyhow::Result<SharedLog> {
    parley_event_log::connect(url, 2).await.with_context(|| {
        format!(
            "opening the event log at {}",
            parley_event_log::redact_url(url)
        )
    })
}
