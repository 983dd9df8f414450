//! Exports on real logs (Postgres and SQLite): round trips, filters, resume,
//! upcasting, redaction and unknown event types.

mod support;

use parley_export::{ExportOptions, Filter};
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_hundred_thousand_events_round_trip_through_parquet_and_json_lines() {
    let (log, url) = pg_log().await;
    seed(&log, 100_000).await;
    let expected = expected(&log, false).await;
    assert_eq!(expected.len(), 100_000);
    let dir = tempfile::tempdir().unwrap();

    for name in ["events.parquet", "events.jsonl"] {
        let path = dir.path().join(name);
        let summary = export(
            &url,
            &path,
            Filter::default(),
            ExportOptions::default(),
            false,
        )
        .await
        .unwrap();
        assert_eq!(summary.events, 100_000, "{name}");
        assert_eq!(
            summary.bytes,
            std::fs::metadata(&path).unwrap().len(),
            "{name}"
        );
        assert_eq!(summary.redacted, 10_000, "{name}");
        // The v1 messages, and the v1 registrations (v2 dropped the hash).
        assert_eq!(summary.upcast, 20_000, "{name}");
        assert_eq!(summary.unknown, 0);
        assert!(!summary.partial);
        let got = read_export(&path);
        assert_eq!(got.len(), expected.len(), "{name}: count");
        assert!(
            got.windows(2).all(|w| w[0].position < w[1].position),
            "{name}: position order"
        );
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "{name}: event at position {}", e.position);
        }
    }
}

#[tokio::test]
async fn exports_redact_password_hashes_and_upcast_unless_the_stored_shape_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (log, url) = sqlite_log(dir.path()).await;
    seed(&log, 20).await;
    for (stored_shape, file) in [(false, "today.jsonl"), (true, "stored.jsonl")] {
        let path = dir.path().join(file);
        let options = ExportOptions {
            stored_shape,
            ..ExportOptions::default()
        };
        export(&url, &path, Filter::default(), options, false)
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("argon2"),
            "a password hash leaked into {file}"
        );
        let events = read_jsonl(&path);
        let registered: Vec<_> = events
            .iter()
            .filter(|e| e.event_type == "UserRegistered")
            .collect();
        assert_eq!(registered.len(), 2);
        for e in registered {
            assert_eq!(e.payload["password_hash"], json!(null));
            assert!(e.payload["username"].is_string());
        }
        // Events 7 and 17 were stored as MessageSent v1.
        let old: Vec<_> = events
            .iter()
            .filter(|e| {
                e.payload["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("an old"))
            })
            .collect();
        assert_eq!(old.len(), 2);
        for e in old {
            if stored_shape {
                assert_eq!(e.event_version, 1);
                assert!(e.payload.get("format").is_none());
            } else {
                assert_eq!(e.event_version, 2);
                assert_eq!(e.payload["format"], json!("plain"));
            }
        }
    }
}

async fn check_filters(url: &str, log: &parley_event_log::SharedLog, dir: &std::path::Path) {
    let all = expected(log, false).await;
    let mid = all[all.len() / 2].clone();
    let filters = [
        Filter {
            types: vec!["MessageSent".into()],
            ..Filter::default()
        },
        Filter {
            types: vec!["UserRegistered".into(), "ReactionAdded".into()],
            ..Filter::default()
        },
        Filter {
            aggregate_type: Some("room".into()),
            ..Filter::default()
        },
        Filter {
            aggregate_id: Some(mid.aggregate_id),
            ..Filter::default()
        },
        Filter {
            since: Some(t0() + chrono::Duration::minutes(1)),
            until: Some(t0() + chrono::Duration::minutes(3)),
            ..Filter::default()
        },
        Filter {
            from_position: Some(mid.position),
            to_position: Some(mid.position + 99),
            ..Filter::default()
        },
        Filter {
            types: vec!["MessageSent".into()],
            aggregate_type: Some("message".into()),
            since: Some(t0() + chrono::Duration::minutes(2)),
            from_position: Some(100),
            ..Filter::default()
        },
    ];
    for (n, filter) in filters.into_iter().enumerate() {
        let want: Vec<_> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
        assert!(!want.is_empty(), "filter {n} selects something");
        assert!(want.len() < all.len(), "filter {n} leaves something out");
        for ext in ["jsonl", "parquet"] {
            let path = dir.join(format!("filter{n}.{ext}"));
            let summary = export(url, &path, filter.clone(), ExportOptions::default(), false)
                .await
                .unwrap();
            assert_eq!(summary.events as usize, want.len(), "filter {n} {ext}");
            assert_eq!(read_export(&path), want, "filter {n} {ext}");
        }
    }
}

