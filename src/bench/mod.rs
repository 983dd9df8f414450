//! `parley bench ...`: benchmarks are commands that print figures, never timed tests.

mod commands;
mod export;
mod freshness;
mod kafka;
mod read;
mod seed;

use crate::cli::BenchCommand;

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Commands(args) => commands::commands(args).await,
        BenchCommand::Rebuild(args) => read::rebuild(args).await,
        BenchCommand::Queries(args) => read::queries(args).await,
        BenchCommand::Freshness(args) => freshness::freshness(args).await,
        BenchCommand::Relay(args) => kafka::relay(args).await,
        BenchCommand::Projectors(args) => kafka::projectors(args).await,
        BenchCommand::Export(args) => export::export(args).await,
    }
}
