//! A service bound to its address and ready to run: what every service's
//! `build` returns, so that the binary, `parley dev` and the test harnesses
//! start a service the same way (zero2prod's `Application::build`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::lifecycle::{Http, Lifecycle};
use crate::prometheus::{self, Pool};

/// Set once the process exports traces: request spans then continue the
/// caller's `traceparent`.
static JOIN_TRACES: AtomicBool = AtomicBool::new(false);

/// Request spans join the caller's W3C trace from now on (the process installed
/// an OpenTelemetry layer and the propagator).
pub fn join_caller_traces() {
    JOIN_TRACES.store(true, Ordering::Relaxed);
}

/// A service's router on its bound listener, with its shutdown.
pub struct Application {
    listener: TcpListener,
    router: Router,
    lifecycle: Lifecycle,
}

impl Application {
    /// Binds `listen` (port 0 picks a free port: tests) and gives `router` its
    /// `GET /metrics` (sampling `pools`) and the request middleware, labelling
    /// requests with `service`.
    pub async fn bind(
        service: &'static str,
        listen: SocketAddr,
        router: Router,
        pools: Vec<Pool>,
        lifecycle: Lifecycle,
    ) -> anyhow::Result<Self> {
        let router = prometheus::route(router, pools);
        let router =
            crate::observe::track_requests(router, service, JOIN_TRACES.load(Ordering::Relaxed));
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("PARLEY_LISTEN ({listen}): cannot listen there"))?;
        tracing::info!(service, address = %listener.local_addr()?, "listening");
        Ok(Self {
            listener,
            router,
            lifecycle,
        })
    }

    /// The address bound.
    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The port bound (the one picked, when asked for port 0).
    pub fn port(&self) -> u16 {
        self.address().port()
    }

    /// The router as it is served, middleware included: tests call it in-process.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The service's shutdown: [`Lifecycle::begin`] stops it without a signal.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Serves until SIGTERM (or [`Lifecycle::begin`]), then drains (see
    /// [`crate::lifecycle`]).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.lifecycle.serve(self.listener, self.router).await
    }

    /// Serves in the background, beside work that owns the shutdown (a
    /// worker's probes); stop it with [`Running::stop`] once draining began.
    pub fn spawn(self) -> Running {
        let http = self.lifecycle.spawn_http(self.listener, self.router);
        Running {
            http,
            lifecycle: self.lifecycle,
        }
    }
}

/// An [`Application`] serving in the background.
pub struct Running {
    http: Http,
    lifecycle: Lifecycle,
}

impl Running {
    /// The shutdown it follows.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Stops accepting (after the delay) and waits for requests in flight,
    /// once draining began.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.lifecycle.close_http(self.http).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::ShutdownSettings;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_over_tcp(port: u16, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn port_zero_binds_a_free_port_and_begin_stops_the_service() {
        let router = Router::new().route("/hello", get(|| async { "hi" }));
        let app = Application::bind(
            "test",
            "127.0.0.1:0".parse().unwrap(),
            router,
            vec![],
            Lifecycle::new(ShutdownSettings::default()),
        )
        .await
        .unwrap();
        let port = app.port();
        assert_ne!(port, 0);
        let lifecycle = app.lifecycle().clone();
        let running = tokio::spawn(app.run_until_stopped());

        let answer = get_over_tcp(port, "/hello").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("x-request-id"),
            "middleware applied: {answer}"
        );
        let metrics = get_over_tcp(port, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");

        lifecycle.begin();
        tokio::time::timeout(std::time::Duration::from_secs(5), running)
            .await
            .expect("the service stops once draining begins")
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn an_address_in_use_names_the_setting() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = taken.local_addr().unwrap();
        let error = Application::bind(
            "test",
            listen,
            Router::new(),
            vec![],
            Lifecycle::new(ShutdownSettings::default()),
        )
        .await
        .err()
        .expect("the address is taken");
        assert!(format!("{error:#}").contains("PARLEY_LISTEN"), "{error:#}");
    }
}
