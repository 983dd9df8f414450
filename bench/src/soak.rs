//! `parley-bench soak`: the whole scaled mode for a long time at a steady rate,
//! with SSE clients coming and going. It looks for what a short benchmark
//! cannot show: memory that grows, latency that drifts, errors that come with
//! time, and read models that drift from the log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use rand::Rng;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::commands::{create_room, join_room, login, register, Server, Tally};
use super::replay::models_against_a_replay;
use super::scaled::{open_stream, wait_for_room, Scaled, SseFrames, Topology};
use crate::args::{BenchSoakArgs, Feed};

/// Rooms every user joined besides its own: their messages reach every stream.
const SHARED_ROOMS: usize = 3;
/// A send not answered by then counts as an error.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// RSS growth after the warm-up that still counts as flat.
const RSS_GROWTH_LIMIT: f64 = 0.10;

/// What one window of the run saw, by when each thing ended.
#[derive(Default)]
struct Window {
    tally: Tally,
    sse_connects: u64,
    sse_frames: u64,
    /// How late the driver sent, at worst, behind its schedule.
    lag: Duration,
}

/// Shared by the driver, the senders and the SSE clients.
struct Recorder {
    start: Instant,
    window: Duration,
    windows: Mutex<Vec<Window>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    /// Updates the window that holds this moment.
    fn with(&self, update: impl FnOnce(&mut Window)) {
        let i = (self.start.elapsed().as_nanos() / self.window.as_nanos()) as usize;
        let mut windows = self.windows.lock().unwrap();
        if windows.len() <= i {
            windows.resize_with(i + 1, Window::default);
        }
        update(&mut windows[i]);
    }

    fn error(&self, kind: String) {
        self.with(|w| w.tally.errors += 1);
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }
}

/// Every user's name, current token and own room, and the rooms all of them
/// joined.
struct Users {
    names: Vec<String>,
    /// Renewed every [`RENEW_SESSIONS_EVERY`], as a client renews its session
    /// before the access token expires (15 minutes by default).
    tokens: std::sync::RwLock<Vec<String>>,
    own: Vec<String>,
    shared: Vec<String>,
}

impl Users {
    fn count(&self) -> usize {
        self.names.len()
    }

    fn token(&self, user: usize) -> String {
        self.tokens.read().unwrap()[user].clone()
    }
}

/// How often every user logs in again for a fresh access token.
const RENEW_SESSIONS_EVERY: Duration = Duration::from_secs(300);

/// Logs every user in again every [`RENEW_SESSIONS_EVERY`] until `stop`.
async fn renew_sessions(
    http: reqwest::Client,
    base: String,
    users: Arc<Users>,
    mut stop: watch::Receiver<bool>,
    rec: Arc<Recorder>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_SESSIONS_EVERY) => {}
            _ = stop.changed() => return,
        }
        for (user, name) in users.names.iter().enumerate() {
            match login(&http, &base, name).await {
                Ok(token) => users.tokens.write().unwrap()[user] = token,
                Err(e) => rec.error(format!("login: {e}")),
            }
        }
    }
}

/// RSS of every process (KiB) at `at` from the start of sending.
struct Sample {
    at: Duration,
    rss: Vec<Option<u64>>,
}

/// A criterion's verdict: `None` when the run was too short to judge it.
type Verdict = (Option<bool>, String);

pub async fn soak(args: BenchSoakArgs) -> anyhow::Result<()> {
    let duration = args.duration();
    if args.rate == 0 || duration.is_zero() || args.users == 0 {
        bail!("--rate, --minutes (or --seconds) and --users must be at least 1");
    }
    if args.sample_every == 0 || args.window_seconds == 0 {
        bail!("--sample-every and --window-seconds must be at least 1");
    }
    let dep = Scaled::start(Topology {
        admin_url: &args.server.admin_url,
        read_admin_url: None,
        feed: args.feed,
        kafka_brokers: &args.kafka.kafka_brokers,
        kafka_options: &args.kafka_options,
        partitions: Some(args.kafka.partitions),
        projectors: args.projectors,
        db_pool_size: Some(args.db_pool_size),
        page_cache_mb: None,
    })
    .await?;
    // Torn down whatever happened: a failed run must not leave databases,
    // processes or a topic behind.
    let outcome = run(&args, &dep).await;
    let stopped = dep.stop().await;
    if let (Err(_), Err(e)) = (&outcome, &stopped) {
        eprintln!("tearing down failed too: {e:#}");
    }
    let failed = outcome?;
    stopped?;
    if !failed.is_empty() {
        bail!("soak FAILED: {}", failed.join(", "));
    }
    Ok(())
}

