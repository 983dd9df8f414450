//! Whether a deployment's read models equal its log: a fresh log-fed projector
//! replays the log into a fresh read database, and every read-model table must
//! then hold the same rows on both sides (as `tests/scaled`'s
//! `models_equal_a_rebuild` checks it for the tests).

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::commands::{Server, TempDb};
use super::scaled::Scaled;

/// The check gives up once neither side changed for this long.
const SETTLED: Duration = Duration::from_secs(30);

/// What the read models hold against the log.
pub struct Models {
    equal: bool,
    tables: usize,
    rows: i64,
    differing: Vec<String>,
    /// MessageSent events in the log.
    logged: i64,
    /// Messages in the history model.
    history: i64,
    dead_letters: i64,
}

/// Replays `dep`'s log into a fresh database on `admin_url` and compares it
/// with `dep`'s read models, once both have settled.
pub async fn models_against_a_replay(
    dep: &Scaled,
    admin_url: &str,
    db_pool_size: u32,
) -> anyhow::Result<Models> {
    let fresh = TempDb::create(admin_url).await?;
    let env = [
        ("PARLEY_DATABASE_URL", dep.log_db.url.clone()),
        ("PARLEY_READ_DATABASE_URL", fresh.url.clone()),
        ("PARLEY_DB_POOL_SIZE", db_pool_size.to_string()),
    ];
    let compared = match Server::spawn(&["projector", "--feed", "log"], &env).await {
        Ok(replay) => {
            let compared = settle(&dep.read_db.url, &fresh.url).await;
            replay.stop().await;
            compared
        }
        Err(e) => Err(e),
    };
    fresh.drop_now().await?;
    let (live, replayed) = compared?;
    let differing = live
        .iter()
        .filter(|t| !replayed.contains(t))
        .map(|(table, rows, _)| format!("{table} ({rows} rows live)"))
        .chain(
            replayed
                .iter()
                .filter(|t| !live.contains(t))
                .map(|(table, rows, _)| format!("{table} ({rows} rows replayed)")),
        )
        .collect();
    let count = |url: &str, sql: &str| {
        let (url, sql) = (url.to_string(), sql.to_string());
        async move {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await?;
            conn.close().await?;
            anyhow::Ok(n)
        }
    };
    let read = &dep.read_db.url;
    Ok(Models {
        equal: live == replayed,
        tables: live.len(),
        rows: live.iter().map(|(_, rows, _)| rows).sum(),
        differing,
        logged: count(
            &dep.log_db.url,
            "SELECT COUNT(*) FROM events WHERE event_type = 'MessageSent'",
        )
        .await?,
        history: count(read, "SELECT COUNT(*) FROM history_messages").await?,
        dead_letters: count(read, "SELECT COUNT(*) FROM projection_dead_letters").await?,
    })
}

impl Models {
    /// Prints what was compared; whether the models equal the log: every table
    /// equals the replay, history holds every MessageSent of the log, the log
    /// every send `answered` 201, and nothing was parked.
    pub fn print(&self, answered: u64) -> bool {
        let equal = if self.equal { "equal" } else { "DIFFER from" };
        println!(
            "  models            {} read-model tables ({} rows) {equal} a replay of the log",
            self.tables, self.rows
        );
        for table in &self.differing {
            println!("    differs: {table}");
        }
        println!(
            "  messages          {} MessageSent in the log, {} in history, {answered} sends answered 201",
            self.logged, self.history
        );
        println!("  dead letters      {}", self.dead_letters);
        self.equal
            && self.history == self.logged
            && self.logged == answered as i64
            && self.dead_letters == 0
    }
}

/// A table's name, row count and a digest of its rows.
type Digest = (String, i64, String);

/// Polls both databases until their models are equal or neither changed for
/// [`SETTLED`]: the live models catch up with the last sends, the replay with
/// the whole log.
async fn settle(live: &str, replay: &str) -> anyhow::Result<(Vec<Digest>, Vec<Digest>)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut last, mut still_since) = (None, Instant::now());
    loop {
        let both = (digests(live).await?, digests(replay).await?);
        if both.0 == both.1 || Instant::now() > deadline {
            return Ok(both);
        }
        if last.as_ref() != Some(&both) {
            (last, still_since) = (Some(both), Instant::now());
        } else if still_since.elapsed() > SETTLED {
            return Ok(both);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every read-model table (not the runtime's bookkeeping: checkpoints,
/// offsets, held events, dead letters, members), with its rows as an
/// order-free digest, a sum of row hashes, so large tables compare in the
/// server without being fetched.
async fn digests(url: &str) -> anyhow::Result<Vec<Digest>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name NOT LIKE 'projection\\_%'
           AND table_name NOT LIKE 'projector\\_%' AND table_name NOT LIKE '\\_sqlx%'
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let (rows, digest): (i64, String) = sqlx::query_as(&format!(
            "SELECT COUNT(*), COALESCE(SUM(hashtextextended(row_to_json(t)::text, 0)), 0)::text
             FROM {table} t"
        ))
        .fetch_one(&mut conn)
        .await?;
        out.push((table, rows, digest));
    }
    conn.close().await?;
    Ok(out)
}
