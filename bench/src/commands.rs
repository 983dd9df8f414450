//! `parley-bench commands`: durable sends through the HTTP command API.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};
use sqlx::ConnectOptions;
use tokio::process::{Child, Command};

use crate::args::BenchCommandsArgs;

/// The JWT secret every benchmark server signs with.
pub const BENCH_SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";

/// A database made for one benchmark run, dropped by [`TempDb::drop_now`].
pub struct TempDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TempDb {
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("parley_bench_{}", uuid::Uuid::new_v4().simple());
        admin_exec(admin_url, &format!("CREATE DATABASE {name}")).await?;
        Ok(Self {
            url: swap_database(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
        })
    }

    /// `VACUUM (FREEZE, ANALYZE)` of the seeded event log, as autovacuum leaves a
    /// log in service. A log written a second ago has no hint bits set: the
    /// first scan of it would set them and write every page back, work that
    /// only happens once per row and is not what the benchmarks measure.
    pub async fn vacuum_log(&self) -> anyhow::Result<()> {
        let options: sqlx::postgres::PgConnectOptions = self.url.parse()?;
        // VACUUM of a big table takes seconds: that is no slow statement here.
        let pool = sqlx::PgPool::connect_with(options.disable_statement_logging()).await?;
        sqlx::raw_sql("VACUUM (FREEZE, ANALYZE) events")
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(())
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        admin_exec(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await
    }
}

/// A `parley` service started as a child process for a benchmark.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Starts `parley <args>` on a free port (`--listen` is added) with the given
    /// environment, and waits until `/health/ready` answers 200.
    pub async fn spawn(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Self> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut command = Command::new(crate::parley_binary());
        command
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("PARLEY_JWT_SECRET", BENCH_SECRET)
            // Every limit that counts per user or per client address is off:
            // all the load comes from one address, as no real client's does.
            .env("PARLEY_RATE_LIMIT_PER_SEC", "0")
            .env("PARLEY_REGISTRATIONS_PER_HOUR", "0")
            .env("PARLEY_LOGIN_RATE_PER_SEC", "0")
            .env("PARLEY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting parley {}", args.join(" ")))?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client
                .get(format!("{}/health/ready", server.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                bail!("parley {} did not become ready within 60 s", args.join(" "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident set size of the server process (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc_status("VmHWM:")
    }

    /// Current resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc_status("VmRSS:")
    }

    fn proc_status(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Runs one statement on the Postgres server the benchmark uses.
pub async fn admin_exec(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {}", parley_event_log::redact_url(admin_url)))?;
    sqlx::raw_sql(sql).execute(&mut conn).await?;
    Ok(())
}

/// The server's `fsync` and `synchronous_commit`: whether a 201 means the
/// event is on disk.
async fn durability(admin_url: &str) -> anyhow::Result<String> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let row = sqlx::query("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
        .fetch_one(&mut conn)
        .await?;
    let fsync: String = row.try_get(0)?;
    let synchronous_commit: String = row.try_get(1)?;
    Ok(format!(
        "fsync = {fsync}, synchronous_commit = {synchronous_commit}"
    ))
}

/// `url` with its database name replaced by `name`.
pub fn swap_database(url: &str, name: &str) -> String {
    match url.rfind('/') {
        Some(i) if i > url.find("://").map_or(0, |j| j + 2) => format!("{}/{name}", &url[..i]),
        _ => format!("{url}/{name}"),
    }
}

/// What one load worker measured: latencies of the answers that succeeded
/// (microseconds), and how many did not.
pub struct Tally {
    pub hist: Histogram<u64>,
    pub errors: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: 0,
        }
    }
}

impl Tally {
    /// One request sent at `sent`, answered now.
    pub fn record(&mut self, sent: Instant, ok: bool) {
        if ok {
            let _ = self.hist.record(sent.elapsed().as_micros() as u64);
        } else {
            self.errors += 1;
        }
    }

    /// The figures: `counted` names what succeeded (and a note after the
    /// count), `unit` what the throughput counts.
    pub fn print(&self, seconds: u64, warmup: u64, counted: (&str, &str), unit: &str) {
        let (what, note) = counted;
        println!("  measured          {seconds} s (after {warmup} s warm-up)");
        println!("  {what:<18}{}{note}", self.hist.len());
        println!("  errors            {}", self.errors);
        println!(
            "  throughput        {:.0} {unit}/s",
            self.hist.len() as f64 / seconds as f64
        );
        print_latency(&self.hist);
    }

    /// The workers' tallies, merged.
    pub async fn gather(workers: Vec<tokio::task::JoinHandle<Tally>>) -> anyhow::Result<Tally> {
        let mut total = Tally::default();
        for worker in workers {
            let tally = worker.await?;
            total.hist.add(tally.hist)?;
            total.errors += tally.errors;
        }
        Ok(total)
    }
}

/// Prints a histogram of microseconds as p50/p90/p99/max in milliseconds.
pub fn print_latency(hist: &Histogram<u64>) {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!("  latency p50       {:.2} ms", ms(0.50));
    println!("  latency p90       {:.2} ms", ms(0.90));
    println!("  latency p99       {:.2} ms", ms(0.99));
    println!("  latency max       {:.2} ms", hist.max() as f64 / 1000.0);
}

/// Formats KiB as MiB, or says the figure is not available.
pub fn mib(kib: Option<u64>) -> String {
    match kib {
        Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
        None => "n/a (external target)".to_string(),
    }
}

async fn expect_json(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what}: {status} {body}");
    }
    Ok(body)
}

/// Registers `username` and logs in; the session's access token.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> anyhow::Result<String> {
    let creds = json!({"username": username, "password": "bench-password"});
    let register = http.post(format!("{base}/v1/users")).json(&creds);
    expect_json(register.send().await?, "register").await?;
    login(http, base, username).await
}