/// Sets up, drives and reports; the criteria that failed.
async fn run(args: &BenchSoakArgs, dep: &Scaled) -> anyhow::Result<Vec<&'static str>> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let users = Arc::new(setup(&http, dep, args.users).await?);
    let processes = dep.processes();
    let names: Vec<String> = processes.iter().map(|(name, _)| name.clone()).collect();
    let (duration, window) = (args.duration(), Duration::from_secs(args.window_seconds));
    eprintln!(
        "running: {} sends/s for {} s, {} SSE clients ...",
        args.rate,
        duration.as_secs(),
        args.sse_clients
    );
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        window,
        windows: Mutex::new(Vec::new()),
        errors: Mutex::new(BTreeMap::new()),
    });
    let (stop, stopped) = watch::channel(false);
    let mut streams = JoinSet::new();
    streams.spawn(renew_sessions(
        http.clone(),
        dep.command_api.base.clone(),
        users.clone(),
        stopped.clone(),
        rec.clone(),
    ));
    for i in 0..args.sse_clients {
        let base = dep.read_api.base.clone();
        streams.spawn(sse_client(
            http.clone(),
            base,
            (users.clone(), i % users.count()),
            stopped.clone(),
            rec.clone(),
        ));
    }

    // Burst, not Delay: tokio's timer has millisecond resolution, so Delay
    // could not send more than about 1,000 per second; a tick that comes late
    // is sent at once, and how late shows as the window's lag.
    let mut send_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    send_tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sample_tick = tokio::time::interval(Duration::from_secs(args.sample_every));
    let mut window_tick = tokio::time::interval_at((rec.start + window).into(), window);
    let finish = tokio::time::sleep_until((rec.start + duration).into());
    tokio::pin!(finish);
    let (mut sends, mut samples) = (JoinSet::new(), Vec::new());
    let (mut n, mut printed) = (0u64, 0usize);
    loop {
        tokio::select! {
            biased;
            _ = &mut finish => break,
            _ = window_tick.tick() => {
                print_window(&rec, printed, &processes, duration);
                printed += 1;
            }
            _ = sample_tick.tick() => samples.push(sample(&rec, &processes)),
            scheduled = send_tick.tick() => {
                let lag = scheduled.elapsed();
                rec.with(|w| w.lag = w.lag.max(lag));
                sends.spawn(send(http.clone(), dep.command_api.base.clone(), users.clone(), n, rec.clone()));
                n += 1;
            }
            Some(_) = sends.join_next(), if !sends.is_empty() => {}
        }
    }
    while sends.join_next().await.is_some() {}
    stop.send_replace(true);
    while streams.join_next().await.is_some() {}
    samples.push(sample(&rec, &processes));
    // What ended after the last full window: the last sends' answers.
    let windows = rec.windows.lock().unwrap().len();
    for i in printed..windows {
        print_window(&rec, i, &processes, duration);
    }
    if let Some(path) = &args.report_csv {
        write_csv(path, &names, &samples)?;
    }

    eprintln!("sending stopped; replaying the log to compare the read models ...");
    let models = models_against_a_replay(dep, &args.server.admin_url, args.db_pool_size).await?;
    let windows = std::mem::take(&mut *rec.windows.lock().unwrap());
    let errors = std::mem::take(&mut *rec.errors.lock().unwrap());
    let answered: u64 = windows.iter().map(|w| w.tally.hist.len()).sum();
    let lag = windows.iter().map(|w| w.lag).max().unwrap_or_default();

    println!("parley-bench soak");
    let setup =
        match args.feed {
            Feed::Log => "projector (tails the log), read-api".to_string(),
            Feed::Kafka => format!(
            "relay, Kafka ({}, {} partitions), {} projectors (one group), read-api --feed kafka",
            args.kafka.kafka_brokers, args.kafka.partitions, dep.projectors.len()
        ),
        };
    println!("  setup             command-api, {setup}: separate processes on Postgres");
    println!(
        "  load              {} users (a room each, {SHARED_ROOMS} shared rooms), {} SSE clients (5-30 s per connection)",
        args.users, args.sse_clients
    );
    println!(
        "  sent              {n} sends in {:.0} s: {:.1}/s of {}/s asked (driver lag at worst {} ms{})",
        duration.as_secs_f64(),
        n as f64 / duration.as_secs_f64(),
        args.rate,
        lag.as_millis(),
        if lag > Duration::from_secs(1) { ": it fell behind" } else { "" }
    );
    println!("  answered 201      {answered}");
    let connects: u64 = windows.iter().map(|w| w.sse_connects).sum();
    let frames: u64 = windows.iter().map(|w| w.sse_frames).sum();
    println!("  SSE               {connects} connections, {frames} frames");
    let error_count: u64 = errors.values().sum();
    println!("  errors            {error_count}");
    for (kind, count) in errors.iter().take(20) {
        println!("    {kind:<60} {count}");
    }
    let rss = rss_verdict(&samples, &names, args.warmup());
    let p99 = p99_verdict(&windows, window, duration, args.warmup());
    let errors = (Some(error_count == 0), format!("{error_count} errors"));
    let models = (Some(models.print(answered)), "as above".to_string());
    println!("  criteria (warm-up {} s):", args.warmup().as_secs());
    let criteria = [
        ("RSS flat", rss),
        ("p99 stable", p99),
        ("zero errors", errors),
        ("models equal the log", models),
    ];
    let mut failed = Vec::new();
    for (name, (verdict, detail)) in criteria {
        let word = match verdict {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        };
        println!("    {name:<22}{word}  {detail}");
        if verdict == Some(false) {
            failed.push(name);
        }
    }
    Ok(failed)
}

