use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use parley_command_api::{CommandApi, Config as CommandConfig, Settings};
use parley_http_kit::{default_token_keys, ShutdownSettings, SigningKey};
use parley_projections::{prepare_all, ReadStore, RunningProjectors};
use parley_read_api::ReadApi;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The command API and the read API, each built as the binary builds it, with
/// the log's projectors running in-process; requests are routed between them
/// as the deployment's HTTPRoute does (see [`is_query`]).
pub struct TestApp {
    /// The command API's router, middleware included.
    pub commands: Router,
    /// The read API's router, middleware included.
    pub router: Router,
    /// The read side's state (its stream hub, its store).
    pub read: parley_read_api::ReadState,
    pub log: parley_event_log::SharedLog,
    /// The event log's URL, for another read API over it.
    pub log_url: String,
    /// The read models' URL, for another read API over them.
    pub read_url: String,
    /// Where the read API listens (it serves on a real socket, for
    /// WebSockets).
    pub read_addr: std::net::SocketAddr,
    _services: (parley_http_kit::Running, parley_http_kit::Running),
    _projectors: Option<RunningProjectors>,
    _dir: tempfile::TempDir,
}

pub struct Answer {
    pub status: StatusCode,
    pub token: Option<String>,
    pub body: Value,
}

/// Queries (GET and HEAD under `/v1`, but the caller's sessions) go to the read
/// API; everything else to the command API: `deploy/k8s/base/httproute.yaml`.
fn is_query(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    matches!(method, "GET" | "HEAD") && path.starts_with("/v1/") && path != "/v1/sessions"
}

pub use parley_read_api::stream::MAX_SIGNAL_BYTES;

/// The signing key both services share.
pub fn keys() -> parley_http_kit::TokenKeys {
    default_token_keys(vec![SigningKey::new("test", &[42; 32]).unwrap()])
}

/// The read API's configuration in tests: port 0, no rate limit.
pub fn read_config(
    read_database_url: &str,
    database_url: Option<&str>,
    settings: parley_read_api::Settings,
) -> parley_read_api::Config {
    parley_read_api::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        read_database_url: read_database_url.to_string(),
        db_pool_size: 8,
        database_url: database_url.map(str::to_string),
        settings,
        shutdown: ShutdownSettings::default(),
    }
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, true).await
    }

    /// `projectors: false` leaves the read models unfed (to test the 504 path).
    pub async fn start_with(backend: Backend, projectors: bool) -> Self {
        Self::start_custom(backend, projectors, |_| {}).await
    }

    /// Like [`TestApp::start_with`], with the read API's settings adjusted.
    pub async fn start_custom(
        backend: Backend,
        projectors: bool,
        adjust: impl FnOnce(&mut parley_read_api::Settings),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (log_url, read_url) = match backend {
            Backend::Postgres => {
                let log = parley_event_log::testing::fresh_database().await.unwrap();
                let read = parley_event_log::testing::fresh_database().await.unwrap();
                (log, read)
            }
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("events.db").display()),
                format!("sqlite://{}", dir.path().join("read.db").display()),
            ),
        };
        let mut settings = Settings::new(keys());
        // Short, so a missed call is seen within a test.
        settings.call_ring_timeout = Duration::from_secs(3);
        settings.rate_limit_per_sec = 0.0;
        let commands = CommandApi::build(CommandConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: log_url.clone(),
            db_pool_size: 8,
            migrate: true,
            settings,
            shutdown: ShutdownSettings::default(),
        })
        .await
        .unwrap();
        let log = commands.log.clone();
        // The projectors' own store, as a projector process opens it.
        let store = ReadStore::open(&read_url, 8).await.unwrap();
        let projectors = if projectors {
            Some(
                RunningProjectors::start(log.clone(), store, None)
                    .await
                    .unwrap(),
            )
        } else {
            prepare_all(&store, &log).await.unwrap();
            None
        };
        // The command API serves on a socket too: WebSocket receipts reach it
        // over HTTP, as in the scaled mode.
        let commands_router = commands.application.router();
        let commands_url = format!("http://{}", commands.application.address());
        let commands_running = commands.application.spawn();
        let mut read = parley_read_api::Settings::new(keys());
        read.rate_limit_per_sec = 0.0;
        read.consistency_wait = Duration::from_secs(5);
        read.commands = Some(parley_read_api::receipts::CommandApi::url(&commands_url).unwrap());
        if projectors.is_none() {
            read.consistency_wait = Duration::from_millis(300);
        }
        adjust(&mut read);
        let queries = ReadApi::build(read_config(&read_url, Some(&log_url), read))
            .await
            .unwrap();
        let read_addr = queries.application.address();
        Self {
            commands: commands_router,
            router: queries.application.router(),
            read: queries.state,
            log,
            log_url,
            read_url,
            read_addr,
            _services: (commands_running, queries.application.spawn()),
            _projectors: projectors,
            _dir: dir,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        consistency: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(c) = consistency {
            req = req.header("x-consistency-token", c);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let service = if is_query(method, path) {
            &self.router
        } else {
            &self.commands
        };
        let res = service.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let token = res
            .headers()
            .get("x-consistency-token")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Answer {
            status,
            token,
            body,
        }
    }

    /// Registers and logs in; returns (user id, access token).
    pub async fn user(&self, name: &str) -> (Uuid, String) {
        let creds = json!({"username": name, "password": "a-long-password"});
        let reg = self
            .call("POST", "/v1/users", None, None, Some(creds.clone()))
            .await;
        assert_eq!(reg.status, StatusCode::CREATED, "{:?}", reg.body);
        let login = self
            .call("POST", "/v1/sessions", None, None, Some(creds))
            .await;
        assert_eq!(login.status, StatusCode::OK);
        (
            reg.body["user_id"].as_str().unwrap().parse().unwrap(),
            login.body["access_token"].as_str().unwrap().to_string(),
        )
    }

    pub async fn room(&self, token: &str, name: &str, visibility: &str) -> (Uuid, String) {
        let a = self
            .call(
                "POST",
                "/v1/rooms",
                Some(token),
                None,
                Some(json!({"name": name, "visibility": visibility})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        (
            a.body["room_id"].as_str().unwrap().parse().unwrap(),
            a.token.unwrap(),
        )
    }

    /// A second read API over the same log and read models, serving on a
    /// socket of its own: another replica.
    pub async fn another_read_api(&self) -> (std::net::SocketAddr, parley_http_kit::Running) {
        let mut settings = parley_read_api::Settings::new(keys());
        settings.rate_limit_per_sec = 0.0;
        let replica = ReadApi::build(read_config(&self.read_url, Some(&self.log_url), settings))
            .await
            .unwrap();
        let address = replica.application.address();
        (address, replica.application.spawn())
    }

    /// Joins `room` as the holder of `token`.
    pub async fn join(&self, token: &str, room: Uuid) {
        let joined = self
            .call(
                "POST",
                &format!("/v1/rooms/{room}/join"),
                Some(token),
                None,
                None,
            )
            .await;
        assert!(joined.status.is_success(), "{:?}", joined.body);
    }
}
