//! What only the binary can see: which service's metrics to describe, and
//! samplers of projection lag (every few seconds). `GET /metrics` itself and
//! the request metrics are `parley_http_kit::prometheus` and `observe`.
//!
//! The library crates record their own metrics through the `metrics` facade; the
//! names are listed in docs/metrics.md.

use std::time::Duration;

use parley_event_log::SharedLog;
use parley_projections::ReadStore;

/// How often projection lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// The services, for what their `/metrics` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Dev,
    CommandApi,
    ReadApi,
    Projector,
    Relay,
}

/// Describes (Prometheus `HELP`) and starts at 0 the metrics `service` records,
/// and only those: a read API does not show the command API's counters.
pub fn describe_service(service: Service) {
    use Service::*;
    if matches!(service, Dev | CommandApi) {
        parley_command_api::metrics::describe();
    }
    if matches!(service, Dev | ReadApi) {
        parley_read_api::metrics::describe();
    }
    if matches!(service, Dev | Projector) {
        parley_projections::metrics::describe();
    }
    if service == Relay {
        parley_relay::metrics::describe();
    }
}

/// Every few seconds, sets each projection's lag behind the log's head
/// (`partition="log"`) until the process ends.
pub fn report_log_lag(log: SharedLog, store: ReadStore, projections: Vec<&'static str>) {
    tokio::spawn(async move {
        loop {
            match (
                log.last_position().await,
                store.checkpoints(&projections).await,
            ) {
                (Ok(head), Ok(checkpoints)) => {
                    for (name, at) in projections.iter().zip(checkpoints) {
                        parley_projections::metrics::set_lag(name, "log", head - at.position);
                    }
                }
                (Err(e), _) => tracing::debug!(error = %e, "cannot read the log head for lag"),
                (_, Err(e)) => tracing::debug!(error = %e, "cannot read checkpoints for lag"),
            }
            tokio::time::sleep(LAG_EVERY).await;
        }
    });
}

/// Every few seconds, sets each projection's lag per Kafka partition (end
/// offset minus next offset, as `parley projections status` prints it) until
/// the process ends. Every member reports every partition, owned or not, so
/// one live member is enough to see a stuck partition; aggregate with `max`.
pub fn report_kafka_lag(
    settings: parley_kafka::KafkaSettings,
    store: ReadStore,
    projections: Vec<&'static str>,
) {
    tokio::spawn(async move {
        loop {
            match parley_projections::kafka::status::partition_lag(&settings, &store, &projections)
                .await
            {
                Ok(rows) => {
                    for row in rows {
                        parley_projections::metrics::set_lag(
                            &row.projection,
                            &row.partition.to_string(),
                            row.lag,
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the partition lag"),
            }
            tokio::time::sleep(LAG_EVERY).await;
        }
    });
}
