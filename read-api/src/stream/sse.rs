//! `GET /v1/stream`: a caller's [`Connection`] as Server-Sent Events. The
//! SSE id of an event is its log cursor; the first frame and the last carry
//! `retry` and the id to resume after.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use parley_event_log::{Cursor, EventEnvelope};
use parley_http_kit::{ApiError, ApiQuery, Caller};
use serde::Deserialize;
use utoipa::IntoParams;

use super::connection::{Connection, Frame};
use super::event::{client_view, Published};
use super::{format_cursor, parse_cursor};
use crate::ReadState;

/// The reconnection delay suggested to clients.
const RETRY: Duration = Duration::from_millis(1000);
/// Between keep-alive comments.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event id (for clients that cannot set the
    /// `Last-Event-ID` header; the header wins).
    pub last_event_id: Option<String>,
}

/// Live updates of the caller's rooms, friends and friends' presence.
///
/// Server-Sent Events: `id` is the event's log cursor (`"{tx_id}.{position}"`),
/// `event` its type, `data` the event envelope as JSON. The first frame carries
/// `retry` and the id the stream starts after. Reconnect with `Last-Event-ID` to get
/// every missed event exactly once. An event arrives once queries can see it.
#[utoipa::path(get, path = "/v1/stream", tag = "stream", security(("bearer" = [])),
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
    (status = 200, description = "`text/event-stream` of event envelopes", content_type = "text/event-stream"),
    (status = 400, description = "Malformed Last-Event-ID"),
    (status = 401, description = "No valid token"),
    (status = 410, description = "Last-Event-ID is older than the resume window: reload pages, then reconnect without it"),
    (status = 429, description = "The caller has the most streams open already"),
    (status = 503, description = "No event log configured, or the stream is starting")))]
pub async fn stream(
    State(state): State<ReadState>,
    Caller(me): Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let (Some(hub), Some(log)) = (&state.stream, &state.log) else {
        return Err(ApiError::Unavailable(
            "live updates need the event log".into(),
        ));
    };
    let resume = resume_from(&headers, &q)?;
    let connection = Connection::open(&state, hub, log, me, resume).await?;
    // Counts this stream in `parley_sse_connections` while it lives.
    let open = crate::metrics::OpenStream::new();
    let events = futures::stream::unfold((connection, open), |(mut c, open)| async move {
        let frame = c.next().await?;
        Some((Ok::<_, Infallible>(sse_frame(frame)), (c, open)))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Where a stream resumes: after `Last-Event-ID`, or the `last_event_id`
/// parameter (the header wins); `None`: from now.
pub(super) fn resume_from(
    headers: &HeaderMap,
    q: &StreamQuery,
) -> Result<Option<Cursor>, ApiError> {
    let raw = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::BadRequest("malformed Last-Event-ID".into()))?
                .to_string(),
        ),
        None => q.last_event_id.clone(),
    }
    // An empty id is what an EventSource that saw no id would have: none.
    .filter(|raw| !raw.trim().is_empty());
    let resume = match raw.as_deref() {
        None => None,
        Some(raw) => Some(parse_cursor(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "malformed Last-Event-ID {raw:?}: expected \"{{tx_id}}.{{position}}\""
            ))
        })?),
    };
    Ok(resume)
}

fn sse_frame(frame: Frame) -> Event {
    match frame {
        Frame::Hello { after } => Event::default().retry(RETRY).id(format_cursor(after)),
        Frame::Replayed(event) => sse_event(&event),
        Frame::Live(published) => live_event(&published),
        Frame::Goodbye { why, after } => Event::default()
            .comment(why)
            .retry(RETRY)
            .id(format_cursor(after)),
    }
}

/// A broadcast event, serialized once by the hub.
fn live_event(published: &Published) -> Event {
    Event::default()
        .id(format_cursor(published.event.cursor()))
        .event(&published.event.event_type)
        .data(&published.data)
}

fn sse_event(event: &EventEnvelope) -> Event {
    let data = serde_json::to_string(&client_view(event)).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(format_cursor(event.cursor()))
        .event(&event.event_type)
        .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::classify::{classify_decoded, Class};
    use crate::stream::event::Decoded;
    use uuid::Uuid;

    #[test]
    fn streams_old_versions_in_todays_shape() {
        let mut event = EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: "MessageSent".into(),
            event_version: 1,
            aggregate_type: "message".into(),
            aggregate_id: Uuid::now_v7(),
            sequence: 1,
            position: 9,
            recorded_at: chrono::Utc::now(),
            metadata: Default::default(),
            payload: serde_json::json!({
                "message_id": Uuid::now_v7(), "room_id": Uuid::now_v7(),
                "sender_id": Uuid::now_v7(), "body": "old", "sent_at": "2024-05-01T12:00:00Z"
            }),
            tx_id: 3,
        };
        let text = format!("{:?}", sse_event(&event));
        assert!(text.contains(r#"\"event_version\":2"#), "{text}");
        assert!(text.contains(r#"\"format\":\"plain\""#), "{text}");
        event.event_version = 2;
        event.payload["format"] = serde_json::json!("markdown");
        let text = format!("{:?}", sse_event(&event));
        assert!(
            text.contains(r#"\"format\":\"markdown\""#),
            "as stored: {text}"
        );
    }

    /// The hub decodes and serializes each event once (each open stream used
    /// to do both again), and a stream's frame is what it was.
    #[test]
    fn the_hub_decodes_and_serializes_each_event_once_for_every_stream() {
        let room = Uuid::now_v7();
        let event = EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: "MessageSent".into(),
            event_version: 2,
            aggregate_type: "message".into(),
            aggregate_id: Uuid::now_v7(),
            sequence: 1,
            position: 9,
            recorded_at: chrono::Utc::now(),
            metadata: parley_event_log::Metadata {
                request_id: Some("req-secret".into()),
                ..Default::default()
            },
            payload: serde_json::json!({
                "message_id": Uuid::now_v7(), "room_id": room, "reply_to": null,
                "sender_id": Uuid::now_v7(), "body": "hi", "sent_at": "2024-05-01T12:00:00Z",
                "format": "plain"
            }),
            tx_id: 3,
        };
        let published = Published::new(event.clone());
        assert!(matches!(published.decoded, Decoded::Message(_)));
        assert!(matches!(
            classify_decoded(Uuid::now_v7(), &published.decoded),
            Class::Room(r) if r == room
        ));
        assert_eq!(
            format!("{:?}", live_event(&published)),
            format!("{:?}", sse_event(&event))
        );
        assert!(!published.data.contains("req-secret"));
    }
}
