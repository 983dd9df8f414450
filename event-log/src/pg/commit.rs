//! The group committer: appends from many concurrent commands gathered into
//! one transaction (one `INSERT ... SELECT FROM UNNEST` per table); a batch that
//! hits a conflict is re-run request by request, so one stale command never
//! fails others.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::announce;
use crate::error::classify;
use crate::{AppendRequest, AppendedEvent, LogError};

/// Requests gathered into one transaction at most.
pub(super) const MAX_BATCH: usize = 256;

/// An append waiting for the committer, and where its answer goes.
pub(super) struct Pending {
    pub(super) request: AppendRequest,
    pub(super) reply: oneshot::Sender<Result<Vec<AppendedEvent>, LogError>>,
}

/// Appends one request in a transaction of its own.
pub(super) async fn append_alone(
    pool: &PgPool,
    request: &AppendRequest,
) -> Result<Vec<AppendedEvent>, LogError> {
    let mut tx = pool.begin().await?;
    let mut out = insert_requests(&mut tx, &[request])
        .await
        .map_err(|e| classify(e, request))?;
    tx.commit().await.map_err(|e| classify(e, request))?;
    Ok(out.pop().unwrap_or_default())
}

/// The group committer: one transaction at a time, holding every request that
/// arrived while the one before was committing.
///
/// One, not several in parallel: at 1,000 sends/s three committers each took
/// the next request as it came, so transactions averaged 1.3 requests (7,793
/// for 10,004 events, `pg_stat_statements`) and the server spent its CPU on
/// commits. One committer averaged 2.5, cost the server an eighth less CPU,
/// and appends took about as long (measured with `parley-bench freshness`); under
/// heavy load its batches simply grow.
pub(super) async fn committer(
    pool: PgPool,
    mut rx: mpsc::Receiver<Pending>,
    appended: Arc<watch::Sender<u64>>,
    notifier: mpsc::Sender<()>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_batch(&pool, batch).await;
        appended.send_modify(|n| *n += 1);
        announce(&notifier);
    }
}

async fn commit_batch(pool: &PgPool, batch: Vec<Pending>) {
    if batch.len() > 1 && !overlaps(&batch) {
        let requests: Vec<&AppendRequest> = batch.iter().map(|p| &p.request).collect();
        let together = async {
            let mut tx = pool.begin().await?;
            let out = insert_requests(&mut tx, &requests).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(out)
        }
        .await;
        match together {
            Ok(results) => {
                for (pending, appended) in batch.into_iter().zip(results) {
                    let _ = pending.reply.send(Ok(appended));
                }
                return;
            }
            Err(err) if crate::database_unreachable(&err) => {
                // One by one would wait out the pool's acquire timeout once per
                // request while the database is away: every waiter hears now.
                tracing::warn!(error = %err, size = batch.len(), "group commit failed: the database does not answer");
                for pending in batch {
                    let _ = pending
                        .reply
                        .send(Err(LogError::Unavailable(err.to_string())));
                }
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, size = batch.len(), "group commit failed, retrying one by one");
            }
        }
    }
    for pending in batch {
        let result = append_alone(pool, &pending.request).await;
        let _ = pending.reply.send(result);
    }
}

/// Whether two requests of a batch touch the same stream or idempotency scope: such
/// a batch would fail as a whole, so it is committed request by request instead.
fn overlaps(batch: &[Pending]) -> bool {
    let mut streams = std::collections::HashSet::new();
    let mut scopes = std::collections::HashSet::new();
    for p in batch {
        for s in &p.request.streams {
            if !streams.insert(s.aggregate_id) {
                return true;
            }
        }
        if let Some(idem) = &p.request.idempotency {
            if !scopes.insert(idem.scope.as_str()) {
                return true;
            }
        }
    }
    false
}

