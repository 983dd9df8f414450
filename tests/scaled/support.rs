//! Processes of the scaled mode for end-to-end tests: `parley` children on
//! fresh databases and a broker of the test's own.

use std::process::Stdio;
use std::time::{Duration, Instant};

use parley_kafka::testing::OwnBroker;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const SECRET: &str = "scaled-mode-test-secret-0123456789abcdef";

/// A `parley` child process; killed on drop.
pub struct Proc {
    pub child: Child,
    pub base: Option<String>,
}

impl Proc {
    /// Waits until `/health/ready` answers 200; fails the test when the process
    /// exits first (with its status) or `within` passes.
    pub async fn until_ready(&mut self, what: &[&str], within: Duration) {
        let base = self.base.clone().expect("a service with HTTP");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = http.get(format!("{base}/health/ready")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("parley {what:?} exited before it was ready: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "parley {what:?} not ready in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown, no last commit.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn free_port() -> u16 {
    parley_event_log::testing::free_port()
}

/// One deployment: the log and read databases, a broker, a topic and a group.
pub struct Deployment {
    pub log_url: String,
    pub read_url: String,
    pub broker: OwnBroker,
    pub topic: String,
    pub group: String,
}

impl Deployment {
    /// `None` when no broker can be run here (only allowed without `PARLEY_KAFKA_TESTS=1`).
    pub async fn new() -> Option<Self> {
        let log_url = parley_event_log::testing::fresh_database().await.unwrap();
        let read_url = parley_event_log::testing::fresh_database().await.unwrap();
        Self::on(log_url, read_url)
    }

    /// A deployment over the given (empty) databases.
    pub fn on(log_url: String, read_url: String) -> Option<Self> {
        let broker = OwnBroker::start()?;
        let id = Uuid::new_v4().simple().to_string();
        Some(Self {
            log_url,
            read_url,
            broker,
            topic: format!("parley.e2e.{id}"),
            group: format!("parley-projections-{id}"),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
        command
            .args(args)
            .env("PARLEY_DATABASE_URL", &self.log_url)
            .env("PARLEY_READ_DATABASE_URL", &self.read_url)
            .env("PARLEY_KAFKA_BROKERS", &self.broker.addr)
            .env("PARLEY_KAFKA_TOPIC", &self.topic)
            .env("PARLEY_KAFKA_GROUP", &self.group)
            .env("PARLEY_JWT_SECRET", SECRET)
            .env("PARLEY_RATE_LIMIT_PER_SEC", "0")
            // Projectors serve probes too: on a port of their own, never 8084.
            .env("PARLEY_LISTEN", "127.0.0.1:0")
            .kill_on_drop(true);
        // PARLEY_TEST_CHILD_LOG=info shows the children's logs.
        match std::env::var("PARLEY_TEST_CHILD_LOG") {
            Ok(filter) => command.env("PARLEY_LOG", filter).stdout(Stdio::inherit()),
            Err(_) => command.env("PARLEY_LOG", "warn").stdout(Stdio::null()),
        };
        command
    }

    /// A service with HTTP, once `/health/ready` answers 200.
    pub async fn service(&self, args: &[&str]) -> Proc {
        let mut proc = self.spawn(args);
        proc.until_ready(args, Duration::from_secs(60)).await;
        proc
    }

    /// A service with HTTP on a port of its own, started and not waited for.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        self.spawn_with(args, &[])
    }

    /// [`spawn`](Self::spawn) with environment variables of its own.
    pub fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let port = free_port();
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .spawn()
            .expect("spawn parley");
        Proc {
            child,
            base: Some(format!("http://127.0.0.1:{port}")),
        }
    }

    /// A member of the projector group (tests use a short session timeout so the
    /// group notices a killed member quickly).
    pub fn projector(&self) -> Proc {
        self.projector_in_group(&self.group)
    }

    pub fn projector_in_group(&self, group: &str) -> Proc {
        self.projector_with(group, &[])
    }

    /// A member of `group` with environment variables of its own.
    pub fn projector_with(&self, group: &str, env: &[(&str, &str)]) -> Proc {
        let child = self
            .command(&[
                "projector",
                "--feed",
                "kafka",
                "--session-timeout-ms",
                "6000",
            ])
            .env("PARLEY_KAFKA_GROUP", group)
            .envs(env.iter().copied())
            .spawn()
            .expect("spawn projector");
        Proc { child, base: None }
    }

    pub async fn relay(&self) -> Proc {
        self.service(&["relay", "--partitions", "6"]).await
    }
}

/// A client of the command API with one registered, logged-in user.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Client {
    pub async fn register(base: &str, name: &str) -> Self {
        let http = reqwest::Client::new();
        let creds = json!({"username": name, "password": "correct horse battery"});
        let r = http
            .post(format!("{base}/v1/users"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let session: Value = http
            .post(format!("{base}/v1/sessions"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            http,
            base: base.to_string(),
            token: session["access_token"].as_str().unwrap().to_string(),
        }
    }

    pub async fn create_room(&self, name: &str) -> Uuid {
        let r: Value = self
            .http
            .post(format!("{}/v1/rooms", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"name": name, "visibility": "public"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["room_id"].as_str().unwrap().parse().unwrap()
    }

    /// Sends a message; returns the consistency token.
    pub async fn send(&self, room: Uuid, id: Uuid, body: &str) -> String {
        loop {
            let r = self
                .http
                .put(format!("{}/v1/rooms/{room}/messages/{id}", self.base))
                .bearer_auth(&self.token)
                .json(&json!({"body": body}))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    return r.headers()["x-consistency-token"]
                        .to_str()
                        .unwrap()
                        .to_string()
                }
                // A retry with the same message id is idempotent.
                Ok(r) if r.status().is_server_error() => {}
                Ok(r) => panic!("send: {}", r.status()),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every message id of a room, oldest first, paging through the read API.
pub async fn history(
    http: &reqwest::Client,
    read_base: &str,
    token: &str,
    room: Uuid,
    consistency: Option<&str>,
) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("{read_base}/v1/rooms/{room}/messages?limit=200");
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let mut request = http.get(url).bearer_auth(token);
        if let Some(c) = consistency {
            request = request.header("x-consistency-token", c);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200, "history of {room}");
        let page: Value = r.json().await.unwrap();
        let mut page_ids: Vec<Uuid> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message_id"].as_str().unwrap().parse().unwrap())
            .collect();
        page_ids.extend(ids);
        ids = page_ids;
        match page["before"].as_str() {
            Some(b) => before = Some(b.to_string()),
            None => return ids,
        }
    }
}

/// Waits until the read models hold `n` messages (the projectors may still be
/// joining their group).
pub async fn wait_for_messages(read_url: &str, n: i64, within: Duration) {
    let pool = sqlx::PgPool::connect(read_url).await.unwrap();
    let deadline = Instant::now() + within;
    loop {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM history_messages")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {n} messages projected after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every row of every read-model table (not the runtime's own bookkeeping), sorted.
pub async fn dump_models(url: &str) -> Vec<(String, Vec<String>)> {
    use sqlx::Connection;
    // One connection, closed at the end: callers poll this every second.
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name NOT LIKE 'projection\\_%'
           AND table_name NOT LIKE 'projector\\_%'
           AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let mut rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        rows.sort();
        out.push((table, rows));
    }
    let _ = conn.close().await;
    out
}

/// The first rows that differ between two dumps, for a failure message.
pub fn difference(a: &[(String, Vec<String>)], b: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    for ((ta, ra), (tb, rb)) in a.iter().zip(b) {
        if ta != tb {
            return format!("tables differ: {ta} vs {tb}");
        }
        let only_a: Vec<_> = ra.iter().filter(|r| !rb.contains(r)).take(3).collect();
        let only_b: Vec<_> = rb.iter().filter(|r| !ra.contains(r)).take(3).collect();
        if !only_a.is_empty() || !only_b.is_empty() {
            out += &format!(
                "\n{ta}: {} vs {} rows; only in the first: {only_a:?}; only in the second: {only_b:?}",
                ra.len(),
                rb.len()
            );
        }
    }
    out
}

/// One Server-Sent Event as the stream sent it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A client's `/v1/stream`, read frame by frame.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>,
    buffer: String,
    /// The id of the last frame that carried one.
    pub last_id: Option<String>,
}

impl Sse {
    pub async fn open(
        http: &reqwest::Client,
        read_base: &str,
        token: &str,
        last_id: Option<&str>,
    ) -> Self {
        let mut request = http
            .get(format!("{read_base}/v1/stream"))
            .bearer_auth(token);
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200, "open the stream");
        Self {
            body: Box::pin(r.bytes_stream()),
            buffer: String::new(),
            last_id: None,
        }
    }

    /// The next frame with data (comments and the greeting are skipped, their ids kept).
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                    }
                }
                if event.id.is_some() {
                    self.last_id = event.id.clone();
                }
                if !event.data.is_empty() {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        }
    }

    /// The message ids of the next `n` `MessageSent` frames (other frames skipped).
    pub async fn messages(&mut self, n: usize, within: Duration) -> Vec<Uuid> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let Some(e) = self.next(within).await else {
                panic!(
                    "only {} of {n} messages on the stream within {within:?}",
                    ids.len()
                );
            };
            if e.event.as_deref() == Some("MessageSent") {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                ids.push(
                    v["payload"]["message_id"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                );
            }
        }
        ids
    }
}

impl Client {
    /// POSTs a command without a body; returns its consistency token.
    pub async fn post(&self, path: &str) -> String {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.headers()["x-consistency-token"]
            .to_str()
            .unwrap()
            .to_string()
    }
}
