//! A slow read-model database (issue 23, item 7): a table the history model
//! writes is locked while clients send. The member waits on its batch with
//! bounded memory, the lag it reports grows (so `ParleyProjectionLagGrowing`'s
//! expression holds), and once the lock goes it catches up with nothing lost.

use std::time::{Duration, Instant};

use super::support::Deployment;
use super::{
    metrics_text, pad_log, rss_kib, senders, until_all_projected, Load, PADDING_MIB, SERIAL,
};

/// How long the table stays locked.
const LOCKED: Duration = Duration::from_secs(15);

/// The history model's lag over every partition, from a scrape of `base`.
async fn history_lag(http: &reqwest::Client, base: &str) -> f64 {
    let text = metrics_text(http, base).await;
    text.lines()
        .filter(|l| l.starts_with("parley_projection_lag{") && l.contains("projection=\"history\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_read_model_table_holds_the_member_back_in_bounded_memory_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(dep) = Deployment::new().await else {
        return;
    };
    let commands = dep.service(&["command-api", "--migrate"]).await;
    let _relay = dep.relay().await;
    let args = [
        "projector",
        "--feed",
        "kafka",
        "--session-timeout-ms",
        "6000",
    ];
    // librdkafka's fetch queue (64 MiB by default) bounds what a member
    // holds; a small one here, so the padding below exceeds the bound.
    let mut member = dep.spawn_with(
        &args,
        &[("PARLEY_KAFKA_OPTIONS", "queued.max.messages.kbytes=8192")],
    );
    member.until_ready(&args, Duration::from_secs(60)).await;
    let member_base = member.base.clone().unwrap();
    let pid = member.child.id().expect("the member runs");
    let command_base = commands.base.clone().unwrap();
    let clients = senders(&command_base, 2).await;
    let http = reqwest::Client::new();
    let load = Load::start(clients);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = rss_kib(pid);

    // Someone holds a lock on the history model's table.
    let read = sqlx::PgPool::connect(&dep.read_url).await.unwrap();
    let mut lock = read.begin().await.unwrap();
    sqlx::query("LOCK TABLE history_messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let locked = Instant::now();
    let log_url = dep.log_url.clone();
    let padding = tokio::spawn(async move { pad_log(&log_url, PADDING_MIB).await });
    let mut rss_max = rss_before;
    let mut lags = Vec::new();
    // Locked for LOCKED at least, and until all the padding is logged.
    while locked.elapsed() < LOCKED || !padding.is_finished() {
        rss_max = rss_max.max(rss_kib(pid));
        lags.push(history_lag(&http, &member_base).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    padding.await.unwrap();
    rss_max = rss_max.max(rss_kib(pid));
    lock.rollback().await.unwrap();
    let sent = load.finish().await;
    assert!(sent.succeeded() > 0);

    // The lag the member reported grew while the table was locked (the
    // metric is sampled every few seconds: compare the ends).
    let (early, late) = (lags[2], *lags.last().unwrap());
    assert!(
        late > early && late > 0.0,
        "the history lag did not grow while its table was locked: {lags:?}"
    );
    // What the member holds is bounded: its fetch queue (8 MiB here) and one
    // batch, not the 64 MiB the topic got meanwhile.
    assert!(
        rss_max < rss_before + 40 * 1024,
        "the member grew from {rss_before} KiB to {rss_max} KiB"
    );
    let log = sqlx::PgPool::connect(&dep.log_url).await.unwrap();
    let missing = until_all_projected(&log, &dep.read_url, Duration::from_secs(60)).await;
    assert!(missing.is_empty(), "missing after the lock: {missing:?}");
    let exited = member.child.try_wait().expect("member status");
    assert!(exited.is_none(), "the member exited: {exited:?}");
}
