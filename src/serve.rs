//! Starting the services: open the store, build the state, serve until SIGTERM.

use std::path::Path;

use anyhow::Context;
use axum::routing::get;
use parley_command_api::{AppState, CommandApi, Settings};
use parley_http_kit::prometheus::Pool;
use parley_http_kit::{default_token_keys, Application, Lifecycle, SigningKey};
use parley_projections::{ReadStore, RunningProjectors};
use parley_read_api::ReadApi;

use crate::cli::{
    AuthArgs, DeadLetterArgs, DevArgs, LimitArgs, MigrateArgs, ProjectorArgs, ReadApiArgs,
    ServiceArgs,
};
use crate::metrics;
use crate::probes::{Probes, Readiness};

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data folder {}", args.data_dir.display()))?;
    let db = args.data_dir.join("parley.db");
    let url = format!("sqlite://{}", db.display());
    let log = parley_event_log::open(&url, 4)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let secret = match &args.auth.jwt_secret {
        Some(secret) => secret.clone(),
        None => dev_secret(&args.data_dir)?,
    };
    let read_db = args.data_dir.join("parley-read.db");
    let store = ReadStore::open(&format!("sqlite://{}", read_db.display()), 1)
        .await
        .with_context(|| format!("opening {}", read_db.display()))?;
    let settings = settings(&args.auth, Some(secret), &args.limits)?;
    let lifecycle = Lifecycle::new(
        args.lifecycle
            .for_api(args.shutdown_delay_secs, &args.limits)?,
    );
    let mut read_settings = read_settings(&settings);
    read_settings.turn = args.turn.settings()?;
    let projectors = RunningProjectors::start(log.clone(), store.clone(), None).await?;
    metrics::describe_service(metrics::Service::Dev);
    metrics::report_log_lag(log.clone(), store.clone(), projectors.names());
    let pools = vec![Pool::Log(log.clone()), Pool::Read(store.pool().clone())];
    // One process, one port: both services' routes and one OpenAPI document.
    // WebSocket receipts go to the command routes in process.
    let commands = parley_command_api::routes(AppState::new(log.clone(), settings));
    read_settings.commands = Some(parley_read_api::receipts::CommandApi::Routes(
        commands.clone(),
    ));
    let read = parley_read_api::ReadState::new(store, Some(log), read_settings)
        .with_closing(lifecycle.closing());
    let routes = commands
        .merge(parley_read_api::v1_routes(read.clone()))
        .route("/openapi.json", get(crate::openapi::serve_combined));
    let app = Application::bind("dev", args.listen, routes, pools, lifecycle.clone()).await?;
    tracing::info!(
        address = %app.address(),
        events = %db.display(),
        read_models = %read_db.display(),
        "parley dev is up: try GET /health, or the walkthrough in README.md"
    );
    app.run_until_stopped().await?;
    read.sockets_closed(parley_read_api::SOCKETS_CLOSE_WITHIN)
        .await;
    lifecycle.finish("projectors", projectors.stop()).await
}

fn read_settings(settings: &Settings) -> parley_read_api::Settings {
    let mut read = parley_read_api::Settings::new(settings.keys.clone());
    read.rate_limit_per_sec = settings.rate_limit_per_sec;
    read.rate_limit_burst = settings.rate_limit_burst;
    read
}

pub async fn read_api(args: ReadApiArgs) -> anyhow::Result<()> {
    if let Some(secret) = &args.auth.jwt_secret {
        refuse_placeholder(&args.auth, secret)?;
    }
    let settings = settings(&args.auth, args.auth.jwt_secret.clone(), &args.limits)?;
    let mut read = read_settings(&settings);
    read.page_cache_bytes = args.page_cache_mb << 20;
    read.max_streams_per_user = args.max_streams_per_user.max(1);
    read.stream_resume_window = args.stream_resume_window.max(0);
    read.max_unauthenticated_sockets = args.ws_max_unauthenticated;
    read.turn = args.turn.settings()?;
    read.commands = args
        .command_api_url
        .as_deref()
        .map(parley_read_api::receipts::CommandApi::url)
        .transpose()?;
    read.fed_by = args.feed.into();
    let config = parley_read_api::Config {
        listen: args.listen,
        read_database_url: args.read_database_url.clone(),
        db_pool_size: args.db_pool_size,
        database_url: args.database_url.clone(),
        settings: read,
        shutdown: args
            .lifecycle
            .for_api(args.shutdown_delay_secs, &args.limits)?,
    };
    metrics::describe_service(metrics::Service::ReadApi);
    ReadApi::build(config).await?.run_until_stopped().await
}

