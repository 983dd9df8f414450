//! The command API as a service: [`CommandApi::build`] opens the event log and
//! binds the address from typed settings. The binary runs what it returns;
//! tests call the same router in-process (port 0 keeps them apart).

use std::net::SocketAddr;

use anyhow::Context;
use parley_event_log::SharedLog;
use parley_http_kit::prometheus::Pool;
use parley_http_kit::{Application, Lifecycle, ShutdownSettings};

use crate::{router, AppState, Settings};

/// What the command API is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The event log: `postgres://...` or `sqlite://...`.
    pub database_url: String,
    pub db_pool_size: u32,
    /// Apply the log's migrations at start-up (otherwise `parley migrate` has).
    pub migrate: bool,
    pub settings: Settings,
    pub shutdown: ShutdownSettings,
}

/// The command API, bound and ready to run.
pub struct CommandApi {
    pub application: Application,
    pub state: AppState,
    pub log: SharedLog,
}

impl CommandApi {
    /// Opens the log (migrating it when asked) and binds the address.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let url = &config.database_url;
        let opened = if config.migrate {
            parley_event_log::open(url, config.db_pool_size).await
        } else {
            parley_event_log::connect(url, config.db_pool_size).await
        };
        let log = opened.with_context(|| {
            format!(
                "opening the event log at {}",
                parley_event_log::redact_url(url)
            )
        })?;
        let state = AppState::new(log.clone(), config.settings);
        let application = Application::bind(
            "command-api",
            config.listen,
            router(state.clone()),
            vec![Pool::Log(log.clone())],
            Lifecycle::new(config.shutdown),
        )
        .await?;
        Ok(Self {
            application,
            state,
            log,
        })
    }

    /// Serves until SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.application.run_until_stopped().await
    }
}
