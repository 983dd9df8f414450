//! `TestApp`: the command API's router on a fresh event log, and request helpers.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use parley_command_api::{AppState, CommandApi, Config, Settings};
use parley_event_log::{ConsistencyToken, Cursor, EventEnvelope, SharedLog};
use parley_http_kit::{default_token_keys, Application, ShutdownSettings, SigningKey};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

/// The JWT key the test app signs with (tests forge tokens with it too).
pub const KID: &str = "test-key-1";
pub const SECRET: &[u8] = b"parley-command-api-tests-secret-0123456789";
/// How long a test waits for the log's tail to show a committed event.
const TAIL_WAIT: Duration = Duration::from_secs(30);
/// The password every test user registers with.
pub const PASSWORD: &str = "correct horse battery";

/// Which event log the app writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The command API over the log at `database_url`, on port 0.
async fn build_api(database_url: &str, settings: Settings, migrate: bool) -> CommandApi {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.to_string(),
        db_pool_size: 8,
        migrate,
        settings,
        shutdown: ShutdownSettings::default(),
    };
    CommandApi::build(config)
        .await
        .expect("the command API builds (is Postgres up at 127.0.0.1:5432?)")
}

/// Production settings with the test key.
pub fn settings() -> Settings {
    Settings::new(default_token_keys(vec![
        SigningKey::new(KID, SECRET).unwrap()
    ]))
}

/// The command API on an empty event log, built as the binary builds it.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub log: SharedLog,
    database_url: String,
    /// Holds the (unused) port 0 listener for the test's duration.
    _application: Application,
    /// Keeps the SQLite file alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

