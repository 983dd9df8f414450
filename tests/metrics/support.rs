//! `parley` children on fresh databases, a small client, and a reader of the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const SECRET: &str = "metrics-test-secret-0123456789abcdef0123";

/// A `parley` child serving HTTP; killed on drop.
pub struct Service {
    /// The process (tests/lifecycle signals it and waits for its exit).
    #[allow(dead_code)]
    pub child: Child,
    pub base: String,
    /// Its stdout lines, when captured.
    pub lines: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    parley_event_log::testing::free_port()
}

/// Starts `parley <args> --listen 127.0.0.1:<free port>` with `env`, and waits
/// until `/health` answers. With `log` set, stdout (JSON lines at that filter)
/// is kept in [`Service::lines`].
pub async fn spawn(args: &[&str], env: &[(&str, &str)], log: Option<&str>) -> Service {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PARLEY_JWT_SECRET", SECRET)
        .env("PARLEY_RATE_LIMIT_PER_SEC", "0")
        .env("PARLEY_LOG_FORMAT", "json")
        .env("PARLEY_LOG", log.unwrap_or("warn"))
        .stdout(if log.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn parley");
    let lines = Arc::new(Mutex::new(Vec::new()));
    if let Some(stdout) = child.stdout.take() {
        let lines = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let service = Service { child, base, lines };
    service.wait_for("/health").await;
    service
}

impl Service {
    /// Waits (60 s at most) until `path` answers 200.
    pub async fn wait_for(&self, path: &str) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}{path}", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}{path} not 200 in 60 s",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One scrape of `/metrics`, checked to be Prometheus text. Saved as
    /// `<name>.prom` under `PARLEY_METRICS_DUMP_DIR` when that is set.
    pub async fn scrape(&self, name: &str) -> Scrape {
        let r = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = r.text().await.unwrap();
        if let Ok(dir) = std::env::var("PARLEY_METRICS_DUMP_DIR") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(format!("{dir}/{name}.prom"), &text).unwrap();
        }
        Scrape::parse(&text)
    }

    /// Scrapes until `check` holds (for `within` at most): for figures sampled
    /// every few seconds, or moved by work in the background.
    pub async fn scrape_until(
        &self,
        name: &str,
        within: Duration,
        check: impl Fn(&Scrape) -> bool,
    ) -> Scrape {
        let deadline = Instant::now() + within;
        loop {
            let scrape = self.scrape(name).await;
            if check(&scrape) {
                return scrape;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: condition not met in {within:?}; last scrape:\n{}",
                scrape.text
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The series of one scrape.
pub struct Scrape {
    pub text: String,
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut series = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (head, value) = line.rsplit_once(' ').expect("name and value");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closing brace");
                    let labels = rest
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (head.to_string(), BTreeMap::new()),
            };
            series.push((name, labels, value));
        }
        Self {
            text: text.to_string(),
            series,
        }
    }

    /// The sum over series named `name` carrying every label of `labels`;
    /// `None` when there is no such series.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .series
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Scrape::get`], 0 when there is no such series.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

/// A user of the command API, logged in.
pub struct User {
    pub http: reqwest::Client,
    pub base: String,
    pub id: Uuid,
    pub token: String,
}

impl User {
    pub async fn register(base: &str, name: &str) -> Self {
        let http = reqwest::Client::new();
        let creds = json!({"username": name, "password": "correct horse battery"});
        let r = http
            .post(format!("{base}/v1/users"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let registered: Value = r.json().await.unwrap();
        let r = http
            .post(format!("{base}/v1/sessions"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let session: Value = r.json().await.unwrap();
        Self {
            http,
            base: base.to_string(),
            id: registered["user_id"].as_str().unwrap().parse().unwrap(),
            token: session["access_token"].as_str().unwrap().to_string(),
        }
    }

    pub async fn create_room(&self) -> Uuid {
        let r = self
            .http
            .post(format!("{}/v1/rooms", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"name": "general", "visibility": "public"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        body["room_id"].as_str().unwrap().parse().unwrap()
    }

    /// A send request, to add headers to.
    pub fn send(&self, room: Uuid, message: Uuid, body: &str) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{}/v1/rooms/{room}/messages/{message}", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "body": body }))
    }
}
