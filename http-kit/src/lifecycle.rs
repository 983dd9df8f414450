//! Graceful shutdown, the same in every service.
//!
//! On SIGTERM (or Ctrl-C) a service:
//! 1. answers `/health/ready` with 503 `draining`, so load balancers and
//!    Kubernetes stop sending it work, while it keeps serving for
//!    `--shutdown-delay-secs` (APIs only; the endpoints' removal takes a moment);
//! 2. stops accepting connections and tells each open `/v1/stream` to reconnect
//!    elsewhere (a retry hint and the id to resume after);
//! 3. lets requests in flight finish, a projector finish and commit its batch,
//!    a relay finish its acknowledged batch;
//! 4. exits 0. Everything above happens within `--shutdown-timeout-secs` of the
//!    signal; what is still running then is cut (with a warning) and the process
//!    exits anyway: nothing half-done is committed, so nothing is lost.
//!
//! [`Lifecycle::begin`] starts the same drain without a signal (a worker that
//! failed, or a test stopping its service).

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::limits::{Limiter, ServiceLimits};

/// One service's shutdown: when it began and what has been told to stop.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    timeout: Duration,
    delay: Duration,
    /// Cancelled at the signal: readiness answers 503 from then on.
    draining: CancellationToken,
    /// Cancelled when listeners stop accepting (after the delay): SSE streams
    /// say goodbye.
    closing: CancellationToken,
    /// When the signal came plus the timeout.
    deadline: std::sync::Arc<OnceCell<Instant>>,
    /// How long a connection may take to send a request's headers.
    header_read_timeout: Duration,
    /// The request deadline and the bound on requests in flight.
    limiter: std::sync::Arc<Limiter>,
}

/// How a service shuts down and what each request may use: the typed settings
/// behind `--shutdown-timeout-secs`, `--shutdown-delay-secs`,
/// `--header-read-timeout-secs` and the service limits.
#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    /// From the signal to exit.
    pub timeout: Duration,
    /// How long an API keeps accepting after the signal (inside `timeout`).
    pub delay: Duration,
    /// How long a connection may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// The request deadline and the bound on requests in flight.
    pub limits: ServiceLimits,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            delay: Duration::ZERO,
            header_read_timeout: Duration::from_secs(10),
            limits: ServiceLimits::default(),
        }
    }
}

impl Lifecycle {
    /// A service's shutdown; a `delay` as long as the `timeout` is cut to fit
    /// inside it (the binary refuses that setting before getting here).
    pub fn new(settings: ShutdownSettings) -> Self {
        Self {
            timeout: settings.timeout,
            delay: settings.delay.min(settings.timeout),
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
            deadline: Default::default(),
            header_read_timeout: settings.header_read_timeout,
            limiter: std::sync::Arc::new(Limiter::new(settings.limits)),
        }
    }

