//! `parley-bench freshness`: how long after a send's HTTP response the message
//! reaches an SSE stream and a history query (the scaled mode on Postgres: a
//! command API, a projector and a read API, each its own process).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use uuid::Uuid;

use super::commands::{create_room, print_latency, register, Server};
use super::scaled::{open_stream, wait_for_room, Scaled, SseFrames, Topology};
use crate::args::{BenchFreshnessArgs, Feed};
use parley_projections::models::history::encode_cursor;
use parley_read_api::stream::STREAMED_PROJECTIONS;

type Sent = Arc<Mutex<HashMap<Uuid, Instant>>>;

/// How often a history probe asks again.
const PROBE_EVERY: Duration = Duration::from_millis(2);

pub async fn freshness(args: BenchFreshnessArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let dep = Scaled::start(Topology {
        admin_url: &args.server.admin_url,
        read_admin_url: args.read_admin_url.as_deref(),
        feed: args.feed,
        kafka_brokers: &args.kafka_brokers,
        kafka_options: &args.kafka_options,
        partitions: None,
        projectors: 1,
        db_pool_size: None,
        page_cache_mb: None,
    })
    .await?;

    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let (c, r) = (dep.command_api.base.clone(), dep.read_api.base.clone());
    let username = format!("fresh{}", &Uuid::new_v4().simple().to_string()[..8]);
    let token = register(&http, &c, &username).await?;
    let room = create_room(&http, &c, &token, "freshness").await?;
    let room_token = room.clone();
    wait_for_room(&http, &r, &token, &room).await?;

    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    // Arrival times, matched with send times at the end: an event can reach the
    // stream before the sender has even read its HTTP response.
    let arrivals: Sent = Arc::new(Mutex::new(HashMap::new()));
    let stream = open_stream(&http, &r, &token).await?;
    let reader = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut frames = SseFrames::new(stream);
            while let Some(data) = frames.next_data().await {
                let arrived = Instant::now();
                let Ok(envelope) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                if envelope["event_type"] != "MessageSent" {
                    continue;
                }
                let Some(id) = envelope["payload"]["message_id"]
                    .as_str()
                    .and_then(|s| s.parse::<Uuid>().ok())
                else {
                    continue;
                };
                arrivals.lock().unwrap().entry(id).or_insert(arrived);
            }
        })
    };

    eprintln!(
        "running: {} sends/s for {} s (of which {} s warm-up, not timed) ...",
        args.rate,
        args.warmup + args.seconds,
        args.warmup
    );
    let history_hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let timed_from = Instant::now() + Duration::from_secs(args.warmup);
    let end = timed_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    let (mut n, mut warmup_sends) = (0u64, 0u64);
    while Instant::now() < end {
        ticker.tick().await;
        if Instant::now() < timed_from {
            warmup_sends += 1;
            let (http, c, token, room) =
                (http.clone(), c.clone(), token.clone(), room_token.clone());
            tasks.push(tokio::spawn(async move {
                let answer = http
                    .put(format!("{c}/v1/rooms/{room}/messages/{}", Uuid::now_v7()))
                    .bearer_auth(&token)
                    .json(&json!({"body": "warming up"}))
                    .send()
                    .await;
                matches!(answer, Ok(a) if a.status().as_u16() == 201)
            }));
            continue;
        }
        n += 1;
        let (http, c, r, token, room, sent, history_hist) = (
            http.clone(),
            c.clone(),
            r.clone(),
            token.clone(),
            room_token.clone(),
            sent.clone(),
            history_hist.clone(),
        );
        let probe_history = n % args.history_every == 0;
        tasks.push(tokio::spawn(async move {
            let id = Uuid::now_v7();
            let answer = http
                .put(format!("{c}/v1/rooms/{room}/messages/{id}"))
                .bearer_auth(&token)
                .json(&json!({"body": "how fresh is this?"}))
                .send()
                .await;
            let answered = Instant::now();
            let position = match answer {
                Ok(a) if a.status().as_u16() == 201 => {
                    sent.lock().unwrap().insert(id, answered);
                    let body: Value = a.json().await.unwrap_or_default();
                    body["positions"][0].as_i64()
                }
                _ => return false,
            };
            if let (true, Some(position)) = (probe_history, position) {
                // Poll the page that starts right where the send sits in the log
                // (no consistency token) until the message shows: one indexed row
                // per poll, however far behind the read model is.
                let after = encode_cursor(position - 1);
                let deadline = answered + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(page) = http
                        .get(format!(
                            "{r}/v1/rooms/{room}/messages?after={after}&limit=1"
                        ))
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        if let Ok(body) = page.json::<Value>().await {
                            let seen = body["messages"]
                                .as_array()
                                .is_some_and(|m| m.iter().any(|m| m["message_id"] == json!(id)));
                            if seen {
                                let micros = answered.elapsed().as_micros() as u64;
                                let _ = history_hist.lock().unwrap().record(micros.max(1));
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(PROBE_EVERY).await;
                }
            }
            true
        }));
    }
    // Warm-up sends come first in `tasks`.
    let (mut warmup_failed, mut failed) = (0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        if !t.await.unwrap_or(false) {
            if (i as u64) < warmup_sends {
                warmup_failed += 1;
            } else {
                failed += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let mut sse = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    {
        let (sent, arrivals) = (sent.lock().unwrap(), arrivals.lock().unwrap());
        let mut rows = Vec::new();
        for (id, answered) in sent.iter() {
            if let Some(arrived) = arrivals.get(id) {
                // Before the response was read counts as no delay at all.
                let micros = arrived.saturating_duration_since(*answered).as_micros() as u64;
                rows.push((*answered, micros));
                sse.record(micros.max(1))?;
            }
        }
        if let Some(path) = &args.latencies_csv {
            write_latencies(path, &mut rows)?;
        }
    }
    let history = history_hist.lock().unwrap().clone();
    println!("parley-bench freshness");
    match args.feed {
        Feed::Log => println!(
            "  setup             command-api, projector (tails the log), read-api: separate processes on Postgres"
        ),
        Feed::Kafka => {
            println!(
                "  setup             command-api, relay, Kafka ({}), projector (one group member), read-api --feed kafka: separate processes",
                args.kafka_brokers
            );
            for (k, v) in &args.kafka_options {
                println!("  kafka option      {k}={v}");
            }
        }
    }
    if args.warmup > 0 {
        println!(
            "  warm-up           {} s at the same rate, not timed: {} sends (failed {warmup_failed})",
            args.warmup, warmup_sends
        );
    }
    println!(
        "  offered rate      {} sends/s for {} s",
        args.rate, args.seconds
    );
    println!("  sends answered    {} (failed {failed})", n - failed);
    println!("  SSE arrivals      {} of {}", sse.len(), n - failed);
    println!("  send response -> SSE event:");
    print_latency(&sse);
    println!(
        "  send response -> visible in a history page ({} of {} probes, polling every {} ms):",
        history.len(),
        n / args.history_every,
        PROBE_EVERY.as_millis()
    );
    print_latency(&history);
    // The stages, as the services themselves measured them (Prometheus
    // histograms: the quantiles are bucket bounds).
    println!("  from the services' own histograms (event recorded -> ...):");
    print_stage(
        &http,
        &dep.command_api,
        "appended (append's own time)",
        "parley_append_duration_seconds",
        "",
    )
    .await;
    if let Some(relay) = &dep.relay {
        print_stage(
            &http,
            relay,
            "acknowledged by Kafka",
            "parley_relay_delay_seconds",
            "",
        )
        .await;
    }
    for projection in STREAMED_PROJECTIONS {
        print_stage(
            &http,
            &dep.projectors[0],
            &format!("committed to {projection}"),
            "parley_projection_delay_seconds",
            &format!("projection=\"{projection}\""),
        )
        .await;
    }
    dep.stop().await
}

/// One line of the stage summary: mean and bucket-bound quantiles of a delay
/// histogram scraped from `server`'s `/metrics`.
/// Writes `(answered, micros)` rows as `answered_ms,sse_ms`, in send order,
/// from the first timed send.
fn write_latencies(path: &std::path::Path, rows: &mut [(Instant, u64)]) -> anyhow::Result<()> {
    use std::io::Write;
    rows.sort_unstable();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    writeln!(out, "answered_ms,sse_ms")?;
    if let Some(&(first, _)) = rows.first() {
        for (answered, micros) in rows.iter() {
            let at = answered.duration_since(first).as_secs_f64() * 1e3;
            writeln!(out, "{at:.3},{:.3}", *micros as f64 / 1e3)?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn print_stage(
    http: &reqwest::Client,
    server: &Server,
    what: &str,
    metric: &str,
    label: &str,
) {
    let text = match http.get(format!("{}/metrics", server.base)).send().await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    match scraped_histogram(&text, metric, label) {
        Some(h) if h.count > 0.0 => println!(
            "    {what:<28} mean {:.2} ms, p50 <= {}, p99 <= {} ({} events)",
            h.sum / h.count * 1000.0,
            h.bound(0.50),
            h.bound(0.99),
            h.count
        ),
        _ => println!("    {what:<28} (not reported)"),
    }
}

/// A Prometheus histogram read back from the text format.
struct Scraped {
    /// (upper bound in seconds, cumulative count), ascending.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Scraped {
    /// The smallest bucket bound holding quantile `q`, in milliseconds.
    fn bound(&self, q: f64) -> String {
        let wanted = q * self.count;
        match self.buckets.iter().find(|(_, below)| *below >= wanted) {
            Some((le, _)) if le.is_finite() => format!("{} ms", (le * 1e6).round() / 1e3),
            _ => "+Inf".to_string(),
        }
    }
}

/// Finds `metric`'s series whose labels contain `label` (empty: any) in the
/// Prometheus text `text`.
fn scraped_histogram(text: &str, metric: &str, label: &str) -> Option<Scraped> {
    let mut scraped = Scraped {
        buckets: Vec::new(),
        sum: 0.0,
        count: 0.0,
    };
    let mut found = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if !labels.contains(label) {
            continue;
        }
        if name == format!("{metric}_bucket") {
            let le = labels
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .and_then(|le| le.parse::<f64>().ok())?;
            scraped.buckets.push((le, value));
        } else if name == format!("{metric}_sum") {
            scraped.sum = value;
            found = true;
        } else if name == format!("{metric}_count") {
            scraped.count = value;
        }
    }
    scraped.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    found.then_some(scraped)
}

#[cfg(test)]
mod tests {
    use super::scraped_histogram;

    #[test]
    fn reads_a_labelled_histogram_back_from_the_text_format() {
        let text = "# HELP d x\n\
            d_bucket{projection=\"rooms\",le=\"0.01\"} 9\n\
            d_bucket{projection=\"history\",le=\"0.01\"} 1\n\
            d_bucket{projection=\"history\",le=\"0.025\"} 98\n\
            d_bucket{projection=\"history\",le=\"+Inf\"} 100\n\
            d_sum{projection=\"history\"} 2\n\
            d_count{projection=\"history\"} 100\n";
        let h = scraped_histogram(text, "d", "projection=\"history\"").unwrap();
        assert_eq!(h.count, 100.0);
        assert_eq!(h.sum, 2.0);
        assert_eq!(h.bound(0.5), "25 ms");
        assert_eq!(h.bound(0.99), "+Inf");
        assert_eq!(h.bound(0.01), "10 ms");
        assert!(scraped_histogram(text, "missing", "").is_none());
    }
}
