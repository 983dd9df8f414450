//! `parley events ...`: the event stream for analysts (see docs/analysts.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parley_export::tail::{StartAt, TailOptions};
use parley_export::{ExportJob, ExportOptions, Sink, Target};

use crate::cli::{EventsCommand, EventsExportArgs, EventsReplayArgs, EventsTailArgs};

pub async fn run(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Export(args) => export(args).await,
        EventsCommand::Tail(args) => tail(args).await,
        EventsCommand::Replay(args) => replay(args).await,
    }
}

/// A flag that Ctrl-C sets: exports and tails finish the page in hand, close
/// their output properly and report where they stopped.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping after the events in hand...");
            flag.store(true, Ordering::Relaxed);
        }
    });
    stop
}

async fn export(args: EventsExportArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.output.out);
    let job = ExportJob {
        database_url: args.database_url,
        target: target.clone(),
        format: args.output.format(),
        resume: args.resume,
        filter: args.filter.filter(),
        options: ExportOptions {
            stored_shape: args.output.stored_shape,
            limit: args.output.limit,
        },
    };
    let format = parley_export::choose_format(&target, job.format)?;
    let stop = stop_on_ctrl_c();
    let progress = parley_export::progress_bar(args.output.quiet, "exporting");
    let summary = parley_export::run_export(job, progress, stop.clone()).await?;
    eprintln!(
        "exported {} events to {} ({})",
        summary.events,
        match &target {
            Target::Stdout => "stdout".to_string(),
            Target::File(p) => p.display().to_string(),
        },
        format.name()
    );
    eprintln!("{summary}");
    if summary.unknown > 0 {
        eprintln!(
            "warning: {} events of a type or version this release does not know were \
             exported as stored",
            summary.unknown
        );
    }
    if stop.load(Ordering::Relaxed) {
        anyhow::bail!(
            "interrupted: the output is complete up to position {}; continue with {}",
            summary.covered_to,
            match format {
                parley_export::Format::Jsonl => "--resume".to_string(),
                parley_export::Format::Parquet =>
                    format!("--from-position {} into a new file", summary.covered_to + 1),
            }
        );
    }
    Ok(())
}

async fn tail(args: EventsTailArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.output.out);
    let format = parley_export::choose_format(&target, args.output.format())?;
    let filter = args.filter.filter();
    let start = if !args.offset.is_empty() {
        StartAt::Offsets(args.offset.clone())
    } else if let (Some(since), false) = (filter.since, args.from_beginning) {
        StartAt::Since(since)
    } else {
        StartAt::Beginning
    };
    let options = TailOptions {
        start,
        follow: args.follow,
        stored_shape: args.output.stored_shape,
        limit: args.output.limit,
    };
    let out: parley_export::sink::Output = match &target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("--out {}: {e}", path.display()))?,
        ),
    };
    let settings = crate::scaled::kafka_settings(&args.kafka);
    let stop = stop_on_ctrl_c();
    let summary =
        parley_export::tail::tail(&settings, &filter, &options, Sink::new(format, out)?, stop)
            .await?;
    eprintln!(
        "tailed {} events from topic {}",
        summary.events, settings.topic
    );
    eprintln!("{summary}");
    Ok(())
}

async fn replay(args: EventsReplayArgs) -> anyhow::Result<()> {
    let progress = parley_export::progress_bar(args.quiet, "replaying");
    let report = parley_export::replay::replay(
        &args.database_url,
        &args.into,
        args.from_position,
        args.to_position,
        progress,
    )
    .await?;
    eprintln!(
        "replayed positions {}..={} into {}",
        report.from_position,
        report.to_position,
        parley_event_log::redact_url(&args.into)
    );
    eprintln!("  read models      {}", report.projections.join(", "));
    eprintln!("  events           {}", report.events);
    eprintln!("  parked           {}", report.parked);
    eprintln!("  seconds          {:.2}", report.elapsed.as_secs_f64());
    Ok(())
}