pub async fn projector(args: ProjectorArgs) -> anyhow::Result<()> {
    let url = args
        .database_url
        .as_deref()
        .context("--database-url (PARLEY_DATABASE_URL) is needed with --feed log")?;
    let lifecycle = Lifecycle::new(args.lifecycle.for_worker());
    let log = open_log(url, args.db_pool_size).await?;
    let store = open_store(&args.read_database_url, args.db_pool_size).await?;
    let readiness = Readiness::Log {
        log: log.clone(),
        store: store.clone(),
    };
    let probes = Probes::start(args.listen, readiness, lifecycle.clone()).await?;
    let mut projectors =
        RunningProjectors::start(log.clone(), store.clone(), args.projection.as_deref()).await?;
    metrics::describe_service(metrics::Service::Projector);
    metrics::report_log_lag(log, store, projectors.names());
    let result = tokio::select! {
        _ = lifecycle.until_signal() => {
            // Each projector commits the batch in hand (events and checkpoint in
            // one transaction) and stops.
            lifecycle.finish("projectors", projectors.stop()).await
        }
        failed = projectors.until_one_fails() => {
            lifecycle.begin();
            failed
        }
    };
    probes.stop().await?;
    result
}

pub async fn dead_letters(args: DeadLetterArgs) -> anyhow::Result<()> {
    let store = open_store(&args.read_database_url, 1).await?;
    let parked = parley_projections::dead_letters(&store, args.limit).await?;
    if args.json {
        for letter in &parked {
            println!("{}", serde_json::to_string(letter)?);
        }
    } else if parked.is_empty() {
        println!("no dead letters");
    } else {
        println!(
            "{:<10} {:>10} {:<22} {:<36} error",
            "projection", "position", "event type", "event id"
        );
        for l in &parked {
            println!(
                "{:<10} {:>10} {:<22} {:<36} {}",
                l.projection, l.position, l.event_type, l.event_id, l.error
            );
        }
        println!("{} parked event(s)", parked.len());
    }
    Ok(())
}

pub async fn command_api(args: ServiceArgs) -> anyhow::Result<()> {
    if let Some(secret) = &args.auth.jwt_secret {
        refuse_placeholder(&args.auth, secret)?;
    }
    let config = parley_command_api::Config {
        listen: args.listen,
        database_url: args.database_url.clone(),
        db_pool_size: args.db_pool_size,
        migrate: args.migrate,
        settings: settings(&args.auth, args.auth.jwt_secret.clone(), &args.limits)?,
        shutdown: args
            .lifecycle
            .for_api(args.shutdown_delay_secs, &args.limits)?,
    };
    metrics::describe_service(metrics::Service::CommandApi);
    CommandApi::build(config).await?.run_until_stopped().await
}

/// A projector's or a tool's store (five-minute statements, see `ReadStore::open`).
pub async fn open_store(url: &str, pool: u32) -> anyhow::Result<ReadStore> {
    ReadStore::open(url, pool).await.with_context(|| {
        format!(
            "opening the read store at {}",
            parley_event_log::redact_url(url)
        )
    })
}

