"""Read inferq's events stream with your own consumer group, the way an external event system
would, and print one line per CloudEvent.

    python examples/consume_events.py --redis-url redis://localhost:6379/0 [--group my-app] [--max-events N]

Each entry holds one CloudEvents 1.0 JSON document in field `event` (see docs/events.md). Entries
are acknowledged after they are handled: if this process dies, the next run gets the rest.
"""

from __future__ import annotations

import argparse
import json
import os

import redis

STREAM_SUFFIX = ":stream:events"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", default=os.environ.get("INFERQ_REDIS_URL", "redis://localhost:6379/0"))
    ap.add_argument("--prefix", default=os.environ.get("INFERQ_KEY_PREFIX", "inferq"))
    ap.add_argument("--group", default="example-consumer")
    ap.add_argument("--consumer", default="example-1")
    ap.add_argument("--max-events", type=int, default=0, help="stop after this many (0: run until interrupted)")
    ap.add_argument("--from-start", action="store_true", help="a new group reads the stream's history too")
    args = ap.parse_args()
    r = redis.Redis.from_url(args.redis_url)
    stream = args.prefix + STREAM_SUFFIX
    try:
        r.xgroup_create(stream, args.group, id="0" if args.from_start else "$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    seen = 0
    while not args.max_events or seen < args.max_events:
        # our own pending entries first (a previous run died holding them), then new ones
        for start in ("0", ">"):
            reply = r.xreadgroup(
                args.group, args.consumer, {stream: start}, count=100, block=None if start == "0" else 5000
            )
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    if not fields:
                        continue
                    event = json.loads(fields[b"event"])
                    handle(event)
                    r.xack(stream, args.group, entry_id)
                    seen += 1
                    if args.max_events and seen >= args.max_events:
                        return


def handle(event: dict) -> None:
    """Replace with your own: forward to Kafka, a queue, a database..."""
    print(
        json.dumps(
            {
                "type": event["type"],
                "id": event["id"],
                "subject": event["subject"],
                "status": event["data"].get("status"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
