//! `parley-bench export`: seed a fresh Postgres log, export it, print the rate.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use parley_export::{ExportJob, ExportOptions, Filter, Format, Target};

use super::commands::TempDb;
use super::seed::seed;
use crate::args::{BenchExportArgs, ExportFormat};

pub async fn export(args: BenchExportArgs) -> anyhow::Result<()> {
    let db = TempDb::create(&args.server.admin_url).await?;
    let result = run(&args, &db).await;
    db.drop_now().await?;
    result
}

async fn run(args: &BenchExportArgs, db: &TempDb) -> anyhow::Result<()> {
    let url = &db.url;
    let log = parley_event_log::open(url, 8).await?;
    eprintln!("seeding {} events ...", args.events);
    let started = Instant::now();
    let seeded = seed(&log, args.events, 64, 100).await?;
    eprintln!(
        "seeded {} events in {:.1} s",
        seeded.events,
        started.elapsed().as_secs_f64()
    );
    drop(log);
    if !args.no_vacuum {
        eprintln!("vacuuming the log, as autovacuum has a log in service ...");
        db.vacuum_log().await?;
    }
    let dir = tempfile::tempdir()?;
    let format = match args.format {
        ExportFormat::Jsonl => Format::Jsonl,
        ExportFormat::Parquet => Format::Parquet,
    };
    let out = dir.path().join(format!("bench.{}", format.name()));
    eprintln!("exporting to {} ...", out.display());
    let summary = parley_export::run_export(
        ExportJob {
            database_url: url.to_string(),
            target: Target::File(out),
            format: Some(format),
            resume: false,
            filter: Filter::default(),
            options: ExportOptions::default(),
        },
        indicatif::ProgressBar::hidden(),
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    println!("parley-bench export");
    println!("  format            {}", format.name());
    println!(
        "  events in the log {} ({})",
        seeded.events,
        if args.no_vacuum {
            "exported as just written: --no-vacuum"
        } else {
            "vacuumed before the export"
        }
    );
    println!("{summary}");
    println!(
        "  MB/s              {:.1}",
        summary.bytes as f64 / 1e6 / summary.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