#[tokio::test]
async fn filters_select_the_same_events_on_postgres() {
    let (log, url) = pg_log().await;
    seed(&log, 2_000).await;
    check_filters(&url, &log, tempfile::tempdir().unwrap().path()).await;
}

#[tokio::test]
async fn filters_select_the_same_events_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (log, url) = sqlite_log(dir.path()).await;
    seed(&log, 2_000).await;
    check_filters(&url, &log, dir.path()).await;
}

async fn check_resume(url: &str, dir: &std::path::Path) {
    let filter = Filter {
        types: vec!["MessageSent".into(), "UserRegistered".into()],
        ..Filter::default()
    };
    // JSON Lines: cut short, crash mid-line, resume: the same bytes as one run.
    let whole = dir.join("whole.jsonl");
    export(url, &whole, filter.clone(), ExportOptions::default(), false)
        .await
        .unwrap();
    let resumed = dir.join("resumed.jsonl");
    let first = export(
        url,
        &resumed,
        filter.clone(),
        ExportOptions {
            limit: Some(1_234),
            ..ExportOptions::default()
        },
        false,
    )
    .await
    .unwrap();
    assert!(first.partial);
    assert_eq!(first.events, 1_234);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&resumed)
            .unwrap();
        f.write_all(b"{\"event_id\":\"0190").unwrap(); // the crash
    }
    let rest = export(
        url,
        &resumed,
        filter.clone(),
        ExportOptions::default(),
        true,
    )
    .await
    .unwrap();
    assert!(!rest.partial);
    let whole_bytes = std::fs::read(&whole).unwrap();
    assert_eq!(first.events + rest.events, read_jsonl(&whole).len() as u64);
    assert!(
        std::fs::read(&resumed).unwrap() == whole_bytes,
        "a resumed JSON Lines export differs from an uninterrupted one"
    );
    // Resuming a finished file adds nothing.
    let again = export(
        url,
        &resumed,
        filter.clone(),
        ExportOptions::default(),
        true,
    )
    .await
    .unwrap();
    assert_eq!(again.events, 0);
    assert_eq!(std::fs::read(&resumed).unwrap(), whole_bytes);

    // Parquet: the rest goes into a second part from one past "covered up to".
    let whole = dir.join("whole.parquet");
    export(url, &whole, filter.clone(), ExportOptions::default(), false)
        .await
        .unwrap();
    let part1 = dir.join("part-1.parquet");
    let first = export(
        url,
        &part1,
        filter.clone(),
        ExportOptions {
            limit: Some(777),
            ..ExportOptions::default()
        },
        false,
    )
    .await
    .unwrap();
    let err = export(url, &part1, filter.clone(), ExportOptions::default(), true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--from-position"), "{err}");
    let part2 = dir.join("part-2.parquet");
    let rest_filter = Filter {
        from_position: Some(first.covered_to + 1),
        ..filter
    };
    export(url, &part2, rest_filter, ExportOptions::default(), false)
        .await
        .unwrap();
    let mut combined = read_parquet(&part1);
    assert_eq!(combined.len(), 777);
    combined.extend(read_parquet(&part2));
    assert_eq!(combined, read_parquet(&whole));
}

#[tokio::test]
async fn an_interrupted_export_resumed_equals_an_uninterrupted_one_on_postgres() {
    let (log, url) = pg_log().await;
    seed(&log, 5_000).await;
    check_resume(&url, tempfile::tempdir().unwrap().path()).await;
}

