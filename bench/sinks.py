"""`make bench-sinks`: how fast the event sinks keep up with the events stream, and whether they
hold the pipeline back.

Two stacks on this machine (ingest, one dispatcher, one dummy worker; each its own Redis), both up
for the whole run: one with no sinks (the baseline) and one with four sinks fed by its dispatcher:
HTTP structured, HTTP binary and HTTP batch (`batch_size` 500) to a CloudEvents receiver on
loopback (it parses every request with the CloudEvents SDK and records each event), and NATS
JetStream to a real `nats-server -js` (the sink creates the stream `INFERQ`). After a warm-up job
on each, every round submits the same `--requests` requests (as `--jobs` jobs) to the baseline
stack, then to the sinks stack, alternating, and waits on the sinks stack until every sink has
delivered every event before the next round. Measured per round:

  - the job's completion time, POST sent -> the last job's `ended_ms`, on both stacks;
  - the events stream's own rate: the round's events (one `request.completed` per request, one
    `job.completed` per job), first to last by their entry ids' millisecond timestamps;
  - per sink, from GET /v1/sinks polled every `--poll-s`: delivered events per second (from the
    first poll that shows the round's events being delivered to the first that shows all of
    them), catch-up (that last poll's time after the round's last event was written) and the
    largest `lag` seen; and the same rate and catch-up from the receiving end (the receiver's
    arrival times, JetStream's stored timestamps), which polling does not blur.

At the end every event of the stream must have reached every sink: the receiver's events per path
and the JetStream stream's messages (read back through a pull consumer) are compared with the
stream's CloudEvent ids; missing events fail the run. The receiver runs in this process, so its
CPU competes with the stack's on a small machine, as a real receiver on the same host would.
The median round is printed; every round goes to bench/results/<UTC date>-sinks.json.

    .venv/bin/python bench/sinks.py [--requests 20000] [--jobs 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferq.localstack import LocalStack  # noqa: E402
from shared.redis.keys import Keys  # noqa: E402
from tests.support.cloudevents_receiver import CloudEventsReceiver  # noqa: E402
from tests.support.nats_server import NatsServer  # noqa: E402

KEYS = Keys()
MODEL = "echo"
HTTP_SINKS = {"structured": "structured", "binary": "binary", "batch": "batch"}  # sink name -> mode
NATS_SINK = "nats"
SINKS = [*HTTP_SINKS, NATS_SINK]
NATS_STREAM = "INFERQ"
DONE = {b"completed", b"failed", b"cancelled", b"expired"}
WARMUP_REQUESTS = 500


def models_file(args: argparse.Namespace, receiver: CloudEventsReceiver | None, nats: NatsServer | None) -> str:
    text = f"""
[models.{MODEL}]
engine = "dummy"
max_inflight = {args.max_inflight}
[models.{MODEL}.options]
latency_ms = {args.latency_ms}
"""
    if receiver is not None:
        for name, mode in HTTP_SINKS.items():
            text += f"""
[sinks.{name}]
kind = "http"
url = "{receiver.url("/" + name)}"
mode = "{mode}"
allow_http = true
allow_private = true
"""
            if mode == "batch":
                text += f"batch_size = {args.batch_size}\n"
    if nats is not None:
        text += f"""
