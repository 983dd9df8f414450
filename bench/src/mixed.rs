//! `parley-bench mixed`: reads while people write, a chat backend's normal
//! state. The scaled mode on Postgres (command API, log-fed projector, read
//! API: separate processes), a seeded chat, readers asking as fast as they are
//! answered and senders at a fixed rate; figures for both, the read API's
//! cache hit rate and each process's CPU share, and pgbench running the same
//! page query on the same database as the anchor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use super::commands::Tally;
use super::cpu::CpuSample;
use super::scaled::{Scaled, Topology};
use super::seed::{access_tokens, seed_spread, Spread};
use crate::args::{BenchMixedArgs, MixedReads};

pub async fn mixed(args: BenchMixedArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.seconds == 0 {
        bail!("--connections and --seconds must be at least 1");
    }
    let dep = Scaled::start(Topology {
        db_pool_size: Some(args.db_pool_size),
        page_cache_mb: Some(args.page_cache_mb),
        ..Topology::log_fed(&args.server.admin_url)
    })
    .await?;
    let outcome = run(&args, &dep).await;
    dep.stop().await?;
    outcome
}

async fn run(args: &BenchMixedArgs, dep: &Scaled) -> anyhow::Result<()> {
    let log = parley_event_log::open(&dep.log_db.url, 4).await?;
    eprintln!(
        "seeding {} users, {} rooms ({} per user), {} messages per room ...",
        args.users, args.rooms, args.rooms_per_user, args.messages_per_room
    );
    let chat = Arc::new(
        seed_spread(
            &log,
            args.users,
            args.rooms,
            args.rooms_per_user,
            args.messages_per_room,
        )
        .await?,
    );
    drop(log);
    let tokens: Arc<Vec<String>> = Arc::new(access_tokens(&chat.users)?);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 2 + 64)
        .tcp_nodelay(true)
        .build()?;
    let read = dep.read_api.base.clone();
    wait_until_projected(&http, &read, &chat, &tokens).await?;

    let anchor = match args.pgbench_seconds {
        0 => None,
        s => Some(pgbench_anchor(&dep.read_db.url, &chat, args.page, args.connections, s).await?),
    };

    eprintln!(
        "running: {} readers ({:?}) and {} sends/s for {} s (+{} s warm-up) ...",
        args.connections, args.reads, args.rate, args.seconds, args.warmup
    );
    let measure_from = Instant::now() + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut readers = Vec::new();
    for _ in 0..args.connections {
        let (http, chat, tokens, read) = (http.clone(), chat.clone(), tokens.clone(), read.clone());
        let (reads, page) = (args.reads, args.page);
        readers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < end {
                let (url, token) = {
                    let mut rng = rand::thread_rng();
                    match reads {
                        MixedReads::History => {
                            let r = rng.gen_range(0..chat.rooms.len());
                            let member = chat.members[r][rng.gen_range(0..chat.members[r].len())];
                            (
                                format!("{read}/v1/rooms/{}/messages?limit={page}", chat.rooms[r]),
                                &tokens[member],
                            )
                        }
                        MixedReads::Rooms => (
                            format!("{read}/v1/rooms"),
                            &tokens[rng.gen_range(0..tokens.len())],
                        ),
                    }
                };
                let sent = Instant::now();
                let ok = match http.get(url).bearer_auth(token).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if sent >= measure_from {
                    tally.record(sent, ok);
                }
            }
            tally
        }));
    }
    let sends = Arc::new(Mutex::new(Tally::default()));
    let sender = (args.rate > 0).then(|| {
        let (http, chat, tokens, sends) =
            (http.clone(), chat.clone(), tokens.clone(), sends.clone());
        let (command, rate) = (dep.command_api.base.clone(), args.rate);
        tokio::spawn(send_paced(
            http,
            command,
            chat,
            tokens,
            rate,
            measure_from,
            end,
            sends,
        ))
    });

    let processes: Vec<(String, Option<u32>)> = dep
        .processes()
        .into_iter()
        .map(|(name, server)| (name, server.pid()))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let (cpu_before, cache_before) = (
        CpuSample::take(&processes),
        cache_lookups(&http, &read).await,
    );
    tokio::time::sleep_until(end.into()).await;
    let (cpu_after, cache_after) = (
        CpuSample::take(&processes),
        cache_lookups(&http, &read).await,
    );
    let reads = Tally::gather(readers).await?;
    if let Some(sender) = sender {
        sender.await?;
    }
    let sends = std::mem::take(&mut *sends.lock().expect("sends lock"));

    println!("parley-bench mixed");
    println!("  target            command API, log-fed projector, read API: processes on Postgres");
    println!(
        "  chat              {} users, {} rooms, {} rooms per user, {} messages per room before the run",
        args.users, args.rooms, args.rooms_per_user, args.messages_per_room
    );
    println!(
        "  page cache        {}",
        match args.page_cache_mb {
            0 => "off".to_string(),
            mb => format!("{mb} MiB"),
        }
    );
    if let Some((tps, query)) = &anchor {
        println!(
            "  pgbench anchor    {tps:.0} queries/s ({} clients, prepared): {query}",
            args.connections
        );
    }
    match args.reads {
        MixedReads::History => println!(
            "reads: the {} newest messages of a random room, as a random member, {} connections",
            args.page, args.connections
        ),
        MixedReads::Rooms => println!(
            "reads: GET /v1/rooms as a random user, {} connections",
            args.connections
        ),
    }
    reads.print(args.seconds, args.warmup, ("answers", ""), "answers");
    if let Some((tps, _)) = &anchor {
        println!(
            "  against pgbench   {:.2}x",
            reads.hist.len() as f64 / args.seconds as f64 / tps
        );
    }
    for (page, (hits, misses)) in cache_after.diff(&cache_before) {
        let all = hits + misses;
        if all > 0 {
            println!(
                "  cache ({page:<7})   {:.1}% hits ({hits} of {all})",
                hits as f64 * 100.0 / all as f64
            );
        }
    }
    println!(
        "sends: {} per second, paced, to random rooms as a random member",
        args.rate
    );
    sends.print(
        args.seconds,
        args.warmup,
        ("sends", " (201 Created)"),
        "sends",
    );
    println!("cpu (share of one core over the measured seconds; 2 cores = 200%)");
    for (name, share) in cpu_before.shares(&cpu_after, args.seconds as f64) {
        println!("  {name:<18}{share:.0}%");
    }
    Ok(())
}

