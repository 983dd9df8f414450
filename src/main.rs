//! `parley`: one binary, one subcommand per service.

// mimalloc returns freed memory to the OS; with the system allocator, argon2's
// 19 MiB blocks stayed resident per thread arena (20 logins: 225 MB RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cli;
mod events;
mod healthcheck;
mod metrics;
mod probes;
mod read_side;
mod scaled;
mod serve;
mod telemetry;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        // Their data may go to stdout: logs go to stderr.
        cli::Task::Events(_) => telemetry::init_stderr(cli.log_format()),
        _ => telemetry::init(cli.log_format()),
    }
    if let Err(err) = telemetry::install_metrics() {
        eprintln!("error: cannot set up metrics: {err:#}");
        return std::process::ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Task::Dev(args) => serve::dev(args).await,
        cli::Task::CommandApi(args) => serve::command_api(args).await,
        cli::Task::ReadApi(args) => serve::read_api(args).await,
        cli::Task::Projector(args) => match args.feed {
            cli::Feed::Log => serve::projector(args).await,
            cli::Feed::Kafka => scaled::kafka_projector(args).await,
        },
        cli::Task::Relay(args) => scaled::relay(args).await,
        cli::Task::Projections(cli::ProjectionsCommand::DeadLetters(args)) => {
            serve::dead_letters(args).await
        }
        cli::Task::Projections(cli::ProjectionsCommand::Rebuild(args)) => {
            read_side::rebuild(args).await
        }
        cli::Task::Projections(cli::ProjectionsCommand::Status(args)) => scaled::status(args).await,
        cli::Task::Migrate(args) => serve::migrate(args).await,
        cli::Task::Bench(bench) => bench::run(bench).await,
        cli::Task::Healthcheck(args) => healthcheck::run(args).await,
        cli::Task::Events(command) => events::run(command).await,
    }
}