#[tokio::test]
async fn an_interrupted_export_resumed_equals_an_uninterrupted_one_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (log, url) = sqlite_log(dir.path()).await;
    seed(&log, 5_000).await;
    check_resume(&url, dir.path()).await;
}

#[tokio::test]
async fn unknown_event_types_are_exported_as_stored_with_a_warning() {
    let (log, url) = pg_log().await;
    seed(&log, 10).await;
    append_raw(&log, "RoomExploded", 1, json!({"room_id": "x", "why": "?"})).await;
    append_raw(&log, "MessageSent", 9, json!({"from": "the future"})).await;
    append_raw(&log, "MessageSent", 1, json!("not even an object")).await;
    for n in 0..2 {
        append_raw(&log, "MemberLeft", 1, json!({"n": n})).await;
    }
    let dir = tempfile::tempdir().unwrap();
    for ext in ["jsonl", "parquet"] {
        let path = dir.path().join(format!("all.{ext}"));
        let summary = export(
            &url,
            &path,
            Filter::default(),
            ExportOptions::default(),
            false,
        )
        .await
        .unwrap();
        assert_eq!(summary.events, 15);
        assert_eq!(summary.unknown, 2, "{ext}");
        let events = read_export(&path);
        let exploded = events
            .iter()
            .find(|e| e.event_type == "RoomExploded")
            .unwrap();
        assert_eq!(exploded.payload, json!({"room_id": "x", "why": "?"}));
        let future = events.iter().find(|e| e.event_version == 9).unwrap();
        assert_eq!(future.payload, json!({"from": "the future"}));
        // A known type with a payload that is no object is passed on untouched.
        assert!(events
            .iter()
            .any(|e| e.payload == json!("not even an object")));
    }
}

#[tokio::test]
async fn bad_arguments_are_refused_with_the_argument_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, url) = sqlite_log(dir.path()).await;
    let out = dir.path().join("x.jsonl");
    let t = t0();
    let err = export(
        &url,
        &out,
        Filter {
            since: Some(t),
            until: Some(t),
            ..Filter::default()
        },
        ExportOptions::default(),
        false,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--since"), "{err}");
    let err = export(
        &url,
        &dir.path().join("x.csv"),
        Filter::default(),
        ExportOptions::default(),
        false,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--format"), "{err}");
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let err = export(
        &missing,
        &out,
        Filter::default(),
        ExportOptions::default(),
        false,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nope.db"), "{err}");
    assert!(
        !dir.path().join("nope.db").exists(),
        "an export created a log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_during_slow_writes_misses_no_position_below_where_it_stopped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (log, url) = pg_log().await;
    seed(&log, 100).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    // Writers whose transactions take their position, then sleep before commit:
    // a reader that trusted MAX(position) would step over their rows.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6u64 {
        let (pool, stop) = (pool.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(
                    "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                        event_type, event_version, recorded_at, metadata, payload)
                     VALUES ($1, 'room', $2, 1, 'MemberLeft', 1, now(), '{}', '{}')",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(uuid::Uuid::now_v7())
                .execute(&mut *tx)
                .await
                .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5 + (n * 7 + w * 13) % 40))
                    .await;
                tx.commit().await.unwrap();
                n += 1;
            }
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut exports = Vec::new();
    for round in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let path = dir.path().join(format!("during-{round}.jsonl"));
        let summary = export(
            &url,
            &path,
            Filter::default(),
            ExportOptions::default(),
            false,
        )
        .await
        .unwrap();
        exports.push((path, summary.covered_to));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let everything = expected(&log, false).await;
    for (path, covered_to) in exports {
        let want: Vec<i64> = everything
            .iter()
            .map(|e| e.position)
            .filter(|p| *p <= covered_to)
            .collect();
        let got: Vec<i64> = read_jsonl(&path).iter().map(|e| e.position).collect();
        assert!(covered_to > 100);
        assert_eq!(
            got, want,
            "an export up to {covered_to} missed a committed event"
        );
    }
}
