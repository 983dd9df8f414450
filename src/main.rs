//! `parley`: one binary, one subcommand per service.

// mimalloc returns freed memory to the OS; with the system allocator, argon2's
// 19 MiB blocks stayed resident per thread arena (20 logins: 225 MB RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod config;
mod events;
mod healthcheck;
mod metrics;
mod openapi;
mod probes;
mod read_side;
mod scaled;
mod serve;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The config file fills in the environment: before any thread starts.
    let sources = match config::load(&args) {
        Ok(sources) => sources,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => match config::explain(err, &sources) {
            Ok(message) => {
                eprintln!("error: {message}");
                return std::process::ExitCode::from(2);
            }
            Err(err) => err.exit(),
        },
    };
    // Before the runtime: the trace exporter's HTTP client blocks.
    let stderr = matches!(cli.command, cli::Task::Events(_) | cli::Task::Config(_));
    let telemetry = match telemetry::init(cli.log_format(), stderr, cli.traces()) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(start(cli, sources));
    // Outside the runtime: sends the spans still buffered.
    drop(runtime);
    telemetry.shutdown();
    code
}

async fn start(cli: cli::Cli, sources: config::Sources) -> std::process::ExitCode {
    if let Err(err) = parley_http_kit::prometheus::install_recorder() {
        eprintln!("error: cannot set up metrics: {err:#}");
        return std::process::ExitCode::FAILURE;
    }
    match run(cli, &sources).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: cli::Cli, sources: &config::Sources) -> anyhow::Result<()> {
    match cli.command {
        cli::Task::Dev(args) => serve::dev(args).await,
        cli::Task::CommandApi(args) => serve::command_api(args).await,
        cli::Task::ReadApi(args) => serve::read_api(args).await,
        cli::Task::Projector(args) => match args.feed {
            cli::FeedFlag::Log => serve::projector(args).await,
            cli::FeedFlag::Kafka => scaled::kafka_projector(args).await,
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
        cli::Task::Healthcheck(args) => healthcheck::run(args).await,
        cli::Task::Events(command) => events::run(command).await,
        cli::Task::Config(args) => config::print(&args, sources),
    }
}
