//! The HTTP accept loop every service runs.
//!
//! `axum::serve` gives hyper no timer, so a client that opens connections and
//! sends its headers one byte a minute holds them forever (slowloris). This
//! loop is `axum::serve` plus a timer: hyper closes a connection whose request
//! headers have not all arrived within `header_read_timeout`. The request
//! timeout and the bound on requests in flight (`Limiter`) start once the
//! headers are in, and wrap the whole router once per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use crate::limits::Limiter;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `app` on `listener` until `closing` is cancelled, then waits for the
/// connections still open to finish their requests (the caller bounds that).
/// Each request carries its peer's [`ConnectInfo`], as with
/// `into_make_service_with_connect_info`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    limiter: Arc<Limiter>,
    closing: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little
                    // rather than spin (what axum::serve does too).
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = closing.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limiter = limiter.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let app = app.clone();
            let limiter = limiter.clone();
            async move {
                let request = request.map(axum::body::Body::new);
                let answer = async { app.oneshot(request).await.unwrap_or_else(|e| match e {}) };
                Ok::<_, Infallible>(limiter.run(answer).await)
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ServiceLimits;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(header_read_timeout: Duration) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let closing = CancellationToken::new();
        let limiter = Arc::new(Limiter::new(ServiceLimits::default()));
        tokio::spawn(serve(
            listener,
            app,
            header_read_timeout,
            limiter,
            closing.clone(),
        ));
        (address, closing)
    }

    /// Reads until the server closes the connection, or gives up after `limit`.
    async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut answer = Vec::new();
        match tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await {
            Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) => None,
        }
    }

    /// The attack: open a connection and never finish the headers. Fails
    /// before (axum::serve without a timer): the connection stays open.
    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (address, closing) = start(Duration::from_millis(500)).await;
        let mut slow = TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\nHost: parley\r\nX-Slow: ")
            .await
            .unwrap();
        let closed = read_to_close(&mut slow, Duration::from_secs(10)).await;
        let answer = closed.expect("the server kept a half-sent request's connection open");
        assert!(!answer.contains("200 OK"), "{answer}");
        closing.cancel();
    }

    #[tokio::test]
    async fn a_complete_request_is_answered_with_the_peer_address() {
        let (address, closing) = start(Duration::from_millis(500)).await;
        let mut client = TcpStream::connect(address).await.unwrap();
        let local = client.local_addr().unwrap();
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut client, Duration::from_secs(10))
            .await
            .expect("no answer");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with(&local.to_string()), "{answer}");
        closing.cancel();
    }

    /// Opens a connection and sends `request` on it.
    async fn exchange(address: SocketAddr, request: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        stream
    }

    /// Fails before the limits existed: a client that sent headers and then
    /// trickled (or never sent) its body held a task and a connection for as
    /// long as it liked, and any number of such requests queued up.
    #[tokio::test]
    async fn a_trickled_body_times_out_and_a_flood_is_shed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/upload",
                axum::routing::post(|body: String| async move { body }),
            )
            .route("/fast", get(|| async { "fast" }));
        let limits = ServiceLimits {
            request_timeout: Duration::from_millis(500),
            max_in_flight: 1,
        };
        let closing = CancellationToken::new();
        let limiter = Arc::new(Limiter::new(limits));
        tokio::spawn(serve(
            listener,
            app,
            Duration::from_secs(5),
            limiter,
            closing.clone(),
        ));

        // One upload that never sends its body holds the only slot...
        let mut slow = exchange(
            address,
            b"POST /upload HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\nabc",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...so another request, on any route, is shed at once.
        let fast = b"GET /fast HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
        let mut shed = exchange(address, fast).await;
        let answer = read_to_close(&mut shed, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
        // The slow one ends at the deadline with 408.
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), slow.read_exact(&mut head))
            .await
            .expect("the slow upload was never answered")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 408");
        // And the slot is free again.
        let mut again = exchange(address, fast).await;
        let answer = read_to_close(&mut again, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        closing.cancel();
    }

    #[tokio::test]
    async fn closing_stops_accepting_and_returns() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let closing = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Router::new(),
            Duration::from_secs(1),
            Arc::new(Limiter::new(ServiceLimits::default())),
            closing.clone(),
        ));
        closing.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve did not return after closing")
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(address).await.is_err());
    }
}
