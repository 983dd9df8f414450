//! The relay's metrics, recorded through the `metrics` facade (the `parley`
//! binary installs the Prometheus recorder; docs/metrics.md lists every name).

use parley_event_log::EventEnvelope;

/// Events the broker acknowledged (republished ones count again).
pub const RELAY_PUBLISHED_TOTAL: &str = "parley_relay_published_total";
/// Events in the log not published yet: the log's head position minus the
/// relay's checkpoint (0 on a standby).
pub const RELAY_LAG_EVENTS: &str = "parley_relay_lag_events";
/// When the last batch was acknowledged, in seconds since the Unix epoch.
pub const RELAY_LAST_PUBLISH_TIMESTAMP_SECONDS: &str =
    "parley_relay_last_publish_timestamp_seconds";
/// Time from an event's recording in the log to the broker's acknowledgement of
/// it, in seconds.
pub const RELAY_DELAY_SECONDS: &str = "parley_relay_delay_seconds";
/// 1 while this replica holds the lock and publishes, 0 while it stands by.
pub const RELAY_LEADER: &str = "parley_relay_leader";

/// Describes these metrics (Prometheus `HELP` lines); call once the recorder is
/// installed.
pub fn describe() {
    metrics::describe_counter!(RELAY_PUBLISHED_TOTAL, "Events the broker acknowledged.");
    metrics::describe_gauge!(
        RELAY_LAG_EVENTS,
        "Events in the log not published yet (log head minus relay checkpoint)."
    );
    metrics::describe_gauge!(
        RELAY_LAST_PUBLISH_TIMESTAMP_SECONDS,
        metrics::Unit::Seconds,
        "Unix time of the last acknowledged batch."
    );
    metrics::describe_histogram!(
        RELAY_DELAY_SECONDS,
        metrics::Unit::Seconds,
        "Time from an event's recording in the log to the broker's acknowledgement."
    );
    metrics::describe_gauge!(RELAY_LEADER, "1 while this replica publishes.");
}

pub(crate) fn leader(leading: bool) {
    metrics::gauge!(RELAY_LEADER).set(if leading { 1.0 } else { 0.0 });
    if !leading {
        // Only the leader knows the lag; a standby must not report a stale one.
        metrics::gauge!(RELAY_LAG_EVENTS).set(0.0);
    }
}

pub(crate) fn published(events: &[EventEnvelope]) {
    metrics::counter!(RELAY_PUBLISHED_TOTAL).increment(events.len() as u64);
    let delay = metrics::histogram!(RELAY_DELAY_SECONDS);
    let acknowledged = chrono::Utc::now();
    for event in events {
        delay.record(event.seconds_old_at(acknowledged));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(RELAY_LAST_PUBLISH_TIMESTAMP_SECONDS).set(now.as_secs_f64());
}

pub(crate) fn lag(events: i64) {
    metrics::gauge!(RELAY_LAG_EVENTS).set(events.max(0) as f64);
}
