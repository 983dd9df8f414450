//! Projectors tailing the event log in this process: what `parley projector
//! --feed log` and `parley dev` run, and what the read side's tests start.

use std::sync::Arc;

use anyhow::Context;
use parley_event_log::SharedLog;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::together::Together;
use crate::{models, LogFeed, Projection, Projector, ReadStore};

/// The read models to run: every one, or the one named `only`.
pub fn select(only: Option<&str>) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    let chosen: Vec<_> = models::all()
        .into_iter()
        .filter(|p| only.is_none_or(|name| name == p.name()))
        .collect();
    if chosen.is_empty() {
        anyhow::bail!(
            "no projection named {:?}; known: {}",
            only.unwrap_or_default(),
            models::NAMES.join(", ")
        );
    }
    Ok(chosen)
}

/// Creates the tables of every read model, feeding none: a read side whose
/// projectors run elsewhere (or, in tests, not at all).
pub async fn prepare_all(store: &ReadStore, log: &SharedLog) -> anyhow::Result<()> {
    for projection in models::all() {
        let projector = Projector::new(
            projection,
            store.clone(),
            Arc::new(LogFeed::new(log.clone())),
        );
        projector
            .prepare()
            .await
            .with_context(|| format!("creating the tables of projection {}", projector.name()))?;
    }
    Ok(())
}

/// Projectors running as tasks; stop them with [`RunningProjectors::stop`].
pub struct RunningProjectors {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
    names: Vec<&'static str>,
}

impl RunningProjectors {
    /// Starts the projectors of every read model (or only `only`), tailing the
    /// log together, once their tables exist.
    pub async fn start(
        log: SharedLog,
        store: ReadStore,
        only: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut names = Vec::new();
        let models = select(only)?;
        for projection in &models {
            crate::metrics::register(projection.name());
            store
                .create_tables(projection.schema())
                .await
                .with_context(|| {
                    format!("creating the tables of projection {}", projection.name())
                })?;
            names.push(projection.name());
        }
        // One reader and one transaction per batch for all of them: see
        // crate::together.
        let together = Together::new(models, store, Arc::new(LogFeed::new(log)));
        tasks.spawn(async move { together.run(rx).await });
        Ok(Self {
            shutdown,
            tasks,
            names,
        })
    }

    /// The projections running.
    pub fn names(&self) -> Vec<&'static str> {
        self.names.clone()
    }

    /// Asks every projector to finish its batch and stop, then waits for them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        while let Some(result) = self.tasks.join_next().await {
            result.context("projector task panicked")??;
        }
        Ok(())
    }

    /// Waits until any projector stops on its own (an error), returning it.
    pub async fn until_one_fails(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(result) => result.context("projector task panicked")?,
            None => Ok(()),
        }
    }
}
