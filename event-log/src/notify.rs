//! Postgres LISTEN, kept up: the one loop every process uses to hear other
//! processes' NOTIFYs (the log's appends, the projectors' commits).
//!
//! A dropped link ends the session and a new one is made, with backoff; the
//! owner hears `Connected` after every (re)connection, since whatever was sent
//! while it was away is lost and it must look for itself once, and `Lost`
//! when a session ends, so that it stops trusting what it heard.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgListener;

/// What the listener tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// Listening (again): notifications sent before now were not heard.
    Connected,
    /// A notification: its channel and payload.
    Notification { channel: &'a str, payload: &'a str },
    /// The link dropped; a new one follows after a pause.
    Lost,
}

/// Listens on `channels` with listeners from `connect`, telling `heard` what
/// happens, for as long as `heard` answers `true` (its owner is still there).
/// `what` names the notifications in the warning logged when they are lost.
pub async fn listen<C, F>(
    connect: C,
    channels: &[&str],
    what: &str,
    mut heard: impl FnMut(Heard<'_>) -> bool,
) where
    C: Fn() -> F,
    F: Future<Output = Result<PgListener, sqlx::Error>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = async {
            let mut listener = connect().await?;
            listener.listen_all(channels.iter().copied()).await?;
            if !heard(Heard::Connected) {
                return Ok::<(), sqlx::Error>(());
            }
            loop {
                // `try_recv`, not `recv`: a dropped link must end the session
                // (and the owner's trust in it), not reconnect silently.
                let Some(notification) = listener.try_recv().await? else {
                    return Err(sqlx::Error::Protocol(
                        "the notification link dropped".into(),
                    ));
                };
                let heard_one = Heard::Notification {
                    channel: notification.channel(),
                    payload: notification.payload(),
                };
                if !heard(heard_one) {
                    return Ok(());
                }
            }
        };
        match session.await {
            Ok(()) => return,
            Err(e) => {
                if !heard(Heard::Lost) {
                    return;
                }
                tracing::warn!(error = %e, "{what} notifications lost, reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
