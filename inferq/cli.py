"""The `inferq` command line: submit files, follow progress, fetch results, run the local stack.

Exit codes: 0 done and every request succeeded; 1 the API could not be reached or failed (5xx);
2 the input was refused (4xx, or an invalid batch file); 3 the job finished with failed requests;
4 the job was cancelled or expired; 5 a model the job needs stayed unavailable for the whole
`--grace` while waiting; 130 interrupted. `inferq quote` exits 1 also when a `--deadline` is not feasible.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from inferq.client import Client, InferqError, raise_api_error
from inferq.serving_watch import DEFAULT_GRACE_S, CannotServe, ServingWatch
from shared.catalog.models import missing_file_message
from shared.core.states import FINAL_JOB_STATES, BatchStatus, JobStatus
from shared.wire.api import Job, Quote, Timeline

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
_RELATIVE = re.compile(r"\+(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_deadline(value: str, now: float | None = None) -> int:
    """A `--deadline` as Unix seconds: Unix seconds, an RFC 3339 time with its offset
    (`2026-12-08T09:00:00Z`), or a time from now: `+30m`, `+2h`, `+1h30m`, `+90s`, `+1d`."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    if (m := _RELATIVE.fullmatch(text)) and any(m.groups()):
        d, h, mins, secs = (int(g or 0) for g in m.groups())
        return round((time.time() if now is None else now) + ((d * 24 + h) * 60 + mins) * 60 + secs)
    try:
        when = dt.datetime.fromisoformat(text.upper())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: give Unix seconds, an RFC 3339 time (2026-12-08T09:00:00Z) or a time from now (+30m, +2h)"
        ) from None
    if when.tzinfo is None:
        raise typer.BadParameter(f"{value!r}: an RFC 3339 time needs its offset (Z, +01:00, ...)")
    return round(when.timestamp())


DeadlineOpt = Annotated[
    int | None,
    typer.Option(
        "--deadline",
        parser=parse_deadline,
        metavar="WHEN",
        help="When the job must be done: Unix seconds, RFC 3339 with its offset, or from now (+30m, +2h)",
    ),
]


class DeadlineRisk(StrEnum):
    best_effort = "best_effort"
    refuse = "refuse"
    spill = "spill"


DeadlineRiskOpt = Annotated[
    DeadlineRisk | None,
    typer.Option(
        "--on-deadline-risk",
        help="When the plan says the deadline will be missed: best_effort (run anyway), refuse (409), spill",
    ),
]