/// Opens the event log at `url` without migrating it (`parley migrate` does),
/// naming the URL (password hidden) when it fails.
pub async fn open_log(url: &str, pool: u32) -> anyhow::Result<parley_event_log::SharedLog> {
    parley_event_log::connect(url, pool).await.with_context(|| {
        format!(
            "opening the event log at {}",
            parley_event_log::redact_url(url)
        )
    })
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    parley_event_log::open(&args.database_url, 2)
        .await
        .with_context(|| {
            format!(
                "migrating {}",
                parley_event_log::redact_url(&args.database_url)
            )
        })?;
    println!("migrations applied");
    if let Some(role) = &args.read_side_role {
        anyhow::ensure!(
            !args.database_url.starts_with("sqlite:"),
            "--read-side-role needs PostgreSQL: SQLite has no roles"
        );
        let log = parley_event_log::pg::PgLog::connect(&args.database_url, 2).await?;
        log.grant_read_access(role)
            .await
            .with_context(|| format!("granting {role} read access to the event log"))?;
        println!("{role} may read the event log, and nothing more");
    }
    Ok(())
}

/// JWT secrets that ship as examples in deploy/: anyone can read them, and so
/// forge any user's tokens with them.
pub const PLACEHOLDER_SECRETS: &[&str] = &[
    "dev-only-0123456789abcdef0123456789abcdef",
    "CHANGE-ME-at-least-32-bytes-long-secret",
];

/// Refuses a placeholder secret unless explicitly allowed.
fn refuse_placeholder(auth: &AuthArgs, secret: &str) -> anyhow::Result<()> {
    let placeholder = |s: &str| PLACEHOLDER_SECRETS.contains(&s.trim());
    let previous = auth.jwt_previous_secret.as_deref().is_some_and(placeholder);
    if (placeholder(secret) || previous) && !auth.allow_placeholder_secret {
        anyhow::bail!(
            "PARLEY_JWT_SECRET is an example value from deploy/: anyone can forge tokens with it. \
             Generate one (`openssl rand -hex 32`), or set PARLEY_ALLOW_PLACEHOLDER_SECRET=true \
             on a throwaway cluster"
        );
    }
    Ok(())
}

fn settings(
    auth: &AuthArgs,
    secret: Option<String>,
    limits: &LimitArgs,
) -> anyhow::Result<Settings> {
    let secret = secret.context(
        "PARLEY_JWT_SECRET (or --jwt-secret) is required: at least 32 bytes, e.g. `openssl rand -hex 32`",
    )?;
    let mut keys = vec![SigningKey::new(auth.jwt_key_id.clone(), secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("PARLEY_JWT_SECRET: {e}"))?];
    if let Some(previous) = &auth.jwt_previous_secret {
        keys.push(
            SigningKey::new(auth.jwt_previous_key_id.clone(), previous.as_bytes())
                .map_err(|e| anyhow::anyhow!("PARLEY_JWT_PREVIOUS_SECRET: {e}"))?,
        );
    }
    if limits.rate_limit_per_sec < 0.0 || limits.rate_limit_burst < 0.0 {
        anyhow::bail!("PARLEY_RATE_LIMIT_PER_SEC and PARLEY_RATE_LIMIT_BURST must not be negative");
    }
    if limits.login_rate_per_sec < 0.0 || limits.login_burst < 0.0 {
        anyhow::bail!("PARLEY_LOGIN_RATE_PER_SEC and PARLEY_LOGIN_BURST must not be negative");
    }
    let mut settings = Settings::new(default_token_keys(keys));
    settings.rate_limit_per_sec = limits.rate_limit_per_sec;
    settings.rate_limit_burst = limits.rate_limit_burst;
    settings.login_rate_per_sec = limits.login_rate_per_sec;
    settings.call_ring_timeout = std::time::Duration::from_secs(limits.call_ring_secs);
    settings.login_burst = limits.login_burst;
    settings.command_result_retention =
        std::time::Duration::from_secs(limits.command_result_retention_hours * 3600);
    settings.trusted_proxies = limits.trusted_proxies.clone();
    anyhow::ensure!(
        limits.registrations_per_hour >= 0.0,
        "PARLEY_REGISTRATIONS_PER_HOUR must not be negative"
    );
    settings.registrations_per_hour = limits.registrations_per_hour;
    Ok(settings)
}

/// The dev secret lives in the data folder so sessions survive a restart.
fn dev_secret(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("jwt-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().to_string());
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(secret)
}