/// Inserts the events (and idempotency records) of several requests with one
/// statement each, inside the caller's transaction. Returns, per request, where its
/// events landed, in the order of its streams and events.
async fn insert_requests(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
) -> Result<Vec<Vec<AppendedEvent>>, sqlx::Error> {
    let total: usize = requests.iter().map(|r| r.event_count()).sum();
    let mut event_ids = Vec::with_capacity(total);
    let mut aggregate_types = Vec::with_capacity(total);
    let mut aggregate_ids = Vec::with_capacity(total);
    let mut sequences = Vec::with_capacity(total);
    let mut event_types = Vec::with_capacity(total);
    let mut versions = Vec::with_capacity(total);
    let mut recorded = Vec::with_capacity(total);
    let mut metadata = Vec::with_capacity(total);
    let mut payloads = Vec::with_capacity(total);
    let mut keys: Vec<Option<String>> = Vec::with_capacity(total);
    for request in requests {
        let meta = serde_json::to_value(&request.metadata).unwrap_or_default();
        for stream in &request.streams {
            for (i, event) in stream.events.iter().enumerate() {
                event_ids.push(Uuid::now_v7());
                aggregate_types.push(stream.aggregate_type.clone());
                aggregate_ids.push(stream.aggregate_id);
                sequences.push(stream.expected_version + 1 + i as i64);
                event_types.push(event.event_type.clone());
                versions.push(event.event_version);
                recorded.push(request.recorded_at);
                metadata.push(meta.clone());
                payloads.push(event.payload.clone());
                keys.push(request.metadata.idempotency_key.clone());
            }
        }
    }

    let mut landed = std::collections::HashMap::with_capacity(total);
    if total > 0 {
        // `tx_id` is named, not left to its default: the subquery runs once per
        // statement, the default's function once per row.
        let rows = sqlx::query(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, recorded_at, metadata, payload, idempotency_key,
                                 tx_id)
             SELECT e.event_id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                    e.event_version, e.recorded_at, e.metadata, e.payload, e.idempotency_key,
                    (SELECT (pg_current_xact_id()::text::numeric + shift)::text::xid8
                       FROM log_clock)
             FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[],
                         $6::int[], $7::timestamptz[], $8::jsonb[], $9::jsonb[], $10::text[])
                  WITH ORDINALITY AS e(event_id, aggregate_type, aggregate_id, sequence, event_type,
                                       event_version, recorded_at, metadata, payload,
                                       idempotency_key, ord)
             ORDER BY e.ord
             RETURNING event_id, position, tx_id::text AS tx_text",
        )
        .bind(&event_ids)
        .bind(&aggregate_types)
        .bind(&aggregate_ids)
        .bind(&sequences)
        .bind(&event_types)
        .bind(&versions)
        .bind(&recorded)
        .bind(&metadata)
        .bind(&payloads)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let id: Uuid = row.try_get("event_id")?;
            let position: i64 = row.try_get("position")?;
            let tx_id: String = row.try_get("tx_text")?;
            landed.insert(id, (position, tx_id.parse::<i64>().unwrap_or(i64::MAX)));
        }
    }

    let mut results = Vec::with_capacity(requests.len());
    let mut idx = 0;
    for request in requests {
        let mut appended = Vec::with_capacity(request.event_count());
        for stream in &request.streams {
            for _ in &stream.events {
                let (position, tx_id) = landed[&event_ids[idx]];
                appended.push(AppendedEvent {
                    event_id: event_ids[idx],
                    aggregate_id: aggregate_ids[idx],
                    sequence: sequences[idx],
                    position,
                    tx_id,
                });
                idx += 1;
            }
        }
        results.push(appended);
    }

    let mut scopes = Vec::new();
    let mut fingerprints = Vec::new();
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    let mut appended_json = Vec::new();
    for (request, appended) in requests.iter().zip(&results) {
        if let Some(idem) = &request.idempotency {
            scopes.push(idem.scope.clone());
            fingerprints.push(idem.fingerprint.clone());
            statuses.push(idem.status as i16);
            bodies.push(idem.body.clone());
            appended_json.push(serde_json::to_value(appended).unwrap_or_default());
        }
    }
    if !scopes.is_empty() {
        sqlx::query(
            "INSERT INTO command_results (scope, fingerprint, status, body, appended)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::smallint[], $4::jsonb[], $5::jsonb[])",
        )
        .bind(&scopes)
        .bind(&fingerprints)
        .bind(&statuses)
        .bind(&bodies)
        .bind(&appended_json)
        .execute(&mut *conn)
        .await?;
    }
    Ok(results)
}
