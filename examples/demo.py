"""The local demo: start Redis and every service, submit examples/prompts.json, show progress and
results, then shut everything down. Run it with `make demo`."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferq.local_models import prepare  # noqa: E402
from inferq.localstack import LocalStack, StackError  # noqa: E402
from shared.core.states import JobStatus  # noqa: E402


def bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else width
    return "#" * filled + "." * (width - filled)


def _replicas(client: httpx.Client) -> dict[str, int]:
    return {m["id"]: m["scaling"]["current"] or 0 for m in client.get("/v1/models").json()["data"]}


def main() -> int:
    models_path = Path(os.environ.get("INFERQ_MODELS", ROOT / "examples/models.demo.toml"))
    prompts_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples/prompts.json"
    body = json.loads(prompts_path.read_text())
    redis_url = os.environ.get("INFERQ_REDIS_URL") or None
    (ROOT / ".demo").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=ROOT / ".demo"))
    print("fetching the demo's language model ...")
    models_path, notes = prepare(models_path, workdir)
    noise = any("NOISE" in n for n in notes)
    for note in notes:
        print(f"  {note}")
    print(
        f"starting inferq: {'Redis at ' + redis_url if redis_url else 'a private redis-server'},"
        " ingest and the dispatcher "
        "(it starts workers as requests arrive)"
    )
    try:
        stack = LocalStack(
            models_path, redis_url=redis_url, workdir=workdir, env={"TOKENIZERS_PARALLELISM": "false"}
        ).start()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            resp = client.post("/v1/jobs", json=body)
            if resp.status_code != 202:
                print(f"submission rejected ({resp.status_code}): {resp.text}", file=sys.stderr)
                return 1
            job = resp.json()
            print(f"submitted {job['request_counts']['total']} requests as {job['id']} (API at {stack.base_url})\n")
            started = time.monotonic()
            shown = 0
            while True:
                job = client.get(f"/v1/jobs/{job['id']}").json()
                replicas = _replicas(client)
                if shown:
                    sys.stdout.write(f"\x1b[{shown}F") if sys.stdout.isatty() else None
                lines = [
                    f"  {name:<12} [{bar(c['succeeded'] + c['failed'], c['total'])}] "
                    f"{c['succeeded'] + c['failed']:>3}/{c['total']:<3} running {c['running']:>2}"
                    f"  workers {replicas.get(name, 0)}"
                    for name, c in job["models"].items()
                ]
                lines.append(f"  status: {job['status']:<12} elapsed {time.monotonic() - started:5.1f}s")
                if sys.stdout.isatty() or job["status"] == JobStatus.COMPLETED:
                    print("\n".join(lines))
                    shown = len(lines)
                if job["status"] == JobStatus.COMPLETED:
                    break
                stack.check_alive()
                time.sleep(0.2)

            results = [
                json.loads(line)
                for line in client.get(f"/v1/jobs/{job['id']}/results", params={"limit": 10_000}).text.splitlines()
            ]
            print(
                f"\n{len(results)} results (the echo-* models are simulators that echo the prompt"
                f"{'; smol is an untrained stand-in, its text is noise' if noise else ''}):"
            )
            for r in sorted(results, key=lambda r: r["custom_id"]):
                text = r["output"]["text"] if r["output"] else f"error {r['error']['code']}"
                text = " ".join(text.split())
                label = " [noise]" if noise and r["model"] == "smol" else ""
                print(
                    f"  {r['custom_id']:<9} {r['model']:<12} {r['status']:<9}"
                    f" {r['timings']['inference_ms']:6.0f} ms  {text[:70]}{label}"
                )
            print("\nwaiting for the autoscaler to stop the idle workers ...")
            idle_since = time.monotonic()
            while any(_replicas(client).values()) and time.monotonic() - idle_since < 60:
                time.sleep(0.5)
            print(
                f"workers: {_replicas(client)} after {time.monotonic() - idle_since:.1f}s idle "
                "(scaled to zero; they start again when work arrives)"
            )
            usage = job["usage"]
            c = job["request_counts"]
            print(
                f"\njob {job['status']}: {c['succeeded']} succeeded, {c['failed']} failed; "
                f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens"
            )
    except (httpx.HTTPError, StackError) as exc:
        print(f"error: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    finally:
        codes = stack.stop()
        print("stopped: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