    /// Cancelled once listeners stop accepting: hand it to whatever holds
    /// long-lived connections open (the read API's streams).
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// Waits for SIGTERM or Ctrl-C (or for [`Lifecycle::begin`]), then drains.
    pub async fn until_signal(&self) {
        tokio::select! {
            () = shutdown_signal() => self.begin(),
            () = self.draining.cancelled() => {}
        }
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Starts draining now (the signal came, or the work ended on its own).
    pub fn begin(&self) {
        if self.draining.is_cancelled() {
            return;
        }
        let deadline = Instant::now() + self.timeout;
        let _ = self.deadline.set(deadline);
        self.draining.cancel();
        tracing::info!(
            timeout_secs = self.timeout.as_secs(),
            delay_secs = self.delay.as_secs(),
            "draining: readiness now answers 503"
        );
    }

    fn deadline(&self) -> Instant {
        *self
            .deadline
            .get()
            .expect("the deadline is set when draining begins")
    }

    /// Runs `work` (stopping a projector, a relay) until the deadline; after it,
    /// warns and returns: nothing uncommitted counts as done.
    pub async fn finish<F>(&self, what: &str, work: F) -> anyhow::Result<()>
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        match tokio::time::timeout_at(self.deadline(), work).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    what,
                    timeout_secs = self.timeout.as_secs(),
                    "shutdown deadline passed; exiting without waiting longer"
                );
                Ok(())
            }
        }
    }

    /// Serves `app` on `listener` in the background, with `/health/ready`
    /// answering 503 once draining begins.
    pub fn spawn_http(&self, listener: TcpListener, app: Router) -> Http {
        let app = app.layer(middleware::from_fn_with_state(
            self.draining.clone(),
            draining_gate,
        ));
        let task = tokio::spawn(crate::server::serve(
            listener,
            app,
            self.header_read_timeout,
            self.limiter.clone(),
            self.closing.clone(),
        ));
        Http { task }
    }

    /// After draining began: keeps serving for the delay, stops accepting and
    /// closes streams, then waits (until the deadline) for requests in flight.
    pub async fn close_http(&self, http: Http) -> anyhow::Result<()> {
        let accept_until = self.deadline() - self.timeout + self.delay;
        tokio::time::sleep_until(accept_until).await;
        self.closing.cancel();
        tracing::info!("no longer accepting connections; finishing requests in flight");
        let mut task = http.task;
        match tokio::time::timeout_at(self.deadline(), &mut task).await {
            Ok(served) => served
                .context("the HTTP server panicked")?
                .context("serving HTTP"),
            Err(_) => {
                task.abort();
                tracing::warn!(
                    timeout_secs = self.timeout.as_secs(),
                    "shutdown deadline passed; closing the connections still open"
                );
                Ok(())
            }
        }
    }

    /// The usual API service: serve until the signal, then drain.
    pub async fn serve(&self, listener: TcpListener, app: Router) -> anyhow::Result<()> {
        let http = self.spawn_http(listener, app);
        self.until_signal().await;
        self.close_http(http).await
    }
}

/// An HTTP server running in the background.
pub struct Http {
    task: JoinHandle<std::io::Result<()>>,
}

/// While draining, `/health/ready` is 503 whatever the dependencies say.
async fn draining_gate(
    State(draining): State<CancellationToken>,
    request: Request,
    next: Next,
) -> Response {
    if draining.is_cancelled() && request.uri().path() == "/health/ready" {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    next.run(request).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn ready_status(app: Router) -> StatusCode {
        use tower::ServiceExt;
        let request = Request::get("/health/ready")
            .body(axum::body::Body::empty())
            .unwrap();
        app.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn readiness_is_503_only_once_draining_began() {
        let draining = CancellationToken::new();
        let app = Router::new()
            .route("/health/ready", get(|| async { "ready" }))
            .layer(middleware::from_fn_with_state(
                draining.clone(),
                draining_gate,
            ));
        assert_eq!(ready_status(app.clone()).await, StatusCode::OK);
        draining.cancel();
        assert_eq!(ready_status(app).await, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn work_past_the_deadline_is_cut_not_waited_for() {
        let timeout = Duration::from_millis(300);
        let lifecycle = Lifecycle::new(settings(timeout));
        lifecycle.begin();
        let started = Instant::now();
        lifecycle
            .finish("a stuck batch", std::future::pending())
            .await
            .expect("a cut is not an error");
        let waited = started.elapsed();
        assert!(waited >= timeout - Duration::from_millis(20), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");

        let failing = Lifecycle::new(settings(timeout));
        failing.begin();
        let failed = failing
            .finish("a failing batch", async { anyhow::bail!("boom") })
            .await;
        assert!(failed.is_err(), "a failure within the deadline is reported");
    }

    fn settings(timeout: Duration) -> ShutdownSettings {
        ShutdownSettings {
            timeout,
            ..ShutdownSettings::default()
        }
    }
}