/// Sends `rate` messages per second until `end`, each as a random member of a
/// random room; the ones started from `measure_from` are tallied.
#[allow(clippy::too_many_arguments)]
async fn send_paced(
    http: reqwest::Client,
    command: String,
    chat: Arc<Spread>,
    tokens: Arc<Vec<String>>,
    rate: u64,
    measure_from: Instant,
    end: Instant,
    sends: Arc<Mutex<Tally>>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    while Instant::now() < end {
        ticker.tick().await;
        let (room, member) = {
            let mut rng = rand::thread_rng();
            let r = rng.gen_range(0..chat.rooms.len());
            (
                chat.rooms[r],
                chat.members[r][rng.gen_range(0..chat.members[r].len())],
            )
        };
        let (http, command, tokens, sends) =
            (http.clone(), command.clone(), tokens.clone(), sends.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = http
                .put(format!(
                    "{command}/v1/rooms/{room}/messages/{}",
                    Uuid::now_v7()
                ))
                .bearer_auth(&tokens[member])
                .json(&json!({"body": "a message while others read"}))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 201);
            if sent >= measure_from {
                sends.lock().expect("sends lock").record(sent, ok);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Waits until the read API shows the seeded chat: the last message of the
/// last room in its history and in a member's room list.
pub(crate) async fn wait_until_projected(
    http: &reqwest::Client,
    read: &str,
    chat: &Spread,
    tokens: &[String],
) -> anyhow::Result<()> {
    let r = chat.rooms.len() - 1;
    let (room, member) = (chat.rooms[r], chat.members[r][0]);
    let Some(last) = chat.last_message[r] else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let get = |path: String| async move {
            let answer = http.get(path).bearer_auth(&tokens[member]).send().await?;
            anyhow::Ok(answer.json::<serde_json::Value>().await.unwrap_or_default())
        };
        let history = get(format!("{read}/v1/rooms/{room}/messages?limit=1")).await?;
        let list = get(format!("{read}/v1/rooms")).await?;
        let last = last.to_string();
        let in_history = history["messages"][0]["message_id"] == last.as_str();
        let in_list = list["rooms"].as_array().is_some_and(|rooms| {
            rooms
                .iter()
                .any(|x| x["last_message"]["message_id"] == last.as_str())
        });
        if in_history && in_list {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the seeded chat was not projected within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// pgbench running the read API's newest-page query (with its membership
/// check) on the read database, one script per room (up to 100) so that each
/// asks for a real room as a real member. Queries per second, and the query.
async fn pgbench_anchor(
    read_url: &str,
    chat: &Spread,
    page: i64,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(f64, String)> {
    let dir = std::env::temp_dir().join(format!("parley-pgbench-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let template = format!(
        "SELECT message_id, room_id, position, sender_id, body, reply_to, sent_at, edited_at, redacted, reaction_count \
         FROM history_messages WHERE room_id = '{{room}}' \
         AND EXISTS (SELECT 1 FROM room_members WHERE room_id = '{{room}}' AND user_id = '{{user}}') \
         ORDER BY position DESC LIMIT {}",
        page + 1
    );
    let mut command = tokio::process::Command::new("pgbench");
    command.args([
        "-n",
        "-M",
        "prepared",
        "-c",
        &clients.to_string(),
        "-j",
        "2",
        "-T",
        &seconds.to_string(),
    ]);
    for (r, room) in chat.rooms.iter().enumerate().take(100) {
        let user = chat.users[chat.members[r][0]];
        let script = dir.join(format!("room{r}.sql"));
        let sql = template
            .replace("{room}", &room.to_string())
            .replace("{user}", &user.to_string());
        std::fs::write(&script, format!("{sql};\n"))?;
        command.arg("-f").arg(&script);
    }
    command.arg(read_url);
    eprintln!("pgbench: the page query, {clients} clients, {seconds} s ...");
    let output = command.output().await.context("running pgbench")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    Ok((
        tps,
        template
            .replace("{room}", "<room>")
            .replace("{user}", "<member>"),
    ))
}

/// The read API's cache lookups so far, per page kind: (hits, misses).
struct CacheLookups(Vec<(String, (u64, u64))>);

impl CacheLookups {
    fn diff(&self, before: &CacheLookups) -> Vec<(String, (u64, u64))> {
        self.0
            .iter()
            .map(|(page, (h, m))| {
                let (h0, m0) = before
                    .0
                    .iter()
                    .find(|(p, _)| p == page)
                    .map_or((0, 0), |(_, x)| *x);
                (page.clone(), (h - h0.min(*h), m - m0.min(*m)))
            })
            .collect()
    }
}

/// Reads `parley_read_cache_lookups_total{page, result}` off `/metrics`.
async fn cache_lookups(http: &reqwest::Client, read: &str) -> CacheLookups {
    let text = match http.get(format!("{read}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut found: Vec<(String, (u64, u64))> = Vec::new();
    for line in text.lines() {
        let Some(labels) = line.strip_prefix("parley_read_cache_lookups_total{") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.split('"').next())
                .map(str::to_string)
        };
        let (Some(page), Some(result)) = (label("page"), label("result")) else {
            continue;
        };
        let count = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let at = match found.iter().position(|(p, _)| *p == page) {
            Some(at) => at,
            None => {
                found.push((page, (0, 0)));
                found.len() - 1
            }
        };
        match result.as_str() {
            "hit" => found[at].1 .0 += count,
            _ => found[at].1 .1 += count,
        }
    }
    CacheLookups(found)
}
