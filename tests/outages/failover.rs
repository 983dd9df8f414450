//! Failover to a promoted standby (issue 23, item 4): the event log's primary
//! killed under load, its synchronous standby promoted, and the services
//! moved to it the way a virtual IP would move them ([`Proxy`]).

use std::time::{Duration, Instant};

use parley_event_log::testing::PrivateCluster;

use super::proxy::Proxy;
use super::support::Deployment;
use super::{
    all_alive, create_database, log_holds_each_acknowledged_send_once, senders,
    until_all_projected, until_status, write_side_and_projectors, Load, SERIAL,
};

/// Makes `primary` wait for the standby named `standby` before a commit
/// returns (synchronous replication): an acknowledged send is then on both.
async fn replicate_synchronously(primary: &PrivateCluster) {
    let admin = sqlx::PgPool::connect(&primary.url("postgres"))
        .await
        .unwrap();
    sqlx::query("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sync: Option<String> = sqlx::query_scalar(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
        )
        .fetch_optional(&admin)
        .await
        .unwrap();
        if sync.as_deref() == Some("sync") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never became synchronous"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_to_a_promoted_standby_loses_no_acknowledged_send() {
    let _serial = SERIAL.lock().await;
    let primary = PrivateCluster::start();
    create_database(&primary, "parley").await;
    let standby = PrivateCluster::standby_of(&primary);
    replicate_synchronously(&primary).await;
    let proxy = Proxy::start(primary.port).await;
    let log_url = format!("postgres://postgres@127.0.0.1:{}/parley", proxy.port);
    let read_url = parley_event_log::testing::fresh_database().await.unwrap();
    let log_fed_url = parley_event_log::testing::fresh_database().await.unwrap();
    let Some(dep) = Deployment::on(log_url.clone(), read_url.clone()) else {
        return;
    };

    let (mut commands, mut relay, mut member, mut log_fed) =
        write_side_and_projectors(&dep, &log_fed_url).await;
    let command_base = commands.base.clone().unwrap();
    let clients = senders(&command_base, 4).await;
    let http = reqwest::Client::new();

    let load = Load::start(clients);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = load.phase();
    assert!(before.succeeded() > 0, "{:?}", before.statuses);

    // The primary dies; the standby is promoted and takes its address.
    primary.ctl_stop();
    standby.promote();
    proxy.switch(standby.port);
    until_status(
        &http,
        &format!("{command_base}/health/ready"),
        "",
        200,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = load.finish().await;
    assert!(
        after.succeeded() > 0,
        "no send succeeded on the new primary"
    );
    for phase in [&before, &after] {
        assert_eq!(phase.count(500), 0, "{:?}", phase.statuses);
        assert_eq!(phase.unavailable_without_retry_after, 0);
    }
    all_alive(&mut [
        ("command-api", &mut commands),
        ("relay", &mut relay),
        ("projector --feed kafka", &mut member),
        ("projector --feed log", &mut log_fed),
    ]);

    // Every acknowledged send is on the new primary, once.
    let log = sqlx::PgPool::connect(&standby.url("parley")).await.unwrap();
    log_holds_each_acknowledged_send_once(&log, &[&before, &after]).await;
    for (feed, url) in [("kafka", &read_url), ("log", &log_fed_url)] {
        let missing = until_all_projected(&log, url, Duration::from_secs(60)).await;
        assert!(missing.is_empty(), "fed by {feed}, missing: {missing:?}");
    }
}
