//! One WebSocket's two halves, as the `/v1/ws` session uses them: sending a
//! frame within a deadline, error frames, the closing handshake, and a
//! browser's first (`auth`) frame.

use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use parley_event_log::Cursor;
use parley_http_kit::ApiError;
use serde_json::json;

use super::connection::Connection;
use super::parse_cursor;
use super::ws::{
    open, ClientFrame, AUTH_WITHIN, CLOSE_POLICY, CLOSE_TRY_AGAIN, CLOSE_WITHIN, SEND_WITHIN,
};
use crate::ReadState;

/// The socket's two halves.
pub(super) struct Socket {
    pub(super) sink: SplitSink<WebSocket, Message>,
    pub(super) stream: SplitStream<WebSocket>,
    /// When the client last sent anything (a pong counts).
    pub(super) last_heard: Instant,
}

/// Why a send did not happen: the socket is gone or too slow.
pub(super) struct Gone;

impl Socket {
    pub(super) async fn send(&mut self, text: String) -> Result<(), Gone> {
        match tokio::time::timeout(SEND_WITHIN, self.sink.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                crate::metrics::ws_closed("slow");
                Err(Gone)
            }
        }
    }

    pub(super) async fn ping(&mut self) -> Result<(), Gone> {
        match tokio::time::timeout(
            SEND_WITHIN,
            self.sink.send(Message::Ping(Default::default())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    pub(super) async fn error(&mut self, error: &ApiError) -> Result<(), Gone> {
        let status = error.status();
        self.send(
            json!({
                "type": "error",
                "status": status.as_u16(),
                "title": status.canonical_reason().unwrap_or("Error"),
                "detail": error.to_string(),
            })
            .to_string(),
        )
        .await
    }

    /// The closing handshake (RFC 6455 section 7.1): our close frame, then
    /// what the client still sends until its own close (briefly). Dropping
    /// the connection with unread frames in the buffer would reset it, and
    /// the client could lose the close frame, with its code and resume id.
    pub(super) async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if tokio::time::timeout(SEND_WITHIN, self.sink.send(Message::Close(Some(frame))))
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WITHIN, async {
            while let Some(Ok(message)) = self.stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// A browser's first frame: `auth` within [`AUTH_WITHIN`], then the
    /// caller's stream; `None` (the socket closed) when it is not.
    pub(super) async fn authenticate(
        &mut self,
        state: &ReadState,
        resume: Option<Cursor>,
    ) -> Option<Connection> {
        let refuse = |detail: &str| ApiError::Unauthorized(detail.to_string());
        let first = tokio::time::timeout(AUTH_WITHIN, self.stream.next()).await;
        let outcome = match first {
            Err(_) => Err(refuse("no auth frame within 5 s")),
            Ok(None | Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(text.as_str()) {
                Ok(ClientFrame::Auth {
                    access_token,
                    after,
                }) => match state.keys.verify_access_session(access_token.trim()) {
                    Ok((me, _)) => match after.as_deref().map(parse_resume).transpose() {
                        Ok(after) => open(state, me, after.or(resume)).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                _ => Err(refuse(
                    "the first frame must be {\"type\":\"auth\",\"access_token\":...}",
                )),
            },
            Ok(Some(Ok(_))) => Err(refuse("the first frame must be a text auth frame")),
        };
        match outcome {
            Ok(connection) => Some(connection),
            Err(e) => {
                crate::metrics::ws_closed("auth");
                let _ = self.error(&e).await;
                let (code, reason) = close_for(&e);
                self.close(code, &reason).await;
                None
            }
        }
    }
}

/// The close code and reason for a stream that could not open.
pub(super) fn close_for(error: &ApiError) -> (u16, String) {
    let code = match error {
        ApiError::TooManyRequests { .. } | ApiError::Unavailable(_) => CLOSE_TRY_AGAIN,
        _ => CLOSE_POLICY,
    };
    let reason = error.status().canonical_reason().unwrap_or("refused");
    (code, reason.to_string())
}

pub(super) fn parse_resume(raw: &str) -> Result<Cursor, ApiError> {
    parse_cursor(raw).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "malformed event id {raw:?}: expected \"{{tx_id}}.{{position}}\""
        ))
    })
}
