//! A broker outage under load (issue 23, item 5): Kafka down for longer than
//! the producer's delivery timeout (30 s) and the group's session timeout.
//! Commands go on; the relay reports itself not ready, its lag grows in its
//! metrics and in `parley projections status`, and its memory stays bounded
//! (it retries one batch, it does not buffer the log); once the broker is
//! back the group catches up with nothing missing.

use std::time::{Duration, Instant};

use super::support::Deployment;
use super::{
    metrics_text, pad_log, rss_kib, senders, until_all_projected, until_status, Load, PADDING_MIB,
    SERIAL,
};

/// How long the broker stays down.
const DOWN: Duration = Duration::from_secs(45);

/// The value of the metric `name` (one series, no labels) in a scrape of `base`.
async fn gauge(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = metrics_text(http, base).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `parley projections status --feed kafka` with the log's database: its
/// exit status and what it printed.
async fn status(dep: &Deployment) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["projections", "status", "--feed", "kafka"])
        .env("PARLEY_READ_DATABASE_URL", &dep.read_url)
        .env("PARLEY_DATABASE_URL", &dep.log_url)
        .env("PARLEY_KAFKA_BROKERS", &dep.broker.addr)
        .env("PARLEY_KAFKA_TOPIC", &dep.topic)
        .env("PARLEY_LOG", "error")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_under_load_stops_no_command_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(mut dep) = Deployment::new().await else {
        return;
    };
    let commands = dep.service(&["command-api", "--migrate"]).await;
    let relay = dep.relay().await;
    let relay_base = relay.base.clone().unwrap();
    let relay_pid = relay.child.id().expect("the relay runs");
    let _member = dep.projector();
    let clients = senders(commands.base.as_deref().unwrap(), 2).await;
    let http = reqwest::Client::new();
    let load = Load::start(clients);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, before) = status(&dep).await;
    assert!(ok, "{before}");
    let rss_before = rss_kib(relay_pid);

    dep.broker.stop();
    let stopped = Instant::now();
    until_status(
        &http,
        &format!("{relay_base}/health/ready"),
        "",
        503,
        Duration::from_secs(30),
    )
    .await;
    let lag_early = gauge(&http, &relay_base, "parley_relay_lag_events").await;
    pad_log(&dep.log_url, PADDING_MIB).await;
    let mut rss_max = rss_before;
    while stopped.elapsed() < DOWN {
        rss_max = rss_max.max(rss_kib(relay_pid));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let lag_late = gauge(&http, &relay_base, "parley_relay_lag_events").await;
    let (ok, during) = status(&dep).await;
    let sends_during = load.phase();

    dep.broker.restart();
    let sends_after = load.finish().await;

    assert!(
        sends_during.succeeded() > 0
            && sends_during.statuses.keys().all(|s| (200..300).contains(s)),
        "commands while the broker was down: {:?}",
        sends_during.statuses
    );
    assert!(
        lag_late > lag_early && lag_late > 0.0,
        "the relay's lag did not grow: {lag_early} then {lag_late}"
    );
    assert!(!ok, "status succeeded without a broker: {during}");
    assert!(
        during.contains("relay: published up to position")
            && during.contains("the broker does not answer")
            && during.contains("history"),
        "status while the broker was down:\n{during}"
    );
    // The relay holds one batch in flight, not the 64 MiB logged meanwhile.
    assert!(
        rss_max < rss_before + 40 * 1024,
        "the relay grew from {rss_before} KiB to {rss_max} KiB"
    );
    assert_eq!(sends_after.count(500), 0);
    let log = sqlx::PgPool::connect(&dep.log_url).await.unwrap();
    let missing = until_all_projected(&log, &dep.read_url, Duration::from_secs(120)).await;
    assert!(missing.is_empty(), "missing after the outage: {missing:?}");
}
