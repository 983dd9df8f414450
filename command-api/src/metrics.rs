//! The command API's metrics. This crate only records them through the `metrics`
//! facade; the `parley` binary installs the Prometheus recorder and serves
//! `/metrics` (docs/metrics.md lists every name).

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Commands answered, by command and outcome (`ok`, `rejected`, `conflict`, `error`).
pub const COMMANDS_TOTAL: &str = "parley_commands_total";
/// Events the command API appended to the log.
pub const EVENTS_APPENDED_TOTAL: &str = "parley_events_appended_total";
/// How long one append to the log took (committed or not), in seconds.
pub const APPEND_DURATION_SECONDS: &str = "parley_append_duration_seconds";

/// Describes these metrics (Prometheus `HELP` lines); call once the recorder is
/// installed.
pub fn describe() {
    metrics::describe_counter!(COMMANDS_TOTAL, "Commands answered, by command and outcome.");
    metrics::describe_counter!(EVENTS_APPENDED_TOTAL, "Events appended to the log.");
    metrics::describe_histogram!(
        APPEND_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time of one append to the log."
    );
    metrics::counter!(EVENTS_APPENDED_TOTAL).increment(0);
}

/// The command a route runs, named after the domain command (snake case).
/// `None` for routes that are not commands (health, OpenAPI).
pub fn command_name(method: &Method, route: &str) -> Option<&'static str> {
    let name = match (method.as_str(), route) {
        ("POST", "/v1/users") => "register_user",
        ("POST", "/v1/sessions") => "log_in",
        ("POST", "/v1/sessions/refresh") => "refresh_session",
        ("GET", "/v1/sessions") => "list_sessions",
        ("DELETE", "/v1/sessions") => "log_out_everywhere",
        ("DELETE", "/v1/sessions/current") => "log_out",
        ("DELETE", "/v1/sessions/{session_id}") => "end_session",
        ("POST", "/v1/rooms") => "create_room",
        ("POST", "/v1/rooms/{room_id}/join") => "join_room",
        ("POST", "/v1/rooms/{room_id}/leave") => "leave_room",
        ("POST", "/v1/rooms/{room_id}/invites") => "invite",
        ("DELETE", "/v1/rooms/{room_id}/members/{user_id}") => "kick",
        ("PUT", "/v1/rooms/{room_id}/members/{user_id}/role") => "change_role",
        ("PUT", "/v1/rooms/{room_id}/bans/{user_id}") => "ban",
        ("DELETE", "/v1/rooms/{room_id}/bans/{user_id}") => "unban",
        ("POST", "/v1/direct-rooms") => "create_direct_room",
        ("PUT", "/v1/rooms/{room_id}/messages/{message_id}") => "send_message",
        ("PATCH", "/v1/rooms/{room_id}/messages/{message_id}") => "edit_message",
        ("DELETE", "/v1/rooms/{room_id}/messages/{message_id}") => "redact_message",
        ("PUT", "/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}") => "add_reaction",
        ("DELETE", "/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}") => {
            "remove_reaction"
        }
        ("POST", "/v1/rooms/{room_id}/read-marker") => "move_read_marker",
        ("POST", "/v1/rooms/{room_id}/delivery-marker") => "move_delivery_marker",
        ("POST", "/v1/rooms/{room_id}/calls") => "start_call",
        ("POST", "/v1/calls/{call_id}/accept") => "accept_call",
        ("POST", "/v1/calls/{call_id}/decline") => "decline_call",
        ("POST", "/v1/calls/{call_id}/leave") => "leave_call",
        ("POST", "/v1/friend-requests") => "send_friend_request",
        ("POST", "/v1/friend-requests/{request_id}/accept") => "accept_friend_request",
        ("POST", "/v1/friend-requests/{request_id}/decline") => "decline_friend_request",
        ("DELETE", "/v1/friend-requests/{request_id}") => "cancel_friend_request",
        ("DELETE", "/v1/friends/{user_id}") => "remove_friend",
        ("PUT", "/v1/blocks/{user_id}") => "block_user",
        ("DELETE", "/v1/blocks/{user_id}") => "unblock_user",
        ("PUT", "/v1/presence") => "set_presence",
        _ => return None,
    };
    Some(name)
}

/// What became of a command, from its answer: 2xx `ok` (a replayed idempotent
/// answer too), 409 `conflict` (still conflicting after the server's retries, or
/// an id taken), other 4xx `rejected` (invalid, unauthorized, forbidden, not
/// found, rate-limited), 5xx `error`.
pub fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        409 => "conflict",
        400..=499 => "rejected",
        _ => "error",
    }
}

/// Middleware on the command routes: counts each command by name and outcome.
pub(crate) async fn count_commands(request: Request, next: Next) -> Response {
    let command = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| command_name(request.method(), route.as_str()));
    let response = next.run(request).await;
    if let Some(command) = command {
        metrics::counter!(COMMANDS_TOTAL, "command" => command, "outcome" => outcome(response.status()))
            .increment(1);
    }
    response
}

/// Records one append to the log: how long it took and how many events it wrote.
pub(crate) fn appended(events: usize, took: Duration) {
    metrics::histogram!(APPEND_DURATION_SECONDS).record(took.as_secs_f64());
    if events > 0 {
        metrics::counter!(EVENTS_APPENDED_TOTAL).increment(events as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi;

    #[test]
    fn every_command_route_has_a_name() {
        let doc = crate::openapi::CommandApiDoc::openapi();
        let mut named = 0;
        for (path, item) in doc.paths.paths {
            let methods = [
                (Method::GET, item.get.is_some()),
                (Method::POST, item.post.is_some()),
                (Method::PUT, item.put.is_some()),
                (Method::PATCH, item.patch.is_some()),
                (Method::DELETE, item.delete.is_some()),
            ];
            for (method, present) in methods {
                if !present {
                    continue;
                }
                let name = command_name(&method, &path);
                assert_eq!(
                    name.is_some(),
                    path.starts_with("/v1/"),
                    "{method} {path}: every /v1 route is a command, nothing else is"
                );
                named += usize::from(name.is_some());
            }
        }
        assert_eq!(named, 35);
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(outcome(StatusCode::CREATED), "ok");
        assert_eq!(outcome(StatusCode::OK), "ok");
        assert_eq!(outcome(StatusCode::CONFLICT), "conflict");
        assert_eq!(outcome(StatusCode::UNPROCESSABLE_ENTITY), "rejected");
        assert_eq!(outcome(StatusCode::TOO_MANY_REQUESTS), "rejected");
        assert_eq!(outcome(StatusCode::INTERNAL_SERVER_ERROR), "error");
        assert_eq!(outcome(StatusCode::SERVICE_UNAVAILABLE), "error");
    }
}
