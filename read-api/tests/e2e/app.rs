use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use parley_command_api::{AppState, Settings};
use parley_http_kit::{default_token_keys, SigningKey};
use parley_projections::{models, LogFeed, Projector, ReadStore};
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub struct TestApp {
    pub router: Router,
    /// The read side's state (its stream hub, its store).
    pub read: parley_read_api::ReadState,
    pub log: parley_event_log::SharedLog,
    _shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

pub struct Answer {
    pub status: StatusCode,
    pub token: Option<String>,
    pub body: Value,
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
        let log = parley_event_log::open(&log_url, 8).await.unwrap();
        let store = ReadStore::open(&read_url, 8).await.unwrap();
        let (shutdown, rx) = watch::channel(false);
        for projection in models::all() {
            let projector = Projector::new(
                projection,
                store.clone(),
                Arc::new(LogFeed::new(log.clone())),
            );
            projector.prepare().await.unwrap();
            if projectors {
                let rx = rx.clone();
                tokio::spawn(async move { projector.run(rx).await });
            }
        }
        let keys = default_token_keys(vec![SigningKey::new("test", &[42; 32]).unwrap()]);
        let mut settings = Settings::new(keys.clone());
        settings.rate_limit_per_sec = 0.0;
        let mut read = parley_read_api::Settings::new(keys);
        read.rate_limit_per_sec = 0.0;
        read.consistency_wait = Duration::from_secs(5);
        if !projectors {
            read.consistency_wait = Duration::from_millis(300);
        }
        adjust(&mut read);
        let read = parley_read_api::ReadState::new(store.clone(), Some(log.clone()), read);
        let router = parley_command_api::router(AppState::new(log.clone(), settings))
            .merge(parley_read_api::v1_routes(read.clone()));
        Self {
            router,
            read,
            log,
            _shutdown: shutdown,
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
        let res = self.router.clone().oneshot(req).await.unwrap();
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
}
