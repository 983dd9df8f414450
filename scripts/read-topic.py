#!/usr/bin/env python3
"""Read Parley's event topic the way an analyst would: with a plain Kafka client
(confluent-kafka), from the beginning, and check what arrives.

    scripts/read-topic.py --brokers 127.0.0.1:9092 --topic parley.events [--out events.jsonl]

Every message must be a Parley event envelope (JSON with event_id, event_type,
event_version, aggregate_type, aggregate_id, sequence, position, recorded_at,
metadata, payload) keyed by its aggregate id. The relay publishes at least once,
so an event can appear twice; per aggregate, the sequences seen after dropping
repeats must run 1, 2, 3, ... in offset order. Prints a JSON summary on stdout
and exits 1 if any check fails. `--out` writes each event once, as JSON lines.
"""
import argparse
import json
import sys

from confluent_kafka import Consumer, KafkaError, TopicPartition

FIELDS = ("event_id", "event_type", "event_version", "aggregate_type", "aggregate_id",
          "sequence", "position", "recorded_at", "metadata", "payload")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="parley.events")
    ap.add_argument("--out", help="write each event once to this JSON-lines file")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for the end of every partition")
    args = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "parley-analyst-check",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    metadata = consumer.list_topics(args.topic, timeout=10)
    topic = metadata.topics.get(args.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        print(json.dumps({"error": f"topic {args.topic} not found"}))
        return 1
    partitions = sorted(topic.partitions)
    # Assign, not subscribe: read everything from offset 0, no group rebalance.
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])

    problems = []
    last_seq = {}        # aggregate id -> last sequence seen (repeats dropped)
    seen_ids = set()
    messages = duplicates = 0
    at_end = set()
    out = open(args.out, "w") if args.out else None
    import time
    deadline = time.monotonic() + args.timeout
    while len(at_end) < len(partitions) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                continue
            problems.append(f"kafka error: {msg.error()}")
            break
        at_end.discard(msg.partition())
        messages += 1
        try:
            event = json.loads(msg.value())
        except ValueError as e:
            problems.append(f"partition {msg.partition()} offset {msg.offset()}: not JSON: {e}")
            continue
        missing = [f for f in FIELDS if f not in event]
        if missing:
            problems.append(f"offset {msg.offset()}: missing {missing}")
            continue
        agg = event["aggregate_id"]
        if (msg.key() or b"").decode() != agg:
            problems.append(f"offset {msg.offset()}: key {msg.key()!r} is not the aggregate id {agg}")
        seq = event["sequence"]
        prev = last_seq.get(agg, 0)
        if seq <= prev:
            duplicates += 1          # at least once: a repeat of something already seen
            continue
        if seq != prev + 1:
            problems.append(f"aggregate {agg}: sequence {seq} after {prev}")
        last_seq[agg] = seq
        seen_ids.add(event["event_id"])
        if out:
            out.write(json.dumps(event) + "\n")
    consumer.close()
    if out:
        out.close()
    if len(at_end) < len(partitions):
        problems.append(f"did not reach the end of every partition in {args.timeout} s")
    print(json.dumps({
        "topic": args.topic,
        "partitions": len(partitions),
        "messages": messages,
        "events": len(seen_ids),
        "duplicates": duplicates,
        "aggregates": len(last_seq),
        "problems": problems[:20],
    }))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