/// Logs `username` (registered by [`register`]) in; the access token.
pub async fn login(http: &reqwest::Client, base: &str, username: &str) -> anyhow::Result<String> {
    let creds = json!({"username": username, "password": "bench-password"});
    let login = http.post(format!("{base}/v1/sessions")).json(&creds);
    let session = expect_json(login.send().await?, "login").await?;
    Ok(session["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Creates a public room named `name` as `token`'s user; the room's id.
pub async fn create_room(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> anyhow::Result<String> {
    let create = http
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(token)
        .json(&json!({"name": name, "visibility": "public"}));
    let body = expect_json(create.send().await?, "create room").await?;
    Ok(body["room_id"].as_str().unwrap_or_default().to_string())
}

/// `token`'s user joins `room`.
pub async fn join_room(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    room: &str,
) -> anyhow::Result<()> {
    let join = http
        .post(format!("{base}/v1/rooms/{room}/join"))
        .bearer_auth(token);
    expect_json(join.send().await?, "join").await?;
    Ok(())
}

pub async fn commands(args: BenchCommandsArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.rooms == 0 || args.seconds == 0 {
        bail!("--clients, --rooms and --seconds must be at least 1");
    }
    let (server, db) = match &args.target {
        Some(_) => (None, None),
        None => {
            let db = TempDb::create(&args.server.admin_url).await?;
            let server = Server::spawn(
                &["command-api", "--migrate"],
                &[
                    ("PARLEY_DATABASE_URL", db.url.clone()),
                    ("PARLEY_DB_POOL_SIZE", args.db_pool_size.to_string()),
                ],
            )
            .await?;
            (Some(server), Some(db))
        }
    };
    let base = match (&args.target, &server) {
        (Some(t), _) => t.trim_end_matches('/').to_string(),
        (None, Some(s)) => s.base.clone(),
        _ => unreachable!(),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .tcp_nodelay(true)
        .build()?;

    eprintln!(
        "setting up: {} users, {} rooms ...",
        args.clients, args.rooms
    );
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut tokens = Vec::with_capacity(args.clients);
    let mut setups = Vec::new();
    for i in 0..args.clients {
        let (http, base) = (http.clone(), base.clone());
        let username = format!("bench{}_{i}", &run_id[..8]);
        setups.push(tokio::spawn(async move {
            register(&http, &base, &username).await
        }));
    }
    for s in setups {
        tokens.push(s.await??);
    }
    let mut rooms = Vec::with_capacity(args.rooms);
    for r in 0..args.rooms {
        rooms.push(create_room(&http, &base, &tokens[0], &format!("bench room {r}")).await?);
    }
    let rooms = Arc::new(rooms);
    let mut joins = Vec::new();
    for token in tokens.iter().skip(1) {
        let (http, base, rooms, token) = (http.clone(), base.clone(), rooms.clone(), token.clone());
        joins.push(tokio::spawn(async move {
            for room in rooms.iter() {
                join_room(&http, &base, &token, room).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for j in joins {
        j.await??;
    }

    let setup_rss = server.as_ref().and_then(|s| s.rss_kib());
    eprintln!(
        "running: {} clients sending into {} rooms for {} s (+{} s warm-up) ...",
        args.clients, args.rooms, args.seconds, args.warmup
    );
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (http, base, rooms) = (http.clone(), base.clone(), rooms.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let body = json!({"body": format!("hello from bench client {i}")});
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let room = &rooms[rand::thread_rng().gen_range(0..rooms.len())];
                let message_id = uuid::Uuid::now_v7();
                let sent = Instant::now();
                let result = http
                    .put(format!("{base}/v1/rooms/{room}/messages/{message_id}"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let ok = match result {
                    Ok(r) => {
                        let ok = r.status().as_u16() == 201;
                        let _ = r.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                if sent >= measure_from {
                    tally.record(sent, ok);
                }
            }
            tally
        }));
    }
    let tally = Tally::gather(workers).await?;
    let rss = server.as_ref().and_then(|s| s.peak_rss_kib());
    println!("parley-bench commands");
    println!(
        "  target            {}",
        if args.target.is_some() {
            base.as_str()
        } else {
            "command-api child process on a fresh Postgres database"
        }
    );
    if args.target.is_none() {
        // "Durable" holds only as far as the server's settings make it so.
        let durability = durability(&args.server.admin_url).await?;
        println!("  postgres          {durability}");
    }
    println!("  clients           {}", args.clients);
    println!("  rooms             {}", args.rooms);
    tally.print(
        args.seconds,
        args.warmup,
        ("durable sends", " (201 Created)"),
        "sends",
    );
    println!("  server RSS setup  {}", mib(setup_rss));
    println!(
        "  server RSS end    {}",
        mib(server.as_ref().and_then(|s| s.rss_kib()))
    );
    println!("  server peak RSS   {}", mib(rss));
    if let Some(server) = server {
        server.stop().await;
    }
    if let Some(db) = db {
        db.drop_now().await?;
    }
    Ok(())
}