/// Users, logged in, each with a room of its own, all in the shared rooms;
/// returns once the read side knows every room, so streams follow them.
async fn setup(http: &reqwest::Client, dep: &Scaled, users: usize) -> anyhow::Result<Users> {
    let (c, r) = (&dep.command_api.base, &dep.read_api.base);
    eprintln!("setting up: {users} users, a room each, {SHARED_ROOMS} shared rooms ...");
    let run = uuid::Uuid::new_v4().simple().to_string();
    // Four at a time: every login costs the command API an argon2 hash
    // (19 MiB), and its memory is what this benchmark watches.
    let names: Vec<String> = (0..users)
        .map(|i| format!("soak{}_{i}", &run[..8]))
        .collect();
    let tokens: Vec<String> = futures::stream::iter(&names)
        .map(|name| register(http, c, name))
        .buffered(4)
        .try_collect()
        .await?;
    let mut shared = Vec::new();
    for i in 0..SHARED_ROOMS {
        shared.push(create_room(http, c, &tokens[0], &format!("soak shared {i}")).await?);
    }
    let mut own = Vec::new();
    for (u, token) in tokens.iter().enumerate() {
        own.push(create_room(http, c, token, &format!("soak room {u}")).await?);
        for room in shared.iter().filter(|_| u > 0) {
            join_room(http, c, token, room).await?;
        }
    }
    for (token, room) in tokens.iter().zip(&own) {
        wait_for_room(http, r, token, room).await?;
    }
    for room in &shared {
        wait_for_room(http, r, &tokens[users - 1], room).await?;
    }
    // The read API's stream hub starts with its first stream: started here,
    // as it would be in a read API in service, it is not part of the run.
    drop(open_stream(http, r, &tokens[0]).await?);
    Ok(Users {
        names,
        tokens: std::sync::RwLock::new(tokens),
        own,
        shared,
    })
}