/// An answer: status, headers and the body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// Asserts the status, with the body in the message when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts an RFC 9457 problem with this status (header, `status` member, no field).
    #[track_caller]
    pub fn assert_problem(&self, status: u16) -> &Self {
        self.assert_status(status);
        assert_eq!(
            self.header(header::CONTENT_TYPE.as_str()),
            Some("application/problem+json"),
            "problem content type; body: {}",
            self.body
        );
        assert_eq!(self.body["status"], json!(status), "problem status member");
        assert!(self.body["type"].is_string(), "problem type: {}", self.body);
        assert!(
            self.body["title"].is_string(),
            "problem title: {}",
            self.body
        );
        assert!(
            self.body["detail"].is_string(),
            "problem detail: {}",
            self.body
        );
        self
    }

    /// Asserts a 422 problem naming `field`.
    #[track_caller]
    pub fn assert_invalid(&self, field: &str) -> &Self {
        self.assert_problem(422);
        assert_eq!(
            self.body["field"],
            json!(field),
            "problem field; body: {}",
            self.body
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A UUID member of the body.
    #[track_caller]
    pub fn uuid(&self, key: &str) -> Uuid {
        self.body[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no uuid {key:?} in {}", self.body))
    }

    /// The `positions` of the events the command appended.
    #[track_caller]
    pub fn positions(&self) -> Vec<i64> {
        serde_json::from_value(self.body["positions"].clone())
            .unwrap_or_else(|_| panic!("no positions in {}", self.body))
    }

    /// The consistency token: present, non-empty, the same in header and body,
    /// and decodable.
    #[track_caller]
    pub fn consistency_token(&self) -> ConsistencyToken {
        let body = self.body["consistency_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no consistency_token in {}", self.body));
        assert!(!body.is_empty(), "empty consistency token");
        assert_eq!(
            self.header("x-consistency-token"),
            Some(body),
            "X-Consistency-Token header equals the body's token"
        );
        ConsistencyToken::decode(body).expect("a well-formed consistency token")
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::with_settings(backend, settings()).await
    }

    pub async fn with_settings(backend: Backend, settings: Settings) -> Self {
        let (database_url, dir) = match backend {
            Backend::Postgres => {
                let url = parley_event_log::testing::fresh_database()
                    .await
                    .expect("a test database (is Postgres up at 127.0.0.1:5432?)");
                (url, None)
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("events.db").display());
                (url, Some(dir))
            }
        };
        let api = build_api(&database_url, settings, true).await;
        Self {
            router: api.application.router(),
            state: api.state,
            log: api.log,
            database_url,
            _application: api.application,
            _dir: dir,
        }
    }

    /// A second command API over the same log, as another replica (process) would
    /// run: its own pool, engine, cache and locks.
    pub async fn replica(&self, settings: Settings) -> Router {
        build_api(&self.database_url, settings, false)
            .await
            .application
            .router()
    }

    /// Sends a request through the router.
    pub async fn call(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// A request with an optional bearer token and an optional JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> TestResponse {
        self.call(build(method, path, token, body, &[])).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.request(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> TestResponse {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    /// A POST without a body (join, leave, accept, ...).
    pub async fn post_empty(&self, path: &str, token: &str) -> TestResponse {
        self.request(Method::POST, path, Some(token), None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: &Value) -> TestResponse {
        self.request(Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn put_empty(&self, path: &str, token: &str) -> TestResponse {
        self.request(Method::PUT, path, Some(token), None).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> TestResponse {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> TestResponse {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// A POST carrying an `Idempotency-Key`.
    pub async fn post_with_key(
        &self,
        path: &str,
        token: &str,
        key: &str,
        body: &Value,
    ) -> TestResponse {
        self.call(build(
            Method::POST,
            path,
            Some(token),
            Some(body),
            &[("idempotency-key", key)],
        ))
        .await
    }

    /// Registers `username` (with [`PASSWORD`]) and logs in: (user id, access token).
    pub async fn register(&self, username: &str) -> (Uuid, String) {
        let registered = self.register_raw(username, PASSWORD).await;
        registered.assert_status(201);
        let session = self.login(username, PASSWORD).await;
        session.assert_status(200);
        (
            registered.uuid("user_id"),
            session.body["access_token"].as_str().unwrap().to_string(),
        )
    }

    pub async fn register_raw(&self, username: &str, password: &str) -> TestResponse {
        self.request(
            Method::POST,
            "/v1/users",
            None,
            Some(&json!({"username": username, "password": password})),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> TestResponse {
        self.request(
            Method::POST,
            "/v1/sessions",
            None,
            Some(&json!({"username": username, "password": password})),
        )
        .await
    }

    /// An access token for a user id that never registered, issued by the app's own
    /// keys. Only for load tests (the commands they send never look users up):
    /// argon2 in a debug build costs most of a second per registration.
    pub fn mint_access_token(&self) -> (Uuid, String) {
        let user_id = Uuid::now_v7();
        (user_id, self.state.keys.issue_access(user_id).unwrap())
    }

    /// Creates a room owned by the token's user.
    pub async fn create_room(&self, token: &str, visibility: &str) -> Uuid {
        self.post(
            "/v1/rooms",
            token,
            &json!({"name": "general", "topic": "anything goes", "visibility": visibility}),
        )
        .await
        .assert_status(201)
        .uuid("room_id")
    }

    pub async fn join(&self, token: &str, room_id: Uuid) -> TestResponse {
        self.post_empty(&format!("/v1/rooms/{room_id}/join"), token)
            .await
    }

    /// Sends `body` as a new message (a fresh client-chosen id).
    pub async fn send_message(
        &self,
        token: &str,
        room_id: Uuid,
        body: &str,
    ) -> (Uuid, TestResponse) {
        let message_id = Uuid::now_v7();
        let response = self.put_message(token, room_id, message_id, body).await;
        (message_id, response)
    }

    pub async fn put_message(
        &self,
        token: &str,
        room_id: Uuid,
        message_id: Uuid,
        body: &str,
    ) -> TestResponse {
        self.put(
            &format!("/v1/rooms/{room_id}/messages/{message_id}"),
            token,
            &json!({ "body": body }),
        )
        .await
    }

    /// One aggregate's events, in order (reads committed rows directly).
    pub async fn stream(&self, aggregate_id: Uuid) -> Vec<EventEnvelope> {
        self.log.load_stream(aggregate_id, 0).await.unwrap()
    }

    /// The log's tail once it shows at least `n` events (or after [`TAIL_WAIT`]).
    /// The Postgres tail holds rows back while older transactions run anywhere on
    /// the server (other tests', other databases').
    pub async fn events_at_least(&self, n: usize) -> Vec<EventEnvelope> {
        let deadline = Instant::now() + TAIL_WAIT;
        loop {
            let all = self.log.read_after(Cursor::START, 100_000).await.unwrap();
            if all.len() >= n || Instant::now() > deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The whole tail up to and including the event at `position` (waiting for it).
    /// Anything committed before that event's transaction is in it too.
    pub async fn events_through(&self, position: i64) -> Vec<EventEnvelope> {
        let deadline = Instant::now() + TAIL_WAIT;
        loop {
            let all = self.log.read_after(Cursor::START, 100_000).await.unwrap();
            if all.iter().any(|e| e.position == position) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "position {position} never showed in the tail ({} events did)",
                all.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Appends a marker through the API (a presence change of a minted user) and
    /// returns the tail through it: every earlier commit is then visible, so
    /// counts taken from it are exact.
    pub async fn settled_events(&self) -> Vec<EventEnvelope> {
        let (_, token) = self.mint_access_token();
        let marker = self
            .put("/v1/presence", &token, &json!({"status": "online"}))
            .await;
        marker.assert_status(200);
        let position = marker.positions()[0];
        self.events_through(position)
            .await
            .into_iter()
            .filter(|e| e.event_type != "PresenceChanged" || e.position != position)
            .collect()
    }
}

/// How many of `events` have this type.
pub fn count(events: &[EventEnvelope], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// A request with a bearer token and a JSON body, as a client sends them.
pub fn build(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// Asserts that a command's `positions` are those of the named aggregate's latest
/// events in the log, and that its consistency token names the last of them.
pub async fn assert_positions_in_log(app: &TestApp, response: &TestResponse, aggregate_id: Uuid) {
    let positions = response.positions();
    assert!(
        !positions.is_empty(),
        "the command appended events: {}",
        response.body
    );
    let stream = app.stream(aggregate_id).await;
    let tail: Vec<i64> = stream[stream.len() - positions.len()..]
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        positions, tail,
        "body positions are the stream's newest events"
    );
    let last = stream.last().unwrap();
    let token = response.consistency_token();
    assert_eq!(
        token.streams,
        vec![parley_event_log::StreamHead {
            aggregate_id,
            sequence: last.sequence
        }]
    );
    assert_eq!(token.cursor, last.cursor());
}
