//! Which events an export or a tail keeps.

use chrono::{DateTime, Utc};
use parley_event_log::EventEnvelope;
use uuid::Uuid;

/// Event filters; every one that is set must match. Ranges: `since` and
/// `from_position` are inclusive, `until` is exclusive, `to_position` inclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Event types to keep (any of them); empty keeps every type.
    pub types: Vec<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<Uuid>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    /// Position at least.
    pub from_position: Option<i64>,
    /// Position at most.
    pub to_position: Option<i64>,
}

/// A filter that can match nothing, named by the options that contradict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("--since {since} is not before --until {until}")]
    EmptyTimeRange { since: String, until: String },
    #[error("--from-position {from} is above --to-position {to}")]
    EmptyPositionRange { from: i64, to: i64 },
}

impl Filter {
    /// Refuses contradictory ranges, so a typo is an error rather than an empty file.
    pub fn validate(&self) -> Result<(), FilterError> {
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err(FilterError::EmptyTimeRange {
                    since: since.to_rfc3339(),
                    until: until.to_rfc3339(),
                });
            }
        }
        if let (Some(from), Some(to)) = (self.from_position, self.to_position) {
            if from > to {
                return Err(FilterError::EmptyPositionRange { from, to });
            }
        }
        Ok(())
    }

    /// Whether `event` passes every filter (the tail filters in memory; the export
    /// pushes the same conditions into SQL).
    pub fn matches(&self, event: &EventEnvelope) -> bool {
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && self
                .aggregate_type
                .as_ref()
                .is_none_or(|t| *t == event.aggregate_type)
            && self.aggregate_id.is_none_or(|id| id == event.aggregate_id)
            && self.since.is_none_or(|t| event.recorded_at >= t)
            && self.until.is_none_or(|t| event.recorded_at < t)
            && self.from_position.is_none_or(|p| event.position >= p)
            && self.to_position.is_none_or(|p| event.position <= p)
    }
}

/// Parses an RFC 3339 time (`2026-11-21T16:00:00Z`, any offset) for `--since` and
/// `--until`; the message says what was expected.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("expected an RFC 3339 time such as 2026-11-21T16:00:00Z, got {raw:?} ({e})")
        })
}

/// Parses a log position (a positive integer) for `--from-position` / `--to-position`.
pub fn parse_position(raw: &str) -> Result<i64, String> {
    match raw.trim().parse::<i64>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(format!(
            "expected a log position (an integer, 1 or more), got {raw:?}"
        )),
    }
}

/// Parses an aggregate id (a UUID) for `--aggregate-id`.
pub fn parse_uuid(raw: &str) -> Result<Uuid, String> {
    raw.trim()
        .parse::<Uuid>()
        .map_err(|e| format!("expected a UUID, got {raw:?} ({e})"))
}

/// Parses an event type name for `--type`: a known one, or at least a plausible
/// name (an unknown type is allowed, with a warning, to export events a newer
/// release wrote).
pub fn parse_event_type(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let plausible = name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    if !plausible {
        return Err(format!(
            "expected an event type such as MessageSent (see event-schemas/schemas), got {raw:?}"
        ));
    }
    if parley_event_schemas::upcast::latest_version(name).is_none() {
        tracing::warn!(
            event_type = name,
            "--type names no event type this release knows"
        );
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_name_what_they_expect() {
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert_eq!(
            parse_time("2026-11-21T17:00:00+01:00").unwrap(),
            parse_time("2026-11-21T16:00:00Z").unwrap()
        );
        assert!(parse_position("0").is_err());
        assert!(parse_position("-3").is_err());
        assert_eq!(parse_position("42"), Ok(42));
        assert!(parse_uuid("nope").unwrap_err().contains("UUID"));
        assert!(parse_event_type("message sent").is_err());
        assert_eq!(parse_event_type("MessageSent").unwrap(), "MessageSent");
    }

    #[test]
    fn contradictory_ranges_are_refused() {
        let t = parse_time("2026-01-01T00:00:00Z").unwrap();
        let f = Filter {
            since: Some(t),
            until: Some(t),
            ..Filter::default()
        };
        assert!(f.validate().unwrap_err().to_string().contains("--since"));
        let f = Filter {
            from_position: Some(5),
            to_position: Some(4),
            ..Filter::default()
        };
        assert!(f
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--from-position"));
    }
}
