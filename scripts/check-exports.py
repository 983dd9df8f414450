#!/usr/bin/env python3
"""Check `parley events export` the way an analyst reads it: with DuckDB.

    python3 scripts/check-exports.py --parley target/debug/parley [--events 100000]

Writes a SQLite event log of its own (the schema of
event-log/migrations/sqlite) with a generated history: registrations (with a
password hash), rooms, joins, messages in today's MessageSent v2 and the old v1,
reactions. Exports it with the parley binary to Parquet and to JSON Lines, reads
both back with DuckDB, and checks:

- the same count as the log, in position order, in both files;
- every field equal between the two files and equal to what was stored
  (metadata flattened in Parquet, payload JSON text), recorded_at as UTC;
- registrations stored as UserRegistered v1 read as v2, without the password
  hash, and MessageSent v1 rows read as v2 with format "plain" (both as v1
  with --stored-shape, the hash null);
- messages per room per hour are the same computed from either file.

Installs the `duckdb` package from PyPI when it is missing. Exits 1 on the first
failed check; prints one JSON summary line on success.
"""
import argparse
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid

try:
    import duckdb
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "duckdb"])
    import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIGRATION = os.path.join(ROOT, "event-log", "migrations", "sqlite", "0001_event_log.sql")
T0 = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.timezone.utc)


