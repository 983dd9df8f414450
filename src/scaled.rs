//! The scaled mode's Kafka parts: `parley relay` and `parley projector --feed kafka`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use parley_kafka::KafkaSettings;
use parley_projections::kafka::member::{Member, MemberOptions};
use parley_projections::{kafka, models, Projection};
use parley_relay::{Relay, RelayStatus};
use serde_json::json;
use tokio::sync::watch;

use crate::cli::{FeedFlag, KafkaArgs, ProjectorArgs, RelayArgs, StatusArgs};
use crate::metrics;
use crate::probes::{Probes, Readiness};
use crate::serve::{open_log, open_store};
use parley_http_kit::prometheus::Pool;
use parley_http_kit::{Application, Lifecycle};

pub(crate) fn kafka_settings(args: &KafkaArgs) -> KafkaSettings {
    let mut settings = KafkaSettings::new(&args.kafka_brokers).with_topic(&args.kafka_topic);
    for (k, v) in args.options() {
        settings = settings.with_override(k, v);
    }
    if let Some(keys) = &args.topic_signing_keys {
        settings = settings.with_signing(keys.clone());
    }
    settings
}

/// `parley relay`: publishes the log to the topic until SIGTERM, serving health.
pub async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let mut settings = kafka_settings(&args.kafka);
    settings.partitions = args.partitions;
    settings.replication_factor = args.replication_factor;
    let relay = Relay::connect(&args.database_url, settings)
        .await
        .with_context(|| {
            format!(
                "opening the event log at {}",
                parley_event_log::redact_url(&args.database_url)
            )
        })?;
    let lifecycle = Lifecycle::new(args.lifecycle.for_worker());
    let status = relay.status();
    let pools = vec![Pool::Log(relay.log().clone())];
    metrics::describe_service(metrics::Service::Relay);
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/health/ready", get(relay_ready))
        .with_state(status);
    let http = Application::bind("relay", args.listen, app, pools, lifecycle.clone())
        .await?
        .spawn();
    // The relay only returns once told to stop.
    lifecycle.until_signal().await;
    stop.send_replace(true);
    // It finishes the batch in flight and records what the broker acknowledged.
    let finished = async { running.await.context("the relay task panicked") };
    lifecycle.finish("relay", finished).await?;
    http.stop().await
}

/// Ready when this replica can do its job: a standby is ready (it only waits),
/// a leader only while the broker acknowledges.
async fn relay_ready(
    State(status): State<watch::Receiver<RelayStatus>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let s = status.borrow().clone();
    let ready = !s.leader || s.kafka_ok;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "leader": s.leader,
        "kafka_ok": s.kafka_ok,
        "published_total": s.published_total,
        "position": s.cursor.position,
        "last_error": s.last_error,
    });
    (code, Json(body))
}

/// `parley projector --feed kafka`: one member of the projector group.
pub async fn kafka_projector(args: ProjectorArgs) -> anyhow::Result<()> {
    let store = open_store(&args.read_database_url, args.db_pool_size).await?;
    let projections: Vec<Arc<dyn Projection>> =
        parley_projections::select(args.projection.as_deref())?;
    let options = MemberOptions {
        group: args.group.clone(),
        session_timeout: std::time::Duration::from_millis(args.session_timeout_ms),
        batch_wait: std::time::Duration::from_millis(args.batch_wait_ms),
        ..MemberOptions::default()
    };
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    for &name in &names {
        parley_projections::metrics::register(name);
    }
    metrics::describe_service(metrics::Service::Projector);
    let settings = kafka_settings(&args.kafka);
    metrics::report_kafka_lag(settings.clone(), store.clone(), names);
    let member = Member::new(settings, options, store.clone(), projections);
    let alive = Arc::new(AtomicBool::new(true));
    let readiness = Readiness::Kafka {
        store,
        member: member.status(),
        running: alive.clone(),
    };
    let lifecycle = Lifecycle::new(args.lifecycle.for_worker());
    let probes = Probes::start(args.listen, readiness, lifecycle.clone()).await?;
    let (stop, stopped) = watch::channel(false);
    let mut running = tokio::spawn(async move {
        let result = member.run(stopped).await;
        alive.store(false, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, "projector member stopped");
        }
        result
    });
    let result = tokio::select! {
        _ = lifecycle.until_signal() => {
            // The member commits the batch in hand, then leaves the group.
            stop.send_replace(true);
            let finished = async { running.await.context("the member task panicked")? };
            lifecycle.finish("projector member", finished).await
        }
        ended = &mut running => {
            lifecycle.begin();
            ended.context("the member task panicked")?
        }
    };
    probes.stop().await?;
    result
}

