"""The benchmark's outputs: a table on stdout, a JSON record and a PNG (throughput against the
baselines, latency CDF)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.quantiles import curve
from bench.redis_cost import script_summary, summary


def table(res: dict) -> str:
    b, q = res["baselines"], res["inferq"]
    hop, arq = b["raw_hop"], b["arq_per_prompt"]
    lat, mem = q["latency"], q["dispatcher_memory"]
    rows = [
        ("baseline: raw pipelined XADD", f"{b['raw_xadd']:,.0f} msg/s", ""),
        ("baseline: one raw stream hop", f"{hop:,.0f} msg/s", ""),
        ("baseline: arq, one job per prompt", f"{arq:,.0f} jobs/s", ""),
        (
            f"ingest acceptance ({q['job_requests']:,}-request job)",
            f"{q['ingest_rps']:,.0f} req/s",
            f"{q['ingest_rps'] / b['raw_xadd']:.2f} × raw XADD (target ≥ 50,000 req/s)",
        ),
        (
            "end to end (POST sent → last result recorded)",
            f"{q['e2e_rps']:,.0f} req/s",
            f"{q['e2e_rps'] / hop:.2f} × raw hop (target ≥ 0.5); {q['e2e_rps'] / arq:,.0f} × arq (target ≥ 20)",
        ),
        (
            f"latency at {lat['achieved_rps']:,.0f} req/s open loop",
            f"p50 {lat['p50_ms']:.1f} ms",
            f"p95 {lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms (target p50 ≤ 3 ms, p99 ≤ 15 ms)",
        ),
        *(
            [
                (
                    f"  CPU during it ({lat['per_job']}-request jobs)",
                    f"{lat['cpu']['us_per_request']:.0f} µs/req",
                    f"{lat['cpu']['busy_share']:.0%} of all cores busy (stack and Redis, not the client)",
                )
            ]
            if "cpu" in lat
            else []
        ),
        *_latency_floor_rows(res),
        *_redis_rows(q),
        *_floor_rows(res),
        *_process_rows(q),
        (
            f"dispatcher RSS, backlog {mem['backlog']:,}",
            f"{mem['rss_at_full_mb']:.1f} MiB",
            f"idle {mem['idle_rss_mb']:.1f}, at 10% {mem['rss_at_10pct_mb']:.1f}, peak {mem['peak_rss_mb']:.1f} MiB; "
            f"Redis {mem['redis_used_mb']:,.0f} MiB",
        ),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'measure':<{w0}}  {'figure':>{w1}}  ratio / detail", "-" * (w0 + w1 + 40)]
    lines += [f"{a:<{w0}}  {b_:>{w1}}  {c}" for a, b_, c in rows]
    return "\n".join(lines)


def _process_rows(q: dict) -> list[tuple[str, str, str]]:
    cpu = q.get("process_cpu_us_per_request")
    if not cpu:
        return []
    total = sum(cpu.values())
    detail = ", ".join(f"{name} {us:.1f}" for name, us in sorted(cpu.items(), key=lambda kv: -kv[1]))
    return [("CPU per request, all processes (end-to-end runs)", f"{total:.1f} µs", detail)]


def _redis_rows(q: dict) -> list[tuple[str, str, str]]:
    cost = q.get("redis")
    if not cost:
        return []
    aof = cost["aof_bytes_per_request"]
    return [
        (
            "Redis CPU per request (end-to-end runs)",
            f"{cost['cpu_us_per_request']:.1f} µs",
            f"target ≤ 15 µs; AOF rewrites {cost['rewrite_cpu_us_per_request']:.1f} µs more "
            f"({cost['aof_rewrites']} rewrites)",
        ),
        (
            "AOF bytes written per request",
            f"{aof:,.0f} B" if aof is not None else "n/a",
            "",
        ),
        ("Redis µs per request by command", "", summary(cost)),
        *(
            [("Redis µs per request by script (a pass of its own)", "", script_summary(q["redis_scripts"]))]
            if q.get("redis_scripts")
            else []
        ),
    ]


def _latency_floor_rows(res: dict) -> list[tuple[str, str, str]]:
    idle, wake = res["inferq"].get("idle_latency"), res.get("wake_us")
    if not idle or not wake:
        return []
    return [
        (
            "latency, one request at a time (bench/latency_floor.py)",
            f"p50 {idle['total_ms']['p50']:.1f} ms",
            f"p90 {idle['total_ms']['p90']:.1f} ms; until a worker starts it p50 "
            f"{idle['until_started_ms']['p50']:.1f} ms, then until recorded {idle['after_start_ms']['p50']:.1f} ms",
        ),
        (
            "wake-up of a blocked stream read, XADD → reply parsed",
            f"p50 {wake['p50'] / 1000:.2f} ms",
            f"p90 {wake['p90'] / 1000:.2f} ms, min {wake['min'] / 1000:.2f} ms (one per hop)",
        ),
    ]


def _floor_rows(res: dict) -> list[tuple[str, str, str]]:
    floor, lua = res.get("redis_floor_us_per_request"), res.get("lua_ns_per_byte")
    rows = []
    if floor:
        rows.append(
            (
                "Redis CPU floor of the guarantees (bench/redis_floor.py)",
                f"{floor['per_request_entries']:.1f} µs",
                f"one entry per request and per CloudEvent; bundled entries {floor['bundled_entries']:.1f} µs; "
                f"also CloudEvents batched {floor['bundled_with_event_batches']:.1f} µs",
            )
        )
    if lua:
        rows.append(
            (
                "Redis CPU per byte into a script (bench/lua_bytes.py)",
                f"{lua['script_argument_ns_per_byte']:.2f} ns",
                f"{lua['script_argument_unpacked_ns_per_byte']:.2f} ns unpacked with cmsgpack; "
                f"a plain SET {lua['set_ns_per_byte']:.2f} ns",
            )
        )
    return rows


def write_json(res: dict, path: Path) -> None:
    slim = json.loads(json.dumps(res))
    slim["inferq"]["latency"].pop("latencies_ms", None)
    path.write_text(json.dumps(slim, indent=2) + "\n")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, q = res["baselines"], res["inferq"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["raw XADD\n(pipelined)", "raw stream\nhop", "arq, job\nper prompt", "inferq\ningest", "inferq\nend to end"]
    values = [b["raw_xadd"], b["raw_hop"], b["arq_per_prompt"], q["ingest_rps"], q["e2e_rps"]]
    colors = ["#9aa", "#9aa", "#c88", "#48a", "#48a"]
    bars = ax1.bar(names, values, color=colors)
    ax1.set_yscale("log")
    ax1.set_ylabel("messages / requests per second (log)")
    ax1.set_title("Throughput against baselines (same run)")
    for bar, v in zip(bars, values):
        ax1.text(bar.get_x() + bar.get_width() / 2, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    xs, shares = curve(sorted(q["latency"]["latencies_ms"]))
    ax2.plot(xs, shares, color="#48a")
    ax2.set_xscale("symlog", linthresh=10)
    ax2.set_xlabel("submit → result recorded (ms)")
    ax2.set_ylabel("share of requests")
    ax2.set_title(f"Latency CDF at {q['latency']['achieved_rps']:,.0f} req/s open loop")
    for p, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):  # the table's figures, on the curve
        x = q["latency"][f"{p}_ms"]
        ax2.plot([x], [share], "o", ms=4, color="#c44")
        ax2.annotate(f"{p} {x:.1f} ms", (x, share), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
