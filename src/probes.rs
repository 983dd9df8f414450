//! The projector's HTTP side: `/health`, `/health/ready` and `/metrics`, served
//! beside the projectors (which have no other listener).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use parley_event_log::SharedLog;
use parley_projections::kafka::member::MemberStatus;
use parley_projections::ReadStore;
use serde_json::{json, Value};
use tokio::sync::watch;

use parley_http_kit::prometheus::Pool;
use parley_http_kit::{Application, Lifecycle, Running};

/// What a projector's readiness depends on.
pub enum Readiness {
    /// `--feed log`: the log it tails and the store it writes both answer.
    Log { log: SharedLog, store: ReadStore },
    /// `--feed kafka`: the store answers and the member is running (a member
    /// without partitions is ready too: the group may have more members than
    /// partitions, and the broker's health is the member's business to retry).
    Kafka {
        store: ReadStore,
        member: watch::Receiver<MemberStatus>,
        running: Arc<AtomicBool>,
    },
}

impl Readiness {
    fn pools(&self) -> Vec<Pool> {
        match self {
            Readiness::Log { log, store } => {
                vec![Pool::Log(log.clone()), Pool::Read(store.pool().clone())]
            }
            Readiness::Kafka { store, .. } => vec![Pool::Read(store.pool().clone())],
        }
    }
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> (StatusCode, Json<Value>) {
    let (ready, body) = match &*readiness {
        Readiness::Log { log, store } => {
            let log_ok = log.ping().await.is_ok();
            let store_ok = store.ping().await.is_ok();
            (
                log_ok && store_ok,
                json!({"feed": "log", "event_log": log_ok, "read_store": store_ok}),
            )
        }
        Readiness::Kafka {
            store,
            member,
            running,
        } => {
            let store_ok = store.ping().await.is_ok();
            let running = running.load(Ordering::Relaxed);
            let status = member.borrow().clone();
            (
                store_ok && running,
                json!({
                    "feed": "kafka",
                    "read_store": store_ok,
                    "member_running": running,
                    "assigned": status.assigned,
                    "applied_total": status.applied_total,
                    "last_error": status.last_error,
                }),
            )
        }
    };
    let mut body = body;
    body["status"] = json!(if ready { "ready" } else { "not ready" });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// The projector's HTTP server, running in the background until [`Probes::stop`].
pub struct Probes {
    http: Running,
}

impl Probes {
    /// Binds `listen` (failing start-up when it cannot) and serves the probes;
    /// readiness answers 503 once `lifecycle` drains.
    pub async fn start(
        listen: SocketAddr,
        readiness: Readiness,
        lifecycle: Lifecycle,
    ) -> anyhow::Result<Self> {
        let pools = readiness.pools();
        let app = Router::new()
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/health/ready", get(ready))
            .with_state(Arc::new(readiness));
        let app = Application::bind("projector", listen, app, pools, lifecycle).await?;
        Ok(Self { http: app.spawn() })
    }

    /// Stops answering (after requests in flight), once draining began.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.http.stop().await
    }
}
