//! Read-side benchmarks: `parley-bench rebuild` and `parley-bench queries`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use parley_http_kit::{default_token_keys, SigningKey};
use parley_projections::{LogFeed, ReadStore};
use rand::Rng;

use super::commands::{mib, Server, Tally, TempDb, BENCH_SECRET};
use super::seed::{seed, Seeded};
use crate::args::{BenchQueriesArgs, BenchRebuildArgs};

/// A seeded Postgres event log and an empty read store beside it.
struct Fixture {
    log_db: TempDb,
    read_db: TempDb,
    log: parley_event_log::SharedLog,
    store: ReadStore,
    seeded: Seeded,
}

impl Fixture {
    async fn new(admin_url: &str, events: u64, users: usize, rooms: usize) -> anyhow::Result<Self> {
        let log_db = TempDb::create(admin_url).await?;
        let read_db = TempDb::create(admin_url).await?;
        let log = parley_event_log::open(&log_db.url, 8).await?;
        let store = ReadStore::open(&read_db.url, 8).await?;
        eprintln!("seeding {events} events ({users} users, {rooms} rooms) ...");
        let started = Instant::now();
        let seeded = seed(&log, events, users, rooms).await?;
        eprintln!(
            "seeded {} events in {:.1} s; vacuuming the log, as autovacuum has a log in service ...",
            seeded.events,
            started.elapsed().as_secs_f64()
        );
        log_db.vacuum_log().await?;
        Ok(Self {
            log_db,
            read_db,
            log,
            store,
            seeded,
        })
    }

    async fn rebuild(
        &self,
        name: &str,
    ) -> anyhow::Result<parley_projections::rebuild::RebuildReport> {
        parley_projections::rebuild::rebuild(
            &self.store,
            Arc::new(LogFeed::new(self.log.clone())),
            name,
            |_, _| {},
        )
        .await
    }

    async fn drop_now(self) -> anyhow::Result<()> {
        drop(self.store);
        drop(self.log);
        self.log_db.drop_now().await?;
        self.read_db.drop_now().await
    }
}

pub async fn rebuild(args: BenchRebuildArgs) -> anyhow::Result<()> {
    let fixture = Fixture::new(&args.server.admin_url, args.events, 64, 100).await?;
    eprintln!("rebuilding {} ...", args.projection);
    let report = fixture.rebuild(&args.projection).await?;
    println!("parley-bench rebuild");
    println!("  projection        {}", report.projection);
    println!(
        "  events in the log {} (vacuumed before the rebuild)",
        fixture.seeded.events
    );
    println!("  events read       {}", report.events);
    println!("  elapsed           {:.2} s", report.elapsed.as_secs_f64());
    println!(
        "  rate              {:.0} events/s",
        report.events_per_sec()
    );
    for (table, rows) in
        parley_projections::rebuild::row_counts(&fixture.store, &args.projection).await?
    {
        println!("  {table:<18}{rows} rows");
    }
    fixture.drop_now().await
}

pub async fn queries(args: BenchQueriesArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.seconds == 0 {
        bail!("--connections and --seconds must be at least 1");
    }
    let fixture = Fixture::new(&args.server.admin_url, args.events, 64, args.rooms).await?;
    let projected = ["history", "rooms", "users"];
    for name in projected {
        let report = fixture.rebuild(name).await?;
        eprintln!("projected {name}: {:.0} events/s", report.events_per_sec());
    }
    // The read API is ready only once every model's tables exist; the pages
    // need just the three above, so the others get theirs, empty.
    for model in parley_projections::models::all() {
        if !projected.contains(&model.name()) {
            for statement in model.schema() {
                sqlx::raw_sql(&statement)
                    .execute(fixture.store.pool())
                    .await?;
            }
        }
    }
    let server = Server::spawn(
        &["read-api"],
        &[
            ("PARLEY_READ_DATABASE_URL", fixture.read_db.url.clone()),
            ("PARLEY_DB_POOL_SIZE", args.db_pool_size.to_string()),
            ("PARLEY_PAGE_CACHE_MB", args.page_cache_mb.to_string()),
        ],
    )
    .await?;
    let keys = default_token_keys(vec![
        SigningKey::new("k1", BENCH_SECRET.as_bytes()).map_err(anyhow::Error::msg)?
    ]);
    let tokens: Vec<String> = fixture
        .seeded
        .users
        .iter()
        .map(|u| keys.issue_access(*u).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<Result<_, _>>()?;
    let rooms = Arc::new(fixture.seeded.rooms.clone());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 2)
        .tcp_nodelay(true)
        .build()?;

    // One page first, to check the answer is what we think we are measuring.
    let probe = http
        .get(format!(
            "{}/v1/rooms/{}/messages?limit={}",
            server.base, rooms[0], args.page
        ))
        .bearer_auth(&tokens[0])
        .send()
        .await?;
    let status = probe.status();
    let body: serde_json::Value = probe.json().await?;
    let got = body["messages"].as_array().map_or(0, |m| m.len());
    if !status.is_success() || got != args.page as usize {
        bail!("probe page: {status}, {got} messages: {body}");
    }

    eprintln!(
        "running: {} connections for {} s (+{} s warm-up) ...",
        args.connections, args.seconds, args.warmup
    );
    let measure_from = Instant::now() + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for i in 0..args.connections {
        let (http, rooms, token, base, page) = (
            http.clone(),
            rooms.clone(),
            tokens[i % tokens.len()].clone(),
            server.base.clone(),
            args.page,
        );
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < end {
                let room = rooms[rand::thread_rng().gen_range(0..rooms.len())];
                let sent = Instant::now();
                let ok = match http
                    .get(format!("{base}/v1/rooms/{room}/messages?limit={page}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        ok && r.bytes().await.is_ok()
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
    println!("parley-bench queries");
    println!("  target            read-api child process on Postgres");
    println!(
        "  events in the log {} (vacuumed before the rebuild)",
        fixture.seeded.events
    );
    println!("  rooms             {}", args.rooms);
    println!("  connections       {}", args.connections);
    println!(
        "  page cache        {}",
        if args.page_cache_mb > 0 {
            format!(
                "{} MiB (no writes during the run: pages come from it)",
                args.page_cache_mb
            )
        } else {
            "off (every page from Postgres)".to_string()
        }
    );
    println!(
        "  page              {} newest messages of a random room",
        args.page
    );
    tally.print(args.seconds, args.warmup, ("pages", ""), "pages");
    println!("  server peak RSS   {}", mib(server.peak_rss_kib()));
    server.stop().await;
    fixture.drop_now().await
}
