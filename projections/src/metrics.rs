//! The projectors' metrics, recorded through the `metrics` facade (the `parley`
//! binary installs the Prometheus recorder; docs/metrics.md lists every name).

use std::time::Duration;

use chrono::Utc;
use parley_event_log::EventEnvelope;

use crate::runtime::BatchOutcome;

/// Events applied to a read model, by projection (duplicates skipped are not).
pub const APPLIED_TOTAL: &str = "parley_projection_applied_total";
/// Events (or undecodable deliveries) parked in the dead-letter table, by projection.
pub const DEAD_LETTERS_TOTAL: &str = "parley_projection_dead_letters_total";
/// How long one batch took to apply and commit, in seconds, by projection.
pub const BATCH_DURATION_SECONDS: &str = "parley_projection_batch_duration_seconds";
/// Time from an event's recording in the log (its `recorded_at`) to the commit
/// that applied it to a read model, in seconds, by projection: how fresh the
/// read models are, whatever the feed.
pub const DELAY_SECONDS: &str = "parley_projection_delay_seconds";
/// Events not applied yet, by projection and partition (`log` for the log feed):
/// set by the projector process every few seconds, see [`set_lag`].
pub const LAG: &str = "parley_projection_lag";
/// Events a Kafka-fed member holds for their aggregate's earlier event
/// (`kafka::held`), by projection: set every time the member retries them.
pub const HELD: &str = "parley_projection_held_events";

/// Records a committed batch.
pub(crate) fn batch_done(
    projection: &'static str,
    batch: &[EventEnvelope],
    outcome: BatchOutcome,
    took: Duration,
) {
    metrics::histogram!(BATCH_DURATION_SECONDS, "projection" => projection)
        .record(took.as_secs_f64());
    let delay = metrics::histogram!(DELAY_SECONDS, "projection" => projection);
    let now = Utc::now();
    for event in batch {
        delay.record(event.seconds_old_at(now));
    }
    metrics::counter!(APPLIED_TOTAL, "projection" => projection).increment(outcome.applied as u64);
    if outcome.parked > 0 {
        metrics::counter!(DEAD_LETTERS_TOTAL, "projection" => projection)
            .increment(outcome.parked as u64);
    }
}

/// Records a delivery parked outside a batch (not an envelope at all).
pub(crate) fn parked(projection: &str) {
    metrics::counter!(DEAD_LETTERS_TOTAL, "projection" => projection.to_string()).increment(1);
}

/// Sets how far `projection` is behind in `partition` (a Kafka partition number,
/// or `log`).
pub fn set_lag(projection: &str, partition: &str, lag: i64) {
    metrics::gauge!(LAG, "projection" => projection.to_string(), "partition" => partition.to_string())
        .set(lag.max(0) as f64);
}

/// Sets how many events of `projection` are held for their predecessor.
pub(crate) fn set_held(projection: &str, held: i64) {
    metrics::gauge!(HELD, "projection" => projection.to_string()).set(held as f64);
}

/// Describes these metrics (Prometheus `HELP` lines); call once the recorder is
/// installed.
pub fn describe() {
    metrics::describe_counter!(APPLIED_TOTAL, "Events applied to a read model.");
    metrics::describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Events or deliveries parked in the dead-letter table."
    );
    metrics::describe_histogram!(
        BATCH_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time to apply and commit one batch."
    );
    metrics::describe_histogram!(
        DELAY_SECONDS,
        metrics::Unit::Seconds,
        "Time from an event's recording in the log to its commit in a read model."
    );
    metrics::describe_gauge!(
        LAG,
        "Events not applied yet: Kafka end offset minus next offset, or log head minus checkpoint (partition=\"log\")."
    );
    metrics::describe_gauge!(
        HELD,
        "Events held until their aggregate's earlier event is applied (Kafka feed)."
    );
}

/// Starts `projection`'s counters at 0, so that its first dead letter shows as an
/// increase rather than as a new series.
pub fn register(projection: &'static str) {
    metrics::counter!(APPLIED_TOTAL, "projection" => projection).increment(0);
    metrics::counter!(DEAD_LETTERS_TOTAL, "projection" => projection).increment(0);
}
