"""The `inferq` command line: submit files, follow progress, fetch results, run the local stack.

Exit codes: 0 done and every request succeeded; 1 the API could not be reached or failed (5xx);
2 the input was refused (4xx, or an invalid batch file); 3 the job finished with failed requests;
4 the job was cancelled or expired; 5 a model the job needs stayed unavailable for the whole
`--grace` while waiting; 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from inferq.client import Client, InferqError
from inferq.serving_watch import DEFAULT_GRACE_S, CannotServe, ServingWatch
from shared.catalog.models import missing_file_message
from shared.core.states import FINAL_JOB_STATES, BatchStatus, JobStatus
from shared.wire.api import Job

app = typer.Typer(help="Submit LLM jobs to inferq and follow them.", no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)
Url = Annotated[str, typer.Option("--url", envvar="INFERQ_URL", help="The inferq API")]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="INFERQ_API_KEY", help="Bearer key, if the API needs one")
]
DEFAULT_URL = "http://127.0.0.1:8000"
OK, UNREACHABLE, REFUSED, SOME_FAILED, STOPPED, CANNOT_SERVE, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
Grace = Annotated[
    float,
    typer.Option(
        "--grace",
        envvar="INFERQ_WAIT_GRACE_S",
        min=0,
        help="With --wait: give up (exit 5) once a model the job needs has been unavailable this many seconds",
    ),
]


def _fail(exc: Exception) -> typer.Exit:
    if isinstance(exc, InferqError):
        err.print(f"[red]error {exc.status}[/red]: {exc.message}")
        return typer.Exit(REFUSED if 400 <= exc.status < 500 else UNREACHABLE)
    err.print(f"[red]error[/red]: cannot reach inferq: {exc}")
    return typer.Exit(UNREACHABLE)


def _is_jsonl(path: Path, text: str) -> bool:
    if path.suffix == ".jsonl":
        return True
    first = text.lstrip()[:1]
    return first == "{" and '"custom_id"' in text.split("\n", 1)[0] and '"url"' in text.split("\n", 1)[0]


def _submit_batch_file(client: Client, url: str, api_key: str | None, path: Path, text: str, window: str) -> str:
    """An OpenAI batch file goes through the Batch API; returns the job it runs as."""
    first = json.loads(text.lstrip().split("\n", 1)[0])
    endpoint = first.get("url", "/v1/chat/completions")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        up = http.post("/v1/files", files={"file": (path.name, text.encode())}, data={"purpose": "batch"})
        if up.status_code >= 400:
            raise InferqError(up.status_code, up.json().get("error", {}).get("message", up.text))
        resp = http.post(
            "/v1/batches", json={"input_file_id": up.json()["id"], "endpoint": endpoint, "completion_window": window}
        )
        if resp.status_code >= 400:
            raise InferqError(resp.status_code, resp.json().get("error", {}).get("message", resp.text))
    batch = resp.json()
    if batch["status"] == BatchStatus.FAILED:
        for e in batch["errors"]["data"]:
            err.print(f"[red]{e['code']}[/red] {e['message']}")
        raise typer.Exit(REFUSED)
    out.print(f"batch {batch['id']} accepted as job {batch['job_id']}")
    return batch["job_id"]


def _follow(client: Client, job: Job, watch: ServingWatch) -> Job:
    """A live progress bar per model (done/total, rate, ETA) until the job finishes; a line for each
    model that is not serving (why, since when); CannotServe once one stays unavailable."""
    columns = [
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.1f}/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    started = time.monotonic()
    with Progress(*columns, console=err, transient=False) as progress:
        tasks = {m: progress.add_task(m, total=c.total, rate=0.0) for m, c in job.models.items()}

        shown: set[str] = set()

        def show(j: Job) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            for m, c in j.models.items():
                progress.update(tasks[m], completed=c.finished, rate=c.finished / elapsed)
            for note in watch.check(j):
                if note not in shown:
                    shown.add(note)
                    progress.console.print(f"[yellow]waiting[/yellow]: {note}", highlight=False, soft_wrap=True)

        return client.wait(job.id, poll_s=0.25, on_progress=show)


def _write_results(
    client: Client, job_id: str, path: Path | None, *, wait: bool = False, watch: ServingWatch | None = None
) -> int:
    """Every result line, read as one stream; with `wait`, until the job has ended, page by page
    (long polls), checking between them that the models it needs can serve (`watch`)."""
    enc = msgspec.json.Encoder()
    n = 0
    stream = open(path, "wb") if path else sys.stdout.buffer
    try:
        if not wait or watch is None:
            for line in client.results(job_id, wait=wait):
                stream.write(enc.encode(line) + b"\n")
                n += 1
            return n
        cursor = None
        while True:
            try:
                page = client.results_page(job_id, after=cursor, wait=True, timeout=httpx.Timeout(30, read=2.0))
            except httpx.ReadTimeout:  # nothing new for a while: is anything able to serve it?
                watch.check(client.get(job_id))
                continue
            for line in page.lines:
                stream.write(enc.encode(line) + b"\n")
            stream.flush()
            n += len(page.lines)
            cursor = page.cursor
            if not page.lines and page.job_status in FINAL_JOB_STATES:
                return n
    finally:
        if path:
            stream.close()
        else:
            stream.flush()


def _table_with_ids(ids: list[str], *columns: str) -> Table:
    """A table whose first column holds ids, never cut or wrapped (they are there to be copied):
    the other columns wrap or shrink to fit the terminal instead."""
    table = Table()
    table.add_column("id", no_wrap=True, min_width=max((len(i) for i in ids), default=2))
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def usd_text(amount: float) -> str:
    """USD as `$0.0123`: to the micro-dollar, with at least cents."""
    whole, _, frac = f"{amount:.6f}".rstrip("0").partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _print_usage(console: Console, job: Job) -> None:
    """What the job cost, in all and per serving model, and the GPU time it was charged."""
    u = job.usage
    console.print(f"cost {usd_text(u.cost)} ({u.gpu_seconds:.3f} GPU-seconds)", highlight=False)
    width = max((len(m) for m in u.by_model), default=0)
    for model, mu in u.by_model.items():
        console.print(
            f"  {model:<{width}}  {mu.requests:>7,} requests  {usd_text(mu.cost):>12}  {mu.gpu_seconds:10.3f} GPU-s",
            highlight=False,
        )


def _exit_code(job: Job) -> int:
    if job.status in (JobStatus.CANCELLED, JobStatus.EXPIRED):
        return STOPPED
    return SOME_FAILED if job.request_counts.failed else OK


@app.command()
def submit(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help='Native JSON, {"prompts": …} JSON, or OpenAI batch JSONL'),
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the job finishes")] = False,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the results (JSONL) here; implies --wait")
    ] = None,
    priority: Annotated[str | None, typer.Option(help="interactive or batch")] = None,
    completion_window: Annotated[str, typer.Option(help="e.g. 24h, 90m")] = "24h",
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe submission key")] = None,
    grace: Grace = DEFAULT_GRACE_S,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Submit a file of requests as one job."""
    text = file.read_text()
    try:
        with Client(url, api_key=api_key, timeout=120) as client:
            if _is_jsonl(file, text):
                job = client.get(_submit_batch_file(client, url, api_key, file, text, completion_window))
            else:
                body = json.loads(text)
                if "completion_window" not in body:
                    body["completion_window"] = completion_window
                job = client.submit(body=body, priority=priority, idempotency_key=idempotency_key)
                out.print(f"job {job.id}: {job.request_counts.total} requests queued")
            if not (wait or out_path):
                raise typer.Exit(OK)
            try:
                job = _follow(client, job, ServingWatch(client, grace))
            except (CannotServe, KeyboardInterrupt) as exc:
                if isinstance(exc, CannotServe):
                    err.print(f"[red]error[/red]: {exc}", highlight=False, soft_wrap=True)
                if out_path:  # what has finished is not lost with the wait
                    n = _write_results(client, job.id, out_path)
                    out.print(f"wrote the {n} results so far to {out_path}; the job goes on: inferq results {job.id}")
                raise typer.Exit(CANNOT_SERVE if isinstance(exc, CannotServe) else INTERRUPTED) from None
            c = job.request_counts
            out.print(
                f"job {job.id} {job.status}: {c.succeeded} succeeded, {c.failed} failed, "
                f"{c.cancelled} cancelled, {c.expired} expired"
            )
            _print_usage(out, job)
            if out_path:
                n = _write_results(client, job.id, out_path)
                out.print(f"wrote {n} results to {out_path}")
            raise typer.Exit(_exit_code(job))
    except json.JSONDecodeError as exc:
        err.print(f"[red]error[/red]: {file} is not valid JSON: {exc}")
        raise typer.Exit(REFUSED) from None
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None


