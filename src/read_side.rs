//! `parley projections rebuild NAME`: a read model rebuilt beside the live one
//! and swapped in, with progress.

use std::sync::Arc;

use parley_projections::LogFeed;

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