[sinks.{NATS_SINK}]
kind = "nats"
servers = ["{nats.url}"]
stream = "{NATS_STREAM}"
"""
    return text


def job_bodies(requests: int, jobs: int, round_no: int) -> list[bytes]:
    """The round's jobs, encoded before the clock starts."""
    sizes = [requests // jobs + (1 if i < requests % jobs else 0) for i in range(jobs)]
    bodies, n = [], 0
    for size in sizes:
        reqs = [{"model": MODEL, "prompt": f"round {round_no} prompt {n + i}", "max_tokens": 8} for i in range(size)]
        bodies.append(json.dumps({"requests": reqs}).encode())
        n += size
    return bodies


@dataclass
class Poller:
    """GET /v1/sinks every `interval` s in a thread: (wall ms, {sink: (delivered, lag)}) samples."""

    base_url: str
    interval: float
    samples: list[tuple[float, dict[str, tuple[int, int]]]] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    resp = client.get("/v1/sinks")
                    resp.raise_for_status()
                    at = time.time() * 1000
                    sample = {s["name"]: (s["delivered"], s["lag"]) for s in resp.json()["data"]}
                    with self._lock:
                        self.samples.append((at, sample))
                except httpx.HTTPError:
                    self.errors += 1
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def latest(self) -> tuple[float, dict[str, tuple[int, int]]] | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    def between(self, start_ms: float, end_ms: float) -> list[tuple[float, dict[str, tuple[int, int]]]]:
        with self._lock:
            return [s for s in self.samples if start_ms <= s[0] <= end_ms]

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


class Stack:
    """A running stack, its Redis client, its /v1/sinks poller, and the CPU of its processes."""

    def __init__(self, name: str, stack: LocalStack, poll_s: float, extra_pids: dict[str, int]) -> None:
        self.name, self.stack = name, stack
        self.r = redis.Redis.from_url(stack.redis_url)
        self.api = httpx.Client(base_url=stack.base_url, timeout=120)
        self.poller = Poller(stack.base_url, poll_s).start()
        self.pids = {n: p.pid for n, p in stack.procs.items()}
        if stack.redis is not None and stack.redis.proc is not None:
            self.pids["redis"] = stack.redis.proc.pid
        self.pids.update(extra_pids)
        self.last_event_id = b"0-0"

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        return out

    def entries_added(self) -> int:
        try:
            return int(self.r.xinfo_stream(KEYS.events_stream)["entries-added"])
        except redis.ResponseError:  # no events stream yet
            return 0

    def run_jobs(self, bodies: list[bytes], timeout: float) -> dict:
        """Submit the jobs, wait until each has ended; completion time POST sent -> last ended_ms."""
        cpu0 = self.cpu()
        sent_ms = time.time() * 1000
        job_ids = []
        for body in bodies:
            resp = self.api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
            resp.raise_for_status()
            job_ids.append(resp.json()["id"])
        accepted_ms = time.time() * 1000
        deadline = time.monotonic() + timeout
        pending = list(job_ids)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {len(pending)} jobs not done within {timeout:.0f} s")
            self.stack.check_alive()
            pipe = self.r.pipeline(transaction=False)
            for job_id in pending:
                pipe.hget(KEYS.job(job_id), "status")
            pending = [j for j, s in zip(pending, pipe.execute()) if s not in DONE]
            if pending:
                time.sleep(0.02)
        done_ms = time.time() * 1000
        statuses = [self.r.hget(KEYS.job(j), "status").decode() for j in job_ids]
        ended_ms = max(int(self.r.hget(KEYS.job(j), "ended_ms")) for j in job_ids)
        cpu1 = self.cpu()
        return {
            "job_ids": job_ids,
            "statuses": statuses,
            "sent_ms": sent_ms,
            "accepted_s": round((accepted_ms - sent_ms) / 1000, 3),
            "completion_s": round((ended_ms - sent_ms) / 1000, 3),
            "seen_done_ms": done_ms,
            "cpu_s_during_job": {n: round(cpu1[n] - cpu0[n], 2) for n in cpu0},
            "cpu_at_sent": cpu0,
        }

    def round_events(self) -> tuple[list[str], list[int]]:
        """The CloudEvent ids and entry-id milliseconds of the events added since the last call."""
        ids, millis = [], []
        start = b"(" + self.last_event_id
        while True:
            entries = self.r.xrange(KEYS.events_stream, min=start, count=5000)
            if not entries:
                break
            for entry_id, fields in entries:
                ids.append(json.loads(fields[b"event"])["id"])
                millis.append(int(entry_id.split(b"-")[0]))
            self.last_event_id = entries[-1][0]
            start = b"(" + self.last_event_id
        return ids, millis

    def wait_delivered(self, target: int, timeout: float) -> float | None:
        """Until every sink's `delivered` reaches `target` (as the poller saw it); the wall ms of
        that poll, or None when the stack has no sinks."""
        deadline = time.monotonic() + timeout
        while True:
            latest = self.poller.latest()
            if latest is not None and not latest[1]:
                return None
            if latest is not None and all(delivered >= target for delivered, _ in latest[1].values()):
                return latest[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"sinks not caught up within {timeout:.0f} s: {latest} of {target}")
            self.stack.check_alive()
            time.sleep(self.poller.interval / 2)

    def close(self) -> None:
        self.poller.stop()
        self.api.close()
        self.r.close()


def stream_rate(millis: list[int]) -> dict:
    span_s = (millis[-1] - millis[0]) / 1000
    return {
        "events": len(millis),
        "first_ms": millis[0],
        "last_ms": millis[-1],
        "span_s": round(span_s, 3),
        "events_per_s": round((len(millis) - 1) / span_s, 1) if span_s > 0 else None,
    }


def sink_figures(samples: list, name: str, before: int, total: int, last_event_ms: int) -> dict:
    """From the polls of one round: delivered/s between the first poll showing progress and the
    first showing all `total`, catch-up after the last event, and the largest lag."""
    first = done = None
    max_lag = 0
    for at, sample in samples:
        delivered, lag = sample[name]
        max_lag = max(max_lag, lag)
        if first is None and delivered > before:
            first = (at, delivered)
        if done is None and delivered >= total:
            done = (at, delivered)
    out: dict = {"max_lag": max_lag, "polls": len(samples)}
    if first is None or done is None:
        return {**out, "delivered_per_s": None, "catch_up_s": None}
    span_s = (done[0] - first[0]) / 1000
    out["delivered_per_s"] = round((total - first[1]) / span_s, 1) if span_s > 0 else None
    out["catch_up_s"] = round((done[0] - last_event_ms) / 1000, 3)
    return out


def arrival_figures(arrivals: dict[str, float], ids: list[str], last_event_ms: int) -> dict:
    """From the receiving end: the round's events' first to last arrival (wall ms)."""
    times = sorted(arrivals[i] for i in ids if i in arrivals)
    if len(times) < 2:
        return {"arrival_per_s": None, "arrival_catch_up_s": None}
    span_s = (times[-1] - times[0]) / 1000
    return {
        "arrival_per_s": round((len(times) - 1) / span_s, 1) if span_s > 0 else None,
        "arrival_catch_up_s": round((times[-1] - last_event_ms) / 1000, 3),
    }


async def _jetstream(url: str) -> dict[str, list[float]]:
    """Every message of the stream: Nats-Msg-Id -> stored timestamps (wall ms), via a pull consumer."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(NATS_STREAM)).state.messages
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE)
        sub = await js.pull_subscribe("", stream=NATS_STREAM, config=config)
        out: dict[str, list[float]] = {}
        seen = 0
        while seen < total:
            for msg in await sub.fetch(min(1000, total - seen), timeout=10):
                msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                out.setdefault(msg_id, []).append(msg.metadata.timestamp.timestamp() * 1000)
                seen += 1
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def receiver_arrivals(receiver: CloudEventsReceiver) -> dict[str, dict[str, list[float]]]:
    """Per HTTP sink: CloudEvent id -> arrival times (wall ms)."""
    offset_ms = (time.time() - time.monotonic()) * 1000
    out: dict[str, dict[str, list[float]]] = {}
    for name in HTTP_SINKS:
        got: dict[str, list[float]] = {}
        for event in receiver.at("/" + name):
            got.setdefault(event.id, []).append(event.at * 1000 + offset_ms)
        out[name] = got
    return out


def one_round(args, n: int, base: Stack, sinks: Stack) -> dict:
    bodies = job_bodies(args.requests, args.jobs, n)
    rec: dict = {"round": n + 1}
    base.stack.check_alive()
    b = base.run_jobs(bodies, args.job_timeout)
    _, base_millis = base.round_events()
    rec["baseline"] = {k: v for k, v in b.items() if k not in ("cpu_at_sent",)}
    rec["baseline"]["stream"] = stream_rate(base_millis)

    before = sinks.entries_added()
    s = sinks.run_jobs(bodies, args.job_timeout)
    total = sinks.entries_added()
    caught_up_ms = sinks.wait_delivered(total, args.catch_up_timeout)
    cpu_caught = sinks.cpu()
    ids, millis = sinks.round_events()
    assert len(ids) == total - before, (len(ids), total, before)
    rec["sinks"] = {k: v for k, v in s.items() if k not in ("cpu_at_sent",)}
    rec["sinks"]["stream"] = stream_rate(millis)
    rec["sinks"]["cpu_s_until_caught_up"] = {
        name: round(cpu_caught[name] - s["cpu_at_sent"][name], 2) for name in cpu_caught
    }
    assert caught_up_ms is not None
    samples = sinks.poller.between(s["sent_ms"] - 1, caught_up_ms)
    rec["per_sink"] = {name: sink_figures(samples, name, before, total, millis[-1]) for name in SINKS}
    rec["round_ids"] = ids
    return rec


def median_round(rounds: list[dict]) -> dict:
    """The round whose sinks-stack completion time is the median."""
    return sorted(rounds, key=lambda r: r["sinks"]["completion_s"])[len(rounds) // 2]


def table(res: dict) -> str:
    m = res["rounds"][res["median_round"] - 1]
    lines = []
    base_t = [r["baseline"]["completion_s"] for r in res["rounds"]]
    sink_t = [r["sinks"]["completion_s"] for r in res["rounds"]]
    st = m["sinks"]["stream"]
    lines.append(
        f"{res['args']['requests']:,} requests as {res['args']['jobs']} job(s) per round, {len(res['rounds'])} rounds "
        f"(baseline stack first in each), dummy engine latency {res['args']['latency_ms']} ms, "
        f"{res['machine']['cpus']} CPUs; median round {m['round']}:"
    )
    lines.append(
        f"events stream (sinks stack): {st['events']:,} events in {st['span_s']:.2f} s = "
        f"{st['events_per_s']:,.0f} events/s; baseline stack: "
        f"{m['baseline']['stream']['events_per_s']:,.0f} events/s"
    )
    lines.append("")
    head = (
        f"{'sink':<12}{'delivered/s':>12}{'arrived/s':>11}{'catch-up s':>12}{'catch-up s':>12}"
        f"{'max lag':>9}{'missing':>9}{'dups':>7}"
    )
    lines.append(head)
    lines.append(f"{'':<12}{'(polled)':>12}{'(receiver)':>11}{'(polled)':>12}{'(receiver)':>12}")
    lines.append("-" * len(head))

    def num(v, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for name in SINKS:
        f, c = m["per_sink"][name], res["check"][name]
        lines.append(
            f"{name:<12}{num(f['delivered_per_s'], ',.0f'):>12}{num(f.get('arrival_per_s'), ',.0f'):>11}"
            f"{num(f['catch_up_s'], '.2f'):>12}{num(f.get('arrival_catch_up_s'), '.2f'):>12}"
            f"{f['max_lag']:>9,}{c['missing']:>9}{c['duplicates']:>7}"
        )
    lines.append("")
    ratio = statistics.median(sink_t) / statistics.median(base_t)
    lines.append(
        f"job completion (POST -> last ended_ms), median: no sinks {statistics.median(base_t):.2f} s, "
        f"with sinks {statistics.median(sink_t):.2f} s ({ratio:.2f}x)"
    )
    lines.append(f"  per round, no sinks: {', '.join(f'{t:.2f}' for t in base_t)} s")
    lines.append(f"  per round, sinks:    {', '.join(f'{t:.2f}' for t in sink_t)} s")
    bc, sc = m["baseline"]["cpu_s_during_job"], m["sinks"]["cpu_s_during_job"]
    lines.append(
        "CPU s during the job (median round), no sinks / sinks: "
        + ", ".join(f"{k} {bc.get(k, 0):.1f}/{sc[k]:.1f}" for k in sc)
    )
    cu = m["sinks"]["cpu_s_until_caught_up"]
    lines.append(
        "CPU s, sinks stack, POST -> every sink caught up: " + ", ".join(f"{k} {v:.1f}" for k, v in cu.items())
    )
    return "\n".join(lines)


def measure(args: argparse.Namespace, work: Path) -> dict:
    """Both stacks, the receiver and nats-server up; the warm-up, the rounds, and what each sink got."""
    env = {"INFERQ_LOG_LEVEL": "WARNING"}
    rounds: list[dict] = []
    with CloudEventsReceiver() as receiver, NatsServer(work / "nats") as nats_server:
        (work / "base.toml").write_text(models_file(args, None, None))
        (work / "sinks.toml").write_text(models_file(args, receiver, nats_server))
        extra = {"nats-server": nats_server.proc.pid, "bench+receiver": os.getpid()}
        with (
            LocalStack(work / "base.toml", workdir=work / "base", env=env) as base_stack,
            LocalStack(work / "sinks.toml", workdir=work / "sinks", env=env) as sinks_stack,
        ):
            base = Stack("no sinks", base_stack, args.poll_s, {"bench+receiver": os.getpid()})
            sinks = Stack("sinks", sinks_stack, args.poll_s, extra)
            try:
                print("warm-up job on each stack ...", flush=True)
                warm = job_bodies(WARMUP_REQUESTS, 1, -1)
                base.run_jobs(warm, args.job_timeout)
                base.round_events()
                sinks.run_jobs(warm, args.job_timeout)
                sinks.wait_delivered(sinks.entries_added(), args.catch_up_timeout)
                warm_ids, _ = sinks.round_events()
                for n in range(args.rounds):
                    rec = one_round(args, n, base, sinks)
                    rounds.append(rec)
                    per = rec["per_sink"]
                    print(
                        f"  round {n + 1}: completion no sinks {rec['baseline']['completion_s']:.2f} s, "
                        f"sinks {rec['sinks']['completion_s']:.2f} s; stream "
                        f"{rec['sinks']['stream']['events_per_s']:,.0f} events/s; catch-up "
                        + ", ".join(f"{k} {v['catch_up_s']:.1f} s" for k, v in per.items()),
                        flush=True,
                    )
                final_status = {s["name"]: s for s in sinks.api.get("/v1/sinks").json()["data"]}
                poll_errors = {"baseline": base.poller.errors, "sinks": sinks.poller.errors}
            finally:
                base.close()
                sinks.close()
        print("checking every event reached every sink ...", flush=True)
        arrivals = receiver_arrivals(receiver)
        arrivals[NATS_SINK] = asyncio.run(_jetstream(nats_server.url))
        batch_sizes = receiver.sizes.get("/batch", [])
    return {
        "rounds": rounds,
        "warm_ids": warm_ids,
        "final_status": final_status,
        "poll_errors": poll_errors,
        "arrivals": arrivals,
        "batch_sizes": batch_sizes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="requests per round")
    ap.add_argument("--jobs", type=int, default=1, help="jobs the round's requests are split into")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=0, help="the dummy engine's latency per request")
    ap.add_argument("--max-inflight", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=500, help="batch_size of the HTTP batch sink")
    ap.add_argument("--poll-s", type=float, default=0.15, help="GET /v1/sinks interval")
    ap.add_argument("--job-timeout", type=float, default=600.0)
    ap.add_argument("--catch-up-timeout", type=float, default=900.0)
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="inferq-sinks-bench-"))
    print(f"{args.requests:,} requests x {args.rounds} rounds, {args.jobs} job(s) each", flush=True)
    try:
        run = measure(args, work)
    except BaseException:
        print(f"logs kept in {work}", file=sys.stderr)
        raise
    shutil.rmtree(work, ignore_errors=True)
    rounds, warm_ids, final_status, arrivals = run["rounds"], run["warm_ids"], run["final_status"], run["arrivals"]

    all_ids = warm_ids + [i for r in rounds for i in r["round_ids"]]
    expected = set(all_ids)
    check = {}
    for name in SINKS:
        got = arrivals[name]
        check[name] = {
            "expected": len(expected),
            "received_unique": len(set(got) & expected),
            "missing": len(expected - set(got)),
            "duplicates": sum(len(v) - 1 for v in got.values()),
            "unexpected": len(set(got) - expected),
            "delivered_counter": final_status[name]["delivered"],
            "lost": final_status[name]["lost"],
            "rejected": final_status[name]["rejected"],
        }
    first_arrival = {name: {i: min(t) for i, t in arrivals[name].items()} for name in SINKS}
    for rec in rounds:
        last_ms = rec["sinks"]["stream"]["last_ms"]
        for name in SINKS:
            rec["per_sink"][name].update(arrival_figures(first_arrival[name], rec["round_ids"], last_ms))
        rec.pop("round_ids")

    res = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable.replace(str(ROOT) + "/", ""), *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "order": "each round: the no-sinks stack's job, then the sinks stack's (which waits for every sink)",
        "sinks": {
            **{name: {"kind": "http", "mode": mode} for name, mode in HTTP_SINKS.items()},
            NATS_SINK: {"kind": "nats", "stream": NATS_STREAM},
        },
        "batch_request_sizes": {"max": max(run["batch_sizes"], default=0), "requests": len(run["batch_sizes"])},
        "poll_errors": run["poll_errors"],
        "check": check,
        "rounds": rounds,
    }
    res["median_round"] = median_round(rounds)["round"]
    res["summary"] = {
        "completion_s_no_sinks": statistics.median(r["baseline"]["completion_s"] for r in rounds),
        "completion_s_sinks": statistics.median(r["sinks"]["completion_s"] for r in rounds),
        "stream_events_per_s": statistics.median(r["sinks"]["stream"]["events_per_s"] for r in rounds),
        "per_sink": {
            name: {
                key: statistics.median(r["per_sink"][name][key] for r in rounds)
                for key in ("delivered_per_s", "arrival_per_s", "catch_up_s", "arrival_catch_up_s", "max_lag")
                if all(r["per_sink"][name][key] is not None for r in rounds)
            }
            for name in SINKS
        },
    }
    print()
    print(table(res))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dt.datetime.now(dt.UTC).date().isoformat()}-sinks.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwritten: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    missing = {name: c["missing"] for name, c in check.items() if c["missing"]}
    if missing:
        print(f"FAILED: events missing at {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