/// Send number `n`: its user in turn, into the user's own room, or one round
/// in four into a shared room.
async fn send(http: reqwest::Client, base: String, users: Arc<Users>, n: u64, rec: Arc<Recorder>) {
    let count = users.count() as u64;
    let (user, round) = ((n % count) as usize, n / count);
    let room = if round % 4 == 3 {
        &users.shared[(user + round as usize) % SHARED_ROOMS]
    } else {
        &users.own[user]
    };
    let began = Instant::now();
    let answer = http
        .put(format!(
            "{base}/v1/rooms/{room}/messages/{}",
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(users.token(user))
        .json(&json!({"body": format!("soak message {n}")}))
        .timeout(SEND_TIMEOUT)
        .send()
        .await;
    match answer {
        Ok(a) if a.status().as_u16() == 201 => {
            let _ = a.bytes().await;
            rec.with(|w| w.tally.record(began, true));
        }
        Ok(a) => rec.error(refused("send", a).await),
        Err(e) => rec.error(format!("send: {}", transport(&e))),
    }
}

/// An error answer as a kind of error: its status and the start of the
/// problem's detail.
async fn refused(what: &str, answer: reqwest::Response) -> String {
    let status = answer.status().as_u16();
    let problem: serde_json::Value = answer.json().await.unwrap_or_default();
    match problem["detail"].as_str() {
        Some(detail) => format!("{what}: HTTP {status} ({:.50})", detail),
        None => format!("{what}: HTTP {status}"),
    }
}

fn transport(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect failed"
    } else {
        "transport error"
    }
}

/// One SSE client: connects as `token`'s user, stays 5 to 30 s counting
/// frames, leaves and connects again, until told to stop.
async fn sse_client(
    http: reqwest::Client,
    read_api: String,
    (users, user): (Arc<Users>, usize),
    mut stop: watch::Receiver<bool>,
    rec: Arc<Recorder>,
) {
    while !*stop.borrow() {
        let stay = Duration::from_secs(rand::thread_rng().gen_range(5..=30));
        let answer = http
            .get(format!("{read_api}/v1/stream"))
            .bearer_auth(users.token(user))
            .send()
            .await;
        let response = match answer {
            Ok(a) if a.status().is_success() => a,
            failed => {
                rec.error(match failed {
                    Ok(a) => refused("SSE connect", a).await,
                    Err(e) => format!("SSE connect: {}", transport(&e)),
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        rec.with(|w| w.sse_connects += 1);
        let mut frames = SseFrames::new(response);
        let leave = tokio::time::sleep(stay);
        tokio::pin!(leave);
        loop {
            tokio::select! {
                frame = frames.next_data() => match frame {
                    Some(_) => rec.with(|w| w.sse_frames += 1),
                    None => {
                        rec.error("SSE: stream ended before its client left".into());
                        break;
                    }
                },
                _ = &mut leave => break,
                _ = stop.changed() => break,
            }
        }
    }
}

fn sample(rec: &Recorder, processes: &[(String, &Server)]) -> Sample {
    Sample {
        at: rec.start.elapsed(),
        rss: processes.iter().map(|(_, s)| s.rss_kib()).collect(),
    }
}

/// One report line (after the header, first): window `i`, labelled by its end
/// (`*`: it reaches past the end of sending, so it is partial), with every
/// process's RSS now.
fn print_window(rec: &Recorder, i: usize, processes: &[(String, &Server)], run: Duration) {
    if i == 0 {
        let names: Vec<&str> = processes.iter().map(|(name, _)| name.as_str()).collect();
        let header = "     at   sends errors   p50 ms   p99 ms   max ms  SSE +   frames  lag ms";
        println!("{header} | RSS MiB: {}", names.join(" "));
    }
    let windows = rec.windows.lock().unwrap();
    let empty = Window::default();
    let w = windows.get(i).unwrap_or(&empty);
    let ms = |micros: u64| micros as f64 / 1e3;
    let hist = &w.tally.hist;
    let end = rec.window.as_secs() * (i as u64 + 1);
    let tail = if end > run.as_secs() { "*" } else { "" };
    let at = format!("{}:{:02}{tail}", end / 60, end % 60);
    print!(
        "{at:>7} {:>7} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>8} {:>7}",
        hist.len(),
        w.tally.errors,
        ms(hist.value_at_quantile(0.50)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max()),
        w.sse_connects,
        w.sse_frames,
        w.lag.as_millis()
    );
    drop(windows);
    for (name, server) in processes {
        let mib = server.rss_kib().map_or(f64::NAN, |k| k as f64 / 1024.0);
        print!(" {mib:>width$.1}", width = name.len());
    }
    println!();
}

/// RSS flat: per process, the sample that ends the warm-up against the
/// largest after it; prints the table.
fn rss_verdict(samples: &[Sample], names: &[String], warmup: Duration) -> Verdict {
    let mib =
        |kib: Option<u64>| kib.map_or("n/a".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let base = samples.iter().position(|s| s.at >= warmup);
    println!(
        "  RSS (MiB)         {:>12} {:>12} {:>12} {:>12} {:>8}   ({} samples, every sample in --report-csv)",
        "start", "warm-up end", "max after", "end", "growth", samples.len()
    );
    let mut worst: Option<(f64, &str)> = None;
    for (p, name) in names.iter().enumerate() {
        let at = |s: &Sample| s.rss[p];
        let (end_of_warmup, max_after) = match base {
            Some(b) => (
                at(&samples[b]),
                samples[b + 1..].iter().filter_map(at).max(),
            ),
            None => (None, None),
        };
        let growth = match (end_of_warmup, max_after) {
            (Some(from), Some(to)) if from > 0 => Some(to as f64 / from as f64 - 1.0),
            _ => None,
        };
        if let Some(g) = growth {
            if worst.is_none_or(|(w, _)| g > w) {
                worst = Some((g, name));
            }
        }
        println!(
            "    {name:<16}{:>12} {:>12} {:>12} {:>12} {:>8}",
            mib(samples.first().and_then(at)),
            mib(end_of_warmup),
            mib(max_after),
            mib(samples.last().and_then(at)),
            growth.map_or("n/a".to_string(), |g| format!("{:+.1}%", g * 100.0))
        );
    }
    match worst {
        None => (None, "no RSS sample after the warm-up".to_string()),
        Some((g, name)) => (
            Some(g < RSS_GROWTH_LIMIT),
            format!(
                "largest growth after the warm-up {:+.1}% ({name}), limit {:.0}%",
                g * 100.0,
                RSS_GROWTH_LIMIT * 100.0
            ),
        ),
    }
}

/// p99 stable: the full windows after the warm-up, each against their median.
fn p99_verdict(windows: &[Window], window: Duration, run: Duration, warmup: Duration) -> Verdict {
    let mut p99s: Vec<u64> = (0..windows.len())
        .filter(|&i| window * i as u32 >= warmup && window * (i as u32 + 1) <= run)
        .map(|i| windows[i].tally.hist.value_at_quantile(0.99))
        .collect();
    if p99s.len() < 2 {
        let detail = format!("{} full window(s) after the warm-up, needs 2", p99s.len());
        return (None, detail);
    }
    p99s.sort_unstable();
    // The lower median: of two windows, the better one.
    let (median, max) = (p99s[(p99s.len() - 1) / 2], p99s[p99s.len() - 1]);
    let limit = (2 * median).max(median + 10_000);
    let detail = format!(
        "{} windows after the warm-up: p99 median {:.2} ms, max {:.2} ms, limit {:.2} ms",
        p99s.len(),
        median as f64 / 1e3,
        max as f64 / 1e3,
        limit as f64 / 1e3
    );
    (Some(max <= limit), detail)
}

fn write_csv(path: &std::path::Path, names: &[String], samples: &[Sample]) -> anyhow::Result<()> {
    use std::io::Write;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let columns: Vec<String> = names.iter().map(|n| format!("{n}_rss_kib")).collect();
    writeln!(out, "seconds,{}", columns.join(","))?;
    for s in samples {
        let values: Vec<String> = s
            .rss
            .iter()
            .map(|v| v.map_or(String::new(), |k| k.to_string()))
            .collect();
        writeln!(out, "{:.1},{}", s.at.as_secs_f64(), values.join(","))?;
    }
    out.flush()?;
    Ok(())
}