def _clock(t: float, now: float) -> str:
    """A local time: `14:03:20` today, with its date on another day."""
    local = time.localtime(t)
    return time.strftime("%H:%M:%S" if local[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M:%S", local)


def _duration(seconds: float) -> str:
    """`45s`, `3m 20s`, `2h 05m`, `1d 03h`."""
    s = round(abs(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h"


def _relative(t: float, now: float) -> str:
    """`in 3m 20s`, `now` or `12s ago`."""
    if abs(t - now) < 0.5:
        return "now"
    return f"in {_duration(t - now)}" if t > now else f"{_duration(t - now)} ago"


def _when(t: float, now: float) -> str:
    return f"{_clock(t, now)} ({_relative(t, now)})"


def _eta(job: Job, now: float | None = None) -> str:
    """`ETA 14:03:20 (in 2m 05s)  deadline 14:05:00  AT RISK`, as far as each applies (rich markup);
    once the job has ended, whether it made its deadline. Empty when none applies."""
    now = time.time() if now is None else now
    parts = []
    if job.status not in FINAL_JOB_STATES and job.estimated_completion_at is not None:
        parts.append(f"ETA {_when(job.estimated_completion_at, now)}")
    if job.deadline is not None:
        parts.append(f"deadline {_clock(job.deadline, now)}")
        if job.status not in FINAL_JOB_STATES and job.deadline_at_risk:
            parts.append("[bold red]AT RISK[/bold red]")
        elif job.completed_at is not None:
            late = job.completed_at - job.deadline
            parts.append(f"[red]missed by {_duration(late)}[/red]" if late > 0 else "met")
    return "  ".join(parts)


def _fail(exc: Exception) -> typer.Exit:
    if isinstance(exc, InferqError):
        quote = getattr(exc.error, "quote", None)
        if getattr(exc.error, "type", None) == "deadline_infeasible" and quote is not None:
            _print_infeasible(quote)
        else:
            err.print(f"[red]error {exc.status}[/red]: {exc.message}")
        return typer.Exit(REFUSED if 400 <= exc.status < 500 else UNREACHABLE)
    err.print(f"[red]error[/red]: cannot reach inferq: {exc}")
    return typer.Exit(UNREACHABLE)


def _is_jsonl(path: Path, text: str) -> bool:
    if path.suffix == ".jsonl":
        return True
    first = text.lstrip()[:1]
    return first == "{" and '"custom_id"' in text.split("\n", 1)[0] and '"url"' in text.split("\n", 1)[0]


def _files_http(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120)


def _upload_batch_file(http: httpx.Client, path: Path, text: str) -> str:
    """Upload an OpenAI batch input file; its file id."""
    up = http.post("/v1/files", files={"file": (path.name, text.encode())}, data={"purpose": "batch"})
    raise_api_error(up)
    return up.json()["id"]


def _deadline_fields(deadline: int | None, on_deadline_risk: DeadlineRisk | None) -> dict:
    return {
        **({"deadline": deadline} if deadline is not None else {}),
        **({"on_deadline_risk": on_deadline_risk.value} if on_deadline_risk is not None else {}),
    }


def _job_body(text: str, completion_window: str, deadline: int | None, on_deadline_risk: DeadlineRisk | None) -> dict:
    """The POST /v1/jobs body of a JSON job file, with the command's options (a --deadline or
    --on-deadline-risk given replaces the file's)."""
    body = json.loads(text)
    if "completion_window" not in body:
        body["completion_window"] = completion_window
    body.update(_deadline_fields(deadline, on_deadline_risk))
    return body


def _submit_batch_file(
    client: Client,
    url: str,
    api_key: str | None,
    path: Path,
    text: str,
    window: str,
    deadline: int | None = None,
    on_deadline_risk: DeadlineRisk | None = None,
) -> str:
    """An OpenAI batch file goes through the Batch API; returns the job it runs as."""
    first = json.loads(text.lstrip().split("\n", 1)[0])
    endpoint = first.get("url", "/v1/chat/completions")
    with _files_http(url, api_key) as http:
        file_id = _upload_batch_file(http, path, text)
        create = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window}
        resp = http.post("/v1/batches", json={**create, **_deadline_fields(deadline, on_deadline_risk)})
        raise_api_error(resp)
    batch = resp.json()
    if batch["status"] == BatchStatus.FAILED:
        for e in batch["errors"]["data"]:
            err.print(f"[red]{e['code']}[/red] {e['message']}")
        raise typer.Exit(REFUSED)
    out.print(f"batch {batch['id']} accepted as job {batch['job_id']}")
    return batch["job_id"]


class _JobProgress(Progress):
    """The bars, then a line for the job as a whole: its ETA and deadline (`footer`, rich markup)."""

    footer = ""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.footer:
            yield Text.from_markup(self.footer)


def _follow(client: Client, job: Job, watch: ServingWatch) -> Job:
    """A live progress bar per model (done/total, rate, ETA) until the job finishes, under them the
    job's ETA and deadline (and AT RISK); a line for each model that is not serving (why, since
    when); CannotServe once one stays unavailable."""
    columns = [
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.1f}/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    started = time.monotonic()
    with _JobProgress(*columns, console=err, transient=False) as progress:
        tasks = {m: progress.add_task(m, total=c.total, rate=0.0) for m, c in job.models.items()}

        shown: set[str] = set()

        def show(j: Job) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            for m, c in j.models.items():
                progress.update(tasks[m], completed=c.finished, rate=c.finished / elapsed)
            progress.footer = _eta(j)
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
    deadline: DeadlineOpt = None,
    on_deadline_risk: DeadlineRiskOpt = None,
    grace: Grace = DEFAULT_GRACE_S,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Submit a file of requests as one job (`inferq quote FILE` first says when it would finish)."""
    text = file.read_text()
    try:
        with Client(url, api_key=api_key, timeout=120) as client:
            if _is_jsonl(file, text):
                job_id = _submit_batch_file(
                    client, url, api_key, file, text, completion_window, deadline, on_deadline_risk
                )
                job = client.get(job_id)
            else:
                body = _job_body(text, completion_window, deadline, on_deadline_risk)
                job = client.submit(body=body, priority=priority, idempotency_key=idempotency_key)
                out.print(f"job {job.id}: {job.request_counts.total} requests queued")
            if eta := _eta(job):
                out.print(eta, highlight=False)
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


def _print_infeasible(quote: Quote) -> None:
    """A 409 deadline_infeasible: when the job would finish against its deadline, and what would help."""
    now = time.time()
    deadline = "its deadline" if quote.deadline is None else f"its deadline {_when(quote.deadline, now)}"
    at = quote.at_max_replicas
    err.print("[red]error 409[/red]: deadline not feasible, nothing was submitted", highlight=False)
    if at is None:
        err.print(f"  the finish time is unknown (nothing measured yet), so {deadline} cannot be promised")
    else:
        late = _duration(at.finish_p90_at - (quote.deadline or now))
        err.print(
            f"  the job would finish at {_when(at.finish_p90_at, now)}, p90 on its max replicas ({at.replicas}): "
            f"{late} after {deadline}",
            highlight=False,
            soft_wrap=True,
        )
    for line in quote.suggestions:
        err.print(f"  suggestion: {line}", highlight=False, soft_wrap=True)
    err.print("  --on-deadline-risk best_effort submits it anyway", highlight=False)


def _time_cells(timeline: Timeline | None, now: float) -> list[str]:
    """start, start p90, finish, finish p90: each a local time over how far off it is."""
    if timeline is None:
        return ["unknown"] * 4
    times = (timeline.start_at, timeline.start_p90_at, timeline.finish_at, timeline.finish_p90_at)
    return [f"{_clock(t, now)}\n[dim]{_relative(t, now)}[/dim]" for t in times]


def _replicas_cell(label: str, timeline: Timeline | None) -> str:
    return label if timeline is None else f"{label}: {timeline.replicas}"


def _finish_text(timeline: Timeline | None, now: float) -> str:
    if timeline is None:
        return "unknown"
    n = timeline.replicas
    return f"{_when(timeline.finish_at, now)}, p90 {_when(timeline.finish_p90_at, now)} ({n} replica{'s' * (n != 1)})"


def _print_quote(q: Quote) -> None:
    """Per model: requests, tokens (and where their counts came from), cost, the replicas a
    deadline needs; when it starts and finishes (p50, p90) on the replicas now and at max
    replicas; then the job's total, whether its deadline holds, suggestions and notes."""
    now = time.time()
    _print_quote_tables(q, now)
    _print_quote_summary(q, now)


def _print_quote_tables(q: Quote, now: float) -> None:
    names = [m.model for m in q.models]
    width = max((len(n) for n in names), default=5)
    table = Table(title=f"quote: {q.requests:,} requests if submitted now (nothing was written)")
    table.add_column("model", no_wrap=True, min_width=width)
    for name in ("requests", "prompt tokens", "completion tokens", "cost"):
        table.add_column(name, justify="right")
    if q.deadline is not None:
        table.add_column("replicas needed", justify="right")
    for m in q.models:
        row = [
            m.model,
            f"{m.requests:,}",
            f"{m.prompt_tokens:,} [dim]({m.prompt_tokens_from})[/dim]",
            f"{m.completion_tokens:,} [dim]({m.completion_tokens_from})[/dim]",
            usd_text(m.cost),
        ]
        if q.deadline is not None:
            row.append("none" if m.replicas_needed is None else str(m.replicas_needed))
        table.add_row(*row)
    out.print(table)
    times = Table(title="when (local time; p50 and p90)")
    times.add_column("model", no_wrap=True, min_width=width)
    times.add_column("replicas", no_wrap=True)
    for name in ("start", "start p90", "finish", "finish p90"):
        times.add_column(name, no_wrap=True)
    for m in q.models:
        if m.current is not None and m.current == m.at_max_replicas:
            times.add_row(m.model, _replicas_cell("now = max", m.current), *_time_cells(m.current, now))
            continue
        times.add_row(m.model, _replicas_cell("now", m.current), *_time_cells(m.current, now))
        times.add_row("", _replicas_cell("max", m.at_max_replicas), *_time_cells(m.at_max_replicas, now))
    out.print(times)


def _print_quote_summary(q: Quote, now: float) -> None:
    def say(text: str) -> None:
        out.print(text, highlight=False, soft_wrap=True)

    say(
        f"total: {q.requests:,} requests, {q.prompt_tokens:,} prompt + {q.completion_tokens:,} completion tokens, "
        f"cost {usd_text(q.cost)}"
    )
    say(f"  finish on the replicas now: {_finish_text(q.current, now)}")
    say(f"  finish at max replicas:     {_finish_text(q.at_max_replicas, now)}")
    if q.deadline is not None:
        if q.feasible is None:
            verdict = "feasible: unknown"
        else:
            verdict = "[green]feasible: yes[/green]" if q.feasible else "[bold red]feasible: no[/bold red]"
        if (at := q.at_max_replicas) is not None:
            gap = at.finish_p90_at - q.deadline
            verdict += f", the p90 finish at max replicas is {_duration(gap)} {'after' if gap > 0 else 'before'} it"
        risk = f", {q.on_deadline_risk}" if q.on_deadline_risk else ""
        say(f"  deadline {_clock(q.deadline, now)} ({_relative(q.deadline, now)}{risk}): {verdict}")
    for title, lines in (("suggestions", q.suggestions), ("notes", q.notes)):
        if lines:
            say(f"{title}:")
            for line in lines:
                say(f"  - {line}")


@app.command()
def quote(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help='Native JSON, {"prompts": …} JSON, or OpenAI batch JSONL'),
    ],
    priority: Annotated[str | None, typer.Option(help="interactive or batch")] = None,
    completion_window: Annotated[str, typer.Option(help="e.g. 24h, 90m")] = "24h",
    deadline: DeadlineOpt = None,
    on_deadline_risk: DeadlineRiskOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the quote as JSON")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """What a file of requests would take and cost if submitted now, per model, and whether a
    --deadline holds (exit 1 when it does not). Nothing is submitted; an OpenAI batch file is
    uploaded to be quoted, then deleted."""
    text = file.read_text()
    try:
        with Client(url, api_key=api_key, timeout=120) as client:
            if _is_jsonl(file, text):
                with _files_http(url, api_key) as http:
                    file_id = _upload_batch_file(http, file, text)
                    try:
                        body = {"input_file_id": file_id, "completion_window": completion_window}
                        body.update(_deadline_fields(deadline, on_deadline_risk))
                        q = client.quote(body=body, priority=priority)
                    finally:  # the quote wrote nothing: neither does the command
                        with contextlib.suppress(httpx.HTTPError):
                            http.delete(f"/v1/files/{file_id}")
            else:
                q = client.quote(body=_job_body(text, completion_window, deadline, on_deadline_risk), priority=priority)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error[/red]: {file} is not valid JSON: {exc}")
        raise typer.Exit(REFUSED) from None
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(msgspec.json.encode(q).decode())
    else:
        _print_quote(q)
    raise typer.Exit(UNREACHABLE if q.deadline is not None and q.feasible is False else OK)


@app.command()
def status(job_id: str, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """A job's status, counts and usage, as JSON; on stderr its ETA and deadline while it runs, and
    its cost per serving model."""
    try:
        with Client(url, api_key=api_key) as client:
            job = client.get(job_id)
    except (InferqError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    out.print_json(msgspec.json.encode(job).decode())
    if eta := _eta(job):
        err.print(eta, highlight=False)
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
    """`done/total pct bar`: the share of the job's requests that have a final state; under it the
    job's ETA and deadline, if it has them."""
    c = job.request_counts
    done = c.finished
    share = done / c.total if c.total else 1.0
    filled = round(share * 10)
    bar = f"{done:,}/{c.total:,} {share:4.0%} " + "█" * filled + "░" * (10 - filled)
    eta = _eta(job)
    return f"{bar}\n{eta}" if eta else bar


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
