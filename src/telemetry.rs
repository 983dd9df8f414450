//! The one place tracing and metrics are set up: pretty logs for `dev`, JSON
//! lines elsewhere; one Prometheus recorder per process.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PARLEY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Histogram buckets (seconds) of every latency Parley records: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// How often histogram samples are folded in when nothing scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder: from now on every
/// `metrics::counter!` (in any crate) lands in what [`render_metrics`] serves.
///
/// metrics-exporter-prometheus is used render-only: each service already has an
/// HTTP server, so `/metrics` is one more axum route instead of a second
/// listener. Must run inside the tokio runtime (a task folds in histogram
/// samples between scrapes, so they never pile up).
pub fn install_metrics() -> anyhow::Result<()> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            upkeep.run_upkeep();
        }
    });
    let _ = METRICS.set(handle);
    crate::metrics::describe();
    Ok(())
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render_metrics() -> String {
    METRICS
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Like [`init`], but logs go to stderr: for commands whose output is data on stdout.
pub fn init_stderr(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PARLEY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