def fail(message):
    print(f"check-exports: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def uid(n, kind):
    return str(uuid.UUID(int=(0x01900000000070000000000000000000 | (kind << 64) | n)))


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate(i):
    """Event i of the history: (aggregate_type, aggregate_id, type, version, payload, at)."""
    at = T0 + dt.timedelta(seconds=7 * i, microseconds=i % 1000)
    room, user, when = uid(i % 20, 2), uid(i % 50, 1), rfc3339(at)
    k = i % 10
    if k == 0:
        return ("user", uid(i, 1), "UserRegistered", 1,
                {"user_id": uid(i, 1), "username": f"user{i}", "display_name": f"User {i}",
                 "password_hash": f"$argon2id$v=19$secret-{i}", "registered_at": when}, at)
    if k == 1:
        return ("room", uid(i, 2), "RoomCreated", 1,
                {"room_id": uid(i, 2), "name": f"room {i}", "topic": None,
                 "visibility": "public", "creator_id": user, "created_at": when}, at)
    if k == 2:
        return ("room", uid(i, 2), "MemberJoined", 1,
                {"room_id": room, "user_id": user, "role": "member", "at": when}, at)
    if k == 7:
        return ("message", uid(i, 3), "MessageSent", 1,
                {"message_id": uid(i, 3), "room_id": room, "sender_id": user,
                 "body": f"an old message, number {i}", "reply_to": None, "sent_at": when}, at)
    if k == 8:
        return ("message", uid(i, 3), "ReactionAdded", 1,
                {"message_id": uid(i - 1, 3), "room_id": room, "user_id": user,
                 "emoji": "\U0001F44D", "at": when}, at)
    return ("message", uid(i, 3), "MessageSent", 2,
            {"message_id": uid(i, 3), "room_id": room, "sender_id": user,
             "body": f"message {i}: h\u00e9llo w\u00f6rld", "reply_to": None,
             "sent_at": when, "format": "plain"}, at)


def write_log(path, n):
    db = sqlite3.connect(path)
    with open(MIGRATION) as f:
        db.executescript(f.read())
    rows = []
    for i in range(n):
        aggregate_type, aggregate_id, event_type, version, payload, at = generate(i)
        metadata = {"correlation_id": f"corr-{i // 100}"}
        if i % 2 == 0:
            metadata["actor_id"] = uid(i, 9)
        if i % 3 == 0:
            metadata["traceparent"] = f"00-{i + 1:032x}-{i + 1:016x}-01"
        rows.append((str(uuid.uuid4()), aggregate_type, aggregate_id, 1, event_type, version,
                     rfc3339(at), json.dumps(metadata), json.dumps(payload)))
    db.executemany(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type,"
        " event_version, recorded_at, metadata, payload) VALUES (?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def export(parley, url, out, *extra):
    result = subprocess.run([parley, "events", "export", "--database-url", url, "--out", out,
                             "--quiet", *extra], capture_output=True, text=True)
    check(result.returncode == 0, f"parley events export {out}: {result.stderr}")
    return result.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parley", default=os.path.join(ROOT, "target", "debug", "parley"),
                    help="the parley binary (default: target/debug/parley)")
    ap.add_argument("--events", type=int, default=100_000)
    args = ap.parse_args()
    check(os.access(args.parley, os.X_OK), f"{args.parley} is not an executable (cargo build first)")

    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log.db")
        write_log(log, args.events)
        url = f"sqlite://{log}"
        pq, jl = os.path.join(tmp, "events.parquet"), os.path.join(tmp, "events.jsonl")
        stored = os.path.join(tmp, "stored.jsonl")
        export(args.parley, url, pq)
        export(args.parley, url, jl)
        export(args.parley, url, stored, "--stored-shape")

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        # The log as stored, read with sqlite3 (DuckDB's sqlite extension would be a download).
        db = sqlite3.connect(log)
        source = db.execute("SELECT position, event_id, event_type, event_version, aggregate_type,"
                            " aggregate_id, sequence, recorded_at, metadata, payload"
                            " FROM events ORDER BY position").fetchall()

        p_rows = con.execute(
            f"SELECT position, event_id, event_type, event_version, aggregate_type, aggregate_id,"
            f" sequence, epoch_us(recorded_at), actor_id, correlation_id, causation_id, idempotency_key,"
            f" traceparent, request_id, payload, room_id, sender_id, user_id, message_id, body_length"
            f" FROM read_parquet('{pq}')").fetchall()
        j_rows = con.execute(
            f"SELECT position, event_id, event_type, event_version, aggregate_type, aggregate_id,"
            f" sequence, epoch_us(recorded_at), metadata, payload"
            f" FROM read_json('{jl}', format = 'newline_delimited', columns = {{"
            f"position: 'BIGINT', event_id: 'VARCHAR', event_type: 'VARCHAR',"
            f" event_version: 'INTEGER', aggregate_type: 'VARCHAR', aggregate_id: 'VARCHAR',"
            f" sequence: 'BIGINT', recorded_at: 'TIMESTAMPTZ', metadata: 'JSON', payload: 'JSON'}})"
        ).fetchall()
        s_rows = con.execute(
            f"SELECT event_version, payload FROM read_json('{stored}', format = 'newline_delimited',"
            f" columns = {{event_version: 'INTEGER', payload: 'JSON'}})").fetchall()

        check(len(p_rows) == len(source), f"parquet has {len(p_rows)} rows, the log {len(source)}")
        check(len(j_rows) == len(source), f"jsonl has {len(j_rows)} rows, the log {len(source)}")
        check(len(s_rows) == len(source), f"stored-shape jsonl has {len(s_rows)} rows")
        upcast = redacted = 0
        for n, (src, p, j, s) in enumerate(zip(source, p_rows, j_rows, s_rows)):
            position, event_id, event_type, version, agg_type, agg_id, seq, recorded, meta, payload = src
            meta, payload = json.loads(meta), json.loads(payload)
            want = dict(payload)
            want_version = version
            if event_type == "UserRegistered" and version == 1:
                # v2 has no password hash: today's shape drops it (and the
                # stored shape nulls it, below).
                want.pop("password_hash", None)
                want_version = 2
                redacted += 1
                upcast += 1
            if event_type == "MessageSent" and version == 1:
                want["format"] = "plain"
                want_version = 2
                upcast += 1
            recorded = dt.datetime.fromisoformat(recorded.replace("Z", "+00:00"))
            recorded = (recorded - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
            envelope = (position, event_id, event_type, want_version, agg_type, agg_id, seq, recorded)
            check(tuple(p[:8]) == envelope, f"row {n}: parquet {p[:8]} != log {envelope}")
            check(tuple(j[:8]) == envelope, f"row {n}: jsonl {j[:8]} != log {envelope}")
            flat = tuple(meta.get(k) for k in ("actor_id", "correlation_id", "causation_id",
                                              "idempotency_key", "traceparent", "request_id"))
            check(tuple(p[8:14]) == flat, f"row {n}: parquet metadata {p[8:14]} != {flat}")
            check(json.loads(j[8]) == meta, f"row {n}: jsonl metadata differs")
            check(json.loads(p[14]) == want, f"row {n}: parquet payload {p[14]} != {want}")
            check(json.loads(j[9]) == want, f"row {n}: jsonl payload {j[9]} != {want}")
            typed = (want.get("room_id"), want.get("sender_id"), want.get("user_id"),
                     want.get("message_id"), len(want["body"]) if "body" in want else None)
            check(tuple(p[15:20]) == typed, f"row {n}: typed columns {p[15:20]} != {typed}")
            stored_payload = dict(payload)
            if event_type == "UserRegistered":
                stored_payload["password_hash"] = None
            check(s[0] == version and json.loads(s[1]) == stored_payload,
                  f"row {n}: --stored-shape gave v{s[0]} {s[1]}")
        check(redacted > 0 and upcast > 0, "the history has registrations and v1 messages")

        per_hour = ("SELECT room_id, epoch(date_trunc('hour', recorded_at))::BIGINT AS hour,"
                    " count(*) AS messages"
                    " FROM {src} WHERE event_type = 'MessageSent' GROUP BY ALL ORDER BY ALL")
        from_parquet = con.execute(per_hour.format(src=f"read_parquet('{pq}')")).fetchall()
        from_jsonl = con.execute(per_hour.format(
            src=f"(SELECT event_type, recorded_at, payload->>'room_id' AS room_id FROM read_json("
                f"'{jl}', format = 'newline_delimited', columns = {{event_type: 'VARCHAR',"
                f" recorded_at: 'TIMESTAMPTZ', payload: 'JSON'}}))")).fetchall()
        check(from_parquet == from_jsonl and len(from_parquet) > 0,
              "messages per room per hour differ between the Parquet and JSON Lines exports")
        print(json.dumps({"events": len(source), "redacted": redacted, "upcast": upcast,
                          "room_hours": len(from_parquet), "ok": True}))


if __name__ == "__main__":
    main()