@app.command()
def status(job_id: str, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """A job's status, counts and usage, as JSON; its cost per serving model on stderr."""
    try:
        with Client(url, api_key=api_key) as client:
            job = client.get(job_id)
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    out.print_json(msgspec.json.encode(job).decode())
    _print_usage(err, job)


@app.command()
def results(
    job_id: str,
    out_path: Annotated[Path | None, typer.Option("--out", help="File to write (default: stdout)")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Keep reading until the job has ended, writing lines as they finish")
    ] = False,
    grace: Grace = DEFAULT_GRACE_S,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """A job's results so far (or, with --wait, all of them), one JSON line per finished request;
    with --wait, then what the job cost (on stderr when the results go to stdout)."""
    try:
        with Client(url, api_key=api_key) as client:
            try:
                n = _write_results(client, job_id, out_path, wait=wait, watch=ServingWatch(client, grace))
            except CannotServe as exc:
                err.print(f"[red]error[/red]: {exc}", highlight=False, soft_wrap=True)
                if out_path:
                    out.print(f"the results so far are in {out_path}")
                raise typer.Exit(CANNOT_SERVE) from None
            job = client.get(job_id) if wait else None
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    if out_path:
        out.print(f"wrote {n} results to {out_path}")
    if job is not None:
        _print_usage(out if out_path else err, job)


def _progress(job: Job) -> str:
    """`done/total pct bar`: the share of the job's requests that have a final state."""
    c = job.request_counts
    done = c.finished
    share = done / c.total if c.total else 1.0
    filled = round(share * 10)
    return f"{done:,}/{c.total:,} {share:4.0%} " + "█" * filled + "░" * (10 - filled)


@app.command("jobs")
def list_jobs(
    status_filter: Annotated[
        str | None, typer.Option("--status", help="Only jobs in this status (queued, in_progress, completed, ...)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most jobs to show")] = 20,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Your jobs, newest first: id, status, created (UTC), progress, models."""
    shown: list[Job] = []
    more, after = True, None
    try:
        with Client(url, api_key=api_key) as client:
            while more and len(shown) < limit:
                page = client.jobs(status=status_filter, limit=min(100, limit - len(shown)), after=after)
                shown += page.data
                more, after = page.has_more, page.next_cursor
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    table = _table_with_ids([j.id for j in shown], "status", "created", "progress", "models")
    for job in shown:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job.created_at))
        table.add_row(job.id, job.status, created, _progress(job), ", ".join(job.models))
    out.print(table)
    if more:
        err.print(f"more jobs: --limit {limit + 20} shows more")


@app.command()
def cancel(job_id: str, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Cancel a job: queued requests are dropped, running ones finish."""
    try:
        with Client(url, api_key=api_key) as client:
            job = client.cancel(job_id)
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    out.print(f"job {job.id} {job.status}")


@app.command()
def models(url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Configured models: queue depth and replicas."""
    try:
        with Client(url, api_key=api_key) as client:
            data = client.models()
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    table = Table("model", "engine", "waiting", "routed", "in flight", "flow", "replicas", "scaling")
    for m in data:
        s = m.scaling
        replicas = "-" if s.current is None else f"{s.current}/{s.max_replicas}"
        table.add_row(
            m.id,
            m.engine,
            str(m.queue.queued),
            str(m.queue.routed_unread),
            str(m.queue.pending),
            m.queue.flow,
            replicas,
            s.backend,
        )
    out.print(table)


@app.command()
def up(
    models_file: Annotated[Path, typer.Option("--models", envvar="INFERQ_MODELS", help="The models file")] = Path(
        "examples/models.demo.toml"
    ),
    port: Annotated[int, typer.Option(envvar="INFERQ_PORT", help="API port")] = 8000,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", envvar="INFERQ_REDIS_URL", help="Use this Redis instead of starting one"),
    ] = None,
) -> None:
    """Run the local stack (Redis, ingest, dispatcher, workers) in the foreground until Ctrl-C."""
    from inferq.local_models import prepare
    from inferq.localstack import LocalStack, StackError

    workdir = Path(os.environ.get("INFERQ_WORKDIR", ".inferq")).resolve()  # the workers run elsewhere
    workdir.mkdir(exist_ok=True)
    if not models_file.is_file():
        err.print(f"[red]error[/red]: {missing_file_message(models_file)}")
        raise typer.Exit(REFUSED)
    models_file, notes = prepare(models_file, workdir)  # hub models downloaded, or an offline stand-in
    for note in notes:
        out.print(f"  {note}")
    try:
        stack = LocalStack(models_file, redis_url=redis_url or None, workdir=workdir, port=port).start()
    except StackError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(UNREACHABLE) from None
    out.print(f"inferq is up at {stack.base_url} (logs in {workdir}); Ctrl-C stops it")
    try:
        while True:
            stack.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except StackError as exc:
        err.print(f"[red]error[/red]: {exc}")
    finally:
        codes = stack.stop()  # workers, dispatchers, ingest, then Redis: each drains into the next
        out.print("stopped: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()))
    if any(codes.values()):
        raise typer.Exit(UNREACHABLE)


@app.command()
def deploy(
    models_file: Annotated[Path, typer.Option("--models", envvar="INFERQ_MODELS", help="The models file")] = Path(
        "models.toml"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Only print the plan: no Modal account needed, nothing deployed")
    ] = False,
) -> None:
    """Deploy the GPU workers of every model with a modal table to Modal, after printing the plan
    (GPU, containers, secrets, volumes, image, and what drives each)."""
    from inferq.deploy_plan import NothingToDeploy, build_plan, render
    from inferq.deploy_plan import deploy as modal_deploy
    from shared.catalog.models import ModelsFileError

    try:
        plan = build_plan(models_file)
    except (ModelsFileError, NothingToDeploy) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(REFUSED) from None
    except ModuleNotFoundError as exc:
        if exc.name != "modal":
            raise
        typer.echo("error: the modal package is not installed: pip install 'inferq[modal]'", err=True)
        raise typer.Exit(UNREACHABLE) from None
    except RuntimeError as exc:  # the deployment cannot be built from here (e.g. not a checkout)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(UNREACHABLE) from None
    typer.echo(render(plan))
    if not check:
        raise typer.Exit(modal_deploy(models_file))


keys_app = typer.Typer(help="API keys (talks to Redis directly: run it where the services run).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
RedisUrl = Annotated[str, typer.Option("--redis-url", envvar="INFERQ_REDIS_URL", help="The Redis the services use")]
Prefix = Annotated[str, typer.Option("--prefix", envvar="INFERQ_KEY_PREFIX", help="Key prefix of the deployment")]


def _key_store(redis_url: str, prefix: str):
    from shared.catalog.api_keys import ApiKeyStore
    from shared.redis.client import connect
    from shared.redis.keys import Keys

    return ApiKeyStore(connect(redis_url), Keys(prefix))  # with the services' timeouts: never hangs


def _run(coro):
    import asyncio

    try:
        return asyncio.run(coro)
    except OSError as exc:
        err.print(f"[red]error[/red]: cannot reach Redis: {exc}")
        raise typer.Exit(1) from None


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Who the key acts for: their jobs, files, webhooks")],
    name: Annotated[str, typer.Option("--name", help="A label, e.g. the team or system using it")] = "",
    redis_url: RedisUrl = "redis://localhost:6379/0",
    prefix: Prefix = "inferq",
) -> None:
    """Create a key. It is printed once; only its SHA-256 is stored."""

    async def go():
        store = _key_store(redis_url, prefix)
        try:
            return await store.create(tenant, name)
        finally:
            await store.r.aclose()

    try:
        key, rec = _run(go())
    except ValueError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    err.print(f"created key {rec.id} for tenant {rec.tenant}; store it now, it is not shown again:")
    print(key)


@keys_app.command("list")
def keys_list(redis_url: RedisUrl = "redis://localhost:6379/0", prefix: Prefix = "inferq") -> None:
    """Every key: id, tenant, name, created (never the key itself)."""

    async def go():
        store = _key_store(redis_url, prefix)
        try:
            return await store.list()
        finally:
            await store.r.aclose()

    records = _run(go())
    table = _table_with_ids([rec.id for rec in records], "tenant", "name", "created")
    for rec in records:
        table.add_row(rec.id, rec.tenant, rec.name, time.strftime("%Y-%m-%d %H:%M", time.gmtime(rec.created_at)))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The id `inferq keys list` shows")],
    redis_url: RedisUrl = "redis://localhost:6379/0",
    prefix: Prefix = "inferq",
) -> None:
    """Revoke a key: requests with it are refused (401) within a few seconds."""

    async def go():
        store = _key_store(redis_url, prefix)
        try:
            return await store.revoke(key_id)
        finally:
            await store.r.aclose()

    rec = _run(go())
    if rec is None:
        err.print(f"[red]error[/red]: no key with id {key_id}")
        raise typer.Exit(2)
    out.print(f"revoked key {rec.id} of tenant {rec.tenant}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
