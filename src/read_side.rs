//! Wiring for the read side: projectors in-process (`dev`, `projector`) and the
//! read API (`read-api`).

use std::sync::Arc;

use anyhow::Context;
use parley_event_log::SharedLog;
use parley_projections::{models, LogFeed, Projector, ReadStore};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Projectors running as tasks; stop them with [`RunningProjectors::stop`].
pub struct RunningProjectors {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
    names: Vec<&'static str>,
}

impl RunningProjectors {
    /// Starts one projector per read model (or only `only`), each tailing the log.
    pub async fn start(
        log: SharedLog,
        store: ReadStore,
        only: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut names = Vec::new();
        for projection in models::all() {
            if only.is_some_and(|name| name != projection.name()) {
                continue;
            }
            parley_projections::metrics::register(projection.name());
            let projector = Projector::new(
                projection,
                store.clone(),
                Arc::new(LogFeed::new(log.clone())),
            );
            projector.prepare().await.with_context(|| {
                format!("creating the tables of projection {}", projector.name())
            })?;
            let rx = rx.clone();
            names.push(projector.name());
            tasks.spawn(async move { projector.run(rx).await });
        }
        if names.is_empty() {
            let names: Vec<&str> = models::all().iter().map(|p| p.name()).collect();
            anyhow::bail!(
                "no projection named {:?}; known: {}",
                only.unwrap_or_default(),
                names.join(", ")
            );
        }
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

/// `parley projections rebuild NAME`.
pub async fn rebuild(args: crate::cli::RebuildArgs) -> anyhow::Result<()> {
    let log = crate::serve::open_log(&args.database_url, 4).await?;
    let store = crate::serve::open_store(&args.read_database_url, 4).await?;
    let head = log.last_position().await?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(head.max(1) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} positions, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("rebuilding {}", args.name));
    let report = parley_projections::rebuild::rebuild(
        &store,
        Arc::new(LogFeed::new(log)),
        &args.name,
        |_, cursor| {
            bar.set_position(cursor.position.max(0) as u64);
        },
    )
    .await?;
    bar.finish_and_clear();
    println!("rebuilt {} and swapped it in", report.projection);
    println!("  events read     {}", report.events);
    println!("  elapsed         {:.2} s", report.elapsed.as_secs_f64());
    println!("  rate            {:.0} events/s", report.events_per_sec());
    println!("  position        {}", report.cursor.position);
    for (table, rows) in parley_projections::rebuild::row_counts(&store, &args.name).await? {
        println!("  {table:<16}{rows} rows");
    }
    Ok(())
}
