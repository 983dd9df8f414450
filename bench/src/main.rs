//! `parley-bench`: benchmarks are commands that print figures, never timed
//! tests. Each starts the `parley` services it measures as child processes
//! (the binary named by `--parley`), or runs a library in-process (rebuild,
//! export), with a Prometheus recorder installed as in the services.

// The allocator of the `parley` binary this load generator was part of: the
// generator shares the cores with the services it drives, so its own cost is
// part of every figure, and the figures stay comparable with earlier ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod commands;
mod cpu;
mod export;
mod fanout;
mod freshness;
mod kafka;
mod mixed;
mod read;
mod replay;
mod scaled;
mod seed;
mod soak;

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context;
use args::{BenchCommand, Cli};
use clap::Parser;

static PARLEY: OnceLock<PathBuf> = OnceLock::new();

/// The `parley` server binary benchmarks start.
pub fn parley_binary() -> &'static std::path::Path {
    PARLEY.get().expect("set in main")
}

/// `--parley`, or the `parley` beside this binary.
fn locate_parley(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join(format!("parley{}", std::env::consts::EXE_SUFFIX)),
    };
    anyhow::ensure!(
        path.is_file(),
        "no parley binary at {}: build it (`cargo build --release -p parley`) or pass --parley",
        path.display()
    );
    Ok(path)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .compact()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    PARLEY.set(locate_parley(cli.parley)?).expect("set once");
    // The in-process benchmarks record metrics as the services do, so they
    // pay what the services pay.
    metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    match cli.command {
        BenchCommand::Commands(args) => commands::commands(args).await,
        BenchCommand::Rebuild(args) => read::rebuild(args).await,
        BenchCommand::Queries(args) => read::queries(args).await,
        BenchCommand::Freshness(args) => freshness::freshness(args).await,
        BenchCommand::Relay(args) => kafka::relay(args).await,
        BenchCommand::Projectors(args) => kafka::projectors(args).await,
        BenchCommand::Export(args) => export::export(args).await,
        BenchCommand::Soak(args) => soak::soak(args).await,
        BenchCommand::Mixed(args) => mixed::mixed(args).await,
        BenchCommand::Fanout(args) => fanout::fanout(args).await,
    }
}