/// The table of `parley projections status --feed kafka` (-1: unknown).
fn print_partitions(rows: &[kafka::status::PartitionLag], json: bool) -> anyhow::Result<()> {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row)?);
        }
        return Ok(());
    }
    println!(
        "{:<10} {:>9} {:>12} {:>12} {:>10}  owner",
        "projection", "partition", "next offset", "end offset", "lag"
    );
    let known = |n: i64| {
        if n < 0 {
            "?".to_string()
        } else {
            n.to_string()
        }
    };
    for r in rows {
        println!(
            "{:<10} {:>9} {:>12} {:>12} {:>10}  {}",
            r.projection,
            r.partition,
            r.next_offset,
            known(r.end_offset),
            known(r.lag),
            r.owner.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// How far the relay has published the log (needs only the log's database,
/// so it shows during a broker outage too).
async fn relay_status(database_url: &str, topic: &str, json: bool) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .context("opening the event log")?;
    let published = parley_relay::checkpoint::load(&pool, topic).await?;
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(&pool)
        .await?;
    let position = published.map_or(0, |c| c.position);
    let behind = (head - position).max(0);
    if json {
        println!(
            "{}",
            json!({"relay": {"position": position, "log_head": head, "behind": behind}})
        );
    } else {
        println!(
            "relay: published up to position {position} of the log's {head} ({behind} behind)"
        );
    }
    Ok(())
}

/// `parley projections status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let store = open_store(&args.read_database_url, 2).await?;
    let names = models::NAMES;
    match args.feed {
        FeedFlag::Kafka => {
            let settings = kafka_settings(&args.kafka);
            if let Some(url) = &args.database_url {
                relay_status(url, &settings.topic, args.json).await?;
            }
            let status = kafka::status::partition_lag(&settings, &store, &names).await;
            // With the broker down, what the read models hold still shows
            // where each projection is; the command then fails.
            let (rows, broker) = match status {
                Ok(rows) => (rows, Ok(())),
                Err(e) => (
                    kafka::status::stored_positions(&store, &settings.topic, &names).await?,
                    Err(e),
                ),
            };
            print_partitions(&rows, args.json)?;
            match broker {
                Ok(()) => {
                    if !args.json {
                        let total: i64 = rows.iter().map(|r| r.lag).sum();
                        println!("total lag {total} message(s) on topic {}", settings.topic);
                    }
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "the broker does not answer: end offsets and lag of topic {} unknown \
                         (above: the offsets the read models hold)",
                        settings.topic
                    )))
                }
            }
        }
        FeedFlag::Log => {
            let url = args
                .database_url
                .as_deref()
                .context("--database-url (PARLEY_DATABASE_URL) is needed with --feed log")?;
            let log = open_log(url, 2).await?;
            let head = log.last_position().await?;
            let checkpoints = store.checkpoints(&names).await?;
            if !args.json {
                println!(
                    "{:<10} {:>12} {:>12} {:>10}",
                    "projection", "position", "log head", "behind"
                );
            }
            for (name, at) in names.iter().zip(checkpoints) {
                // Positions are handed out in order, so the difference counts the
                // events behind (give or take ones still being committed).
                let behind = (head - at.position).max(0);
                if args.json {
                    let row = json!({"projection": name, "position": at.position, "log_head": head, "behind": behind});
                    println!("{row}");
                } else {
                    println!("{name:<10} {:>12} {head:>12} {behind:>10}", at.position);
                }
            }
        }
    }
    Ok(())
}
