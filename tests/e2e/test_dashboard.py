"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real stack:
redis-server, ingest, dispatcher and CPU dummy-engine workers, auth on with two tenants. Each test
asserts what the page shows. Screenshots go to each test's tmp dir; with INFERQ_DASHBOARD_SHOTS=DIR
they are also copied there (that is how docs/dashboard/ is refreshed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from inferq.localstack import LocalStack, free_port
from tests.conftest import ROOT
from tests.support.cloudevents_receiver import CloudEventsReceiver
from tests.support.openai_server import OpenAIStub
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

KEY_A = "acme-key-0123456789abcdef"
KEY_B = "beta-key-0123456789abcdef"
KEY_PAGER = "page-key-0123456789abcdef"
MODELS = """
[models.echo]
engine = "dummy"
max_inflight = 4
[models.echo.options]
latency_ms = 40

[models.scaled]
engine = "dummy"
max_inflight = 8
[models.scaled.options]
latency_ms = 50
[models.scaled.scaling]
backend = "local"
min_replicas = 0
max_replicas = 3
target_per_replica = 100
scale_down_window_s = 1
idle_cooldown_s = 2

[models.flaky]
engine = "dummy"
max_inflight = 4
[models.flaky.options]
flaky_attempts = 1
[models.flaky.retry]
max_attempts = 1

[models.hosted]
engine = "openai"
[models.hosted.options]
base_url = "{stub}"
[models.hosted.retry]
max_attempts = 1
"""
# The flags Chromium needs here: root without a sandbox, no GPU, and none of its own network calls
# (this machine refuses them, many at a time).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


def _chromium() -> str:
    """The system's Chromium; the tests never download a browser. Only a platform without Debian's
    package (macOS, say) skips, and says so; on Linux a missing browser is a failure to fix."""
    path = os.environ.get("INFERQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if Path(path).exists():
        return path
    if sys.platform.startswith("linux"):
        pytest.fail("Chromium not found: sudo apt-get install -y chromium (or set INFERQ_CHROMIUM)")
    pytest.skip(f"no Chromium on this platform ({sys.platform}): the dashboard tests drive Debian's chromium")


def _stack(tmp_path_factory, name: str, models: str):
    path = tmp_path_factory.mktemp(name) / "models.toml"
    path.write_text(models)
    env = {
        "INFERQ_AUTH": "on",
        "INFERQ_API_KEYS": f"acme:{KEY_A},beta:{KEY_B},pager:{KEY_PAGER}",
        "INFERQ_WEBHOOK_ALLOW_PRIVATE": "1",
        "INFERQ_WEBHOOK_ALLOW_HTTP": "1",
    }
    return LocalStack(path, workdir=path.parent / "stack", env=env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # `hosted` answers through a stand-in for an OpenAI-compatible endpoint: a one-word prompt back
    with OpenAIStub() as stub, _stack(tmp_path_factory, "dashboard", MODELS.format(stub=stub.base_url)) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh tab (its own sessionStorage); a script error in the page fails the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    context.close()
    assert not errors, errors


def _api(stack: LocalStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _submit(stack: LocalStack, key: str, model: str, n: int, prefix: str = "r") -> str:
    with _api(stack, key) as api:
        requests = [{"custom_id": f"{prefix}{i}", "model": model, "prompt": f"hello {i}"} for i in range(n)]
        resp = api.post("/v1/jobs", json={"requests": requests})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def _open(page, stack: LocalStack, key: str, route: str = "#/models", base: str | None = None) -> None:
    """Load the dashboard, answer its key form, and go to `route`."""
    page.goto(f"{base or stack.base_url}/ui/{route}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Use this key").click()
    page.get_by_text("Live · updated").wait_for()


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=tmp_path / f"{name}.png")
    keep = os.environ.get("INFERQ_DASHBOARD_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(keep) / f"{name}.png")


def _wait_text(locator, pattern: str, timeout_s: float = 30.0) -> str:
    """The locator's text once it matches `pattern` (polled as the page refreshes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = locator.inner_text()
        if re.search(pattern, text):
            return text
        assert time.monotonic() < deadline, f"{text!r} never matched {pattern!r}"
        time.sleep(0.1)


def test_models_page_shows_the_backlog_rise_and_replicas_go_0_to_n_to_0(page, stack, tmp_path):
    _open(page, stack, KEY_A)
    row = page.locator("tr[data-model=scaled]")
    _wait_text(row.locator("[data-field=replicas]"), r"^0 replicas\n0 wanted · 0–3 allowed$")
    assert row.locator("[data-field=backlog]").inner_text().strip() == "0"
    assert "local" in row.inner_text() and "echo" in page.locator("tbody").inner_text()
    echo = page.locator("tr[data-model=echo]")
    _wait_text(echo.locator("[data-field=health]"), r"^serving")
    # a model without an autoscaler (its one worker started by the stack) counts the readers of its
    # queue: none before its first request has made the queue, then that one worker, in the singular
    _submit(stack, KEY_A, "echo", 1, "first")
    _wait_text(echo.locator("[data-field=replicas]"), r"^1 worker reading$")
    _wait_text(echo.locator("[data-field=health]"), r"^serving$")  # not again, nor contradicted

    _submit(stack, KEY_A, "scaled", 3000)
    backlog = _wait_text(row.locator("[data-field=backlog]"), r"^[1-9][\d,]*", 10)
    assert int(backlog.split()[0].replace(",", "")) > 0
    busy = r"^(1 replica|[2-9] replicas)\n[1-9] wanted · 0–3 allowed$"
    replicas = _wait_text(row.locator("[data-field=replicas]"), busy, 15)
    assert int(replicas.split()[0]) >= 1
    assert "reading" not in row.inner_text()  # the autoscaler's count, not also a reader count
    _wait_text(row.locator("[data-field=scaling]"), r"up from 0")
    _shot(page, tmp_path, "models")

    _wait_text(row.locator("[data-field=replicas]"), r"^0 replicas\n0 wanted", 60)
    _wait_text(row.locator("[data-field=scaling]"), r"down to zero")
    assert row.locator("[data-field=backlog]").inner_text().strip() == "0"
    _wait_text(row.locator("[data-field=throughput]"), r"^[1-9][\d.,]*/s", 10)  # the minute's results
    assert row.locator("svg.chart polyline.replicas").count() == 1


def test_a_jobs_progress_reaches_100_percent_and_its_results_appear(page, stack, tmp_path):
    job_id = _submit(stack, KEY_A, "echo", 40)
    _open(page, stack, KEY_A, "#/jobs")
    row = page.locator(f"tr[data-job={job_id}]")
    _wait_text(row, r"100%")
    _wait_text(row.locator("[data-field=status]"), r"^completed$")
    assert "40/40" in row.inner_text() and "done" in row.locator("[data-field=eta]").inner_text()
    _shot(page, tmp_path, "jobs")

    page.get_by_label("Filter by status").select_option("cancelled")
    page.get_by_text("No cancelled jobs").wait_for()
    page.get_by_label("Filter by status").select_option("completed")
    row.wait_for()

    row.get_by_role("link", name=job_id).click()
    page.get_by_role("heading", name=re.compile(f"Job {job_id}")).wait_for()
    _wait_text(page.locator("[data-field=results-count]"), r"^40 results")
    results = page.locator("section.results tbody")
    assert results.locator("tr").count() == 40
    assert "hello 7" in results.locator("tr[data-custom=r7]").inner_text()
    assert page.locator("[data-field=succeeded] dd").inner_text() == "40"
    assert page.locator("[data-field=completion-tokens] dd").inner_text() == "80"
    _shot(page, tmp_path, "job")


def test_a_result_that_missed_its_response_format_shows_why_and_the_raw_text(page, stack):
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}
    with _api(stack, KEY_A) as api:
        body = {"requests": [{"custom_id": "shape", "model": "hosted", "prompt": "hello"}], "response_format": fmt}
        resp = api.post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
    _open(page, stack, KEY_A, f"#/jobs/{job_id}")
    row = page.locator("section.results tbody tr[data-custom=shape]")
    text = _wait_text(row, r"output_invalid")
    assert "failed" in text and "the output is not JSON" in text and "output: hello" in text, text


def test_jobs_are_paged(page, stack):
    ids = [_submit(stack, KEY_PAGER, "echo", 1) for _ in range(23)]
    _open(page, stack, KEY_PAGER, "#/jobs")
    page.get_by_text("page 1 · 20 jobs · more older").wait_for()
    assert page.locator(f"tr[data-job={ids[-1]}]").count() == 1  # newest first
    page.get_by_role("button", name="Older →").click()
    page.get_by_text("page 2 · 3 jobs").wait_for()
    assert [page.locator(f"tr[data-job={i}]").count() for i in ids[:3]] == [1, 1, 1]
    page.get_by_role("button", name="← Newer").click()
    page.get_by_text("page 1 · 20 jobs").wait_for()


def test_cancel_from_the_job_page_asks_first_and_ends_the_job_cancelled(page, stack, tmp_path):
    job_id = _submit(stack, KEY_A, "echo", 3000, "c")
    _open(page, stack, KEY_A, f"#/jobs/{job_id}")
    heading = page.get_by_role("heading", name=re.compile(f"Job {job_id}"))
    heading.wait_for()
    page.get_by_role("button", name="Cancel job").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"Cancel job {job_id}?").wait_for()
    dialog.get_by_role("button", name="Keep it").click()  # changing one's mind changes nothing
    time.sleep(1.2)
    assert re.search(r"queued|in progress", heading.inner_text()), heading.inner_text()

    page.get_by_role("button", name="Cancel job").click()
    dialog.get_by_role("button", name="Cancel job").click()
    page.get_by_text(re.compile("Cancel requested: the job is (cancelling|cancelled)")).wait_for()
    _wait_text(heading, r"cancelled$")
    assert int(page.locator("[data-field=cancelled] dd").inner_text().replace(",", "")) > 0
    assert page.get_by_role("button", name="Cancel job").count() == 0
    with _api(stack, KEY_A) as api:
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_dead_letter_is_requeued_from_its_page(page, stack, tmp_path):
    job_id = _submit(stack, KEY_A, "flaky", 1, "flaky")  # fails its one attempt: dead-lettered
    _open(page, stack, KEY_A, "#/dead-letters")
    row = page.locator("tbody tr", has_text=job_id)
    _wait_text(row, r"max_attempts_exceeded")
    _shot(page, tmp_path, "dead-letters")

    row.get_by_role("link").first.click()
    page.get_by_role("heading", name=re.compile("Dead letter")).wait_for()
    assert "flaky0" in page.locator("main").inner_text()
    _shot(page, tmp_path, "dead-letter")
    page.get_by_role("button", name="Requeue").click()
    page.get_by_role("dialog").get_by_role("button", name="Requeue").click()
    page.get_by_text(re.compile(f"Requeued: request flaky0 runs again; job {job_id} is")).wait_for()

    page.get_by_role("link", name=job_id).click()  # the second attempt succeeds
    _wait_text(page.get_by_role("heading", name=re.compile(f"Job {job_id}")), r"completed$")
    assert page.locator("[data-field=succeeded] dd").inner_text() == "1"


def test_a_wrong_key_and_an_unreachable_api_each_show_their_banner(page, stack, tmp_path):
    page.goto(f"{stack.base_url}/ui/#/jobs")
    banner = page.get_by_role("alert")
    _wait_text(banner, r"This API needs an API key")
    page.get_by_label("API key").fill("not-a-valid-key-000000000")
    page.get_by_role("button", name="Use this key").click()
    _wait_text(banner, r"The API refused this key \(401 Unauthorized\)")
    _shot(page, tmp_path, "key-refused")
    page.get_by_label("API key").fill(KEY_A)
    page.get_by_role("button", name="Use this key").click()
    banner.wait_for(state="hidden")

    # a second API process of the same stack, stopped while the page is open
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ingest"],
        env={**stack.env(), "INFERQ_PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the second API did not start"
            time.sleep(0.1)
        other = page.context.new_page()
        _open(other, stack, KEY_A, "#/models", base=base)
        assert other.get_by_role("alert").is_hidden()
    finally:
        proc.terminate()
        proc.wait(30)
    _wait_text(other.get_by_role("alert"), r"The API is unreachable")
    assert "Models" in other.locator("main").inner_text()  # what was shown stays, marked stale
    _shot(other, tmp_path, "unreachable")


def test_another_tenants_job_is_not_found(page, stack):
    job_id = _submit(stack, KEY_A, "echo", 1, "mine")
    _open(page, stack, KEY_B, f"#/jobs/{job_id}")
    page.get_by_role("heading", name="Job not found").wait_for()
    assert page.locator("section.results").is_hidden()  # nothing of the job is shown
    page.get_by_role("link", name="Jobs").first.click()
    page.get_by_text("No jobs yet.").wait_for()


def test_webhook_deliveries_show_status_codes_and_redeliver(page, stack, tmp_path):
    with Receiver() as receiver, _api(stack, KEY_A) as api:
        receiver.on("/hook", 200)
        hook = api.post("/v1/webhooks", json={"url": receiver.url("/hook"), "events": ["job.completed"]}).json()
        _submit(stack, KEY_A, "echo", 1, "hooked")
        _open(page, stack, KEY_A, "#/webhooks")
        row = page.locator(f"tr[data-webhook={hook['id']}]")
        assert "job.completed" in row.inner_text()
        _shot(page, tmp_path, "webhooks")
        row.get_by_role("link", name=hook["id"]).click()
        delivery = page.locator("tr[data-delivery]").first
        _wait_text(delivery.locator("[data-field=code]"), r"^200$")
        _shot(page, tmp_path, "webhook")
        delivery.get_by_role("button", name="Redeliver").click()
        page.get_by_text(re.compile("Redelivery of .* queued")).wait_for()
        deadline = time.monotonic() + 20
        while len(receiver.calls_to("/hook")) < 2:
            assert time.monotonic() < deadline, "the redelivery never arrived"
            time.sleep(0.1)
        _wait_text(delivery, r"\b2\b")  # two attempts


# Two event sinks of acme's events (a scoped sink is listed to its tenants only): a broker that
# answers 503 to everything, and an archive that takes every event.
SINKS = """
[models.echo]
engine = "dummy"
[models.echo.options]
latency_ms = 5

[sinks.broker]
kind = "http"
url = "{broker}"
mode = "binary"
tenants = ["acme"]
allow_http = true
allow_private = true

[sinks.archive]
kind = "http"
url = "{archive}"
tenants = ["acme"]
allow_http = true
allow_private = true
"""


def test_the_sinks_page_shows_what_each_sink_delivered_and_why_one_fails(page, tmp_path_factory, tmp_path):
    with CloudEventsReceiver() as receiver:
        receiver.answer("/broker", 503)
        models = SINKS.format(broker=receiver.url("/broker"), archive=receiver.url("/archive"))
        with _stack(tmp_path_factory, "sinks", models) as stack:
            _open(page, stack, KEY_B, "#/sinks")  # another tenant sees neither
            none = (
                "No event sinks for this key. [sinks.NAME] tables in the models file add them; "
                "a sink scoped to tenants shows to their keys."
            )
            page.get_by_text(none).wait_for()
            page.get_by_role("button", name="Forget key").click()
            page.get_by_label("API key").fill(KEY_A)
            page.get_by_role("button", name="Use this key").click()

            _submit(stack, KEY_A, "echo", 3, "sunk")  # 3 request.completed and 1 job.completed
            archive = page.locator("tr[data-sink=archive]")
            _wait_text(archive.locator("[data-field=delivered]"), r"^4(\n|$)")
            assert "structured mode" in archive.locator("[data-field=target]").inner_text()
            _wait_text(archive.locator("[data-field=lag]"), r"^0$")
            assert archive.locator("[data-field=error]").inner_text() == "—"

            broker = page.locator("tr[data-sink=broker]")
            assert "broker" in broker.inner_text()
            target = broker.locator("[data-field=target]").inner_text()
            assert receiver.url("/broker") in target and "binary mode" in target, target
            error = _wait_text(broker.locator("[data-field=error]"), rf"503.*\n.*failing {SINCE}")
            assert "HTTP 503 from the receiver" in error, error
            _wait_text(broker.locator("[data-field=lag]"), r"^4$")  # none of the 4 handed over
            assert broker.locator("[data-field=delivered]").inner_text().strip() == "0"
            assert broker.locator("[data-field=delivering]").inner_text() == "yes"
            _shot(page, tmp_path, "sinks")


# A model whose worker cannot start: a hub id with the hub out of reach (local files only, none
# cached), so each worker exits as it loads and the local backend retries with growing delays.
# Its default `unavailable_after_s` (60 s) is not waited out: the failed starts make it unavailable.
FAILING = """
[models.echo]
engine = "dummy"
[models.echo.options]
latency_ms = 5

[models.llama]
engine = "transformers"
[models.llama.options]
model = "nobody/does-not-exist"
local_files_only = true
[models.llama.scaling]
backend = "local"
max_replicas = 1
"""


def _model(stack: LocalStack, name: str) -> dict:
    with _api(stack, KEY_A) as api:
        return next(m for m in api.get("/v1/models").json()["data"] if m["id"] == name)


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """The stack, and a job of 3 requests for echo (they finish) and 2 for llama (they wait), once
    llama is unavailable."""
    with _stack(tmp_path_factory, "failing", FAILING) as running:
        with _api(running, KEY_A) as api:
            requests = [{"custom_id": f"e{i}", "model": "echo", "prompt": f"hi {i}"} for i in range(3)]
            requests += [{"custom_id": f"l{i}", "model": "llama", "prompt": f"hi {i}"} for i in range(2)]
            resp = api.post("/v1/jobs", json={"requests": requests})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["id"]
            deadline = time.monotonic() + 120
            while (health := _model(running, "llama")["health"])["state"] != "unavailable":
                assert time.monotonic() < deadline, f"llama never became unavailable: {health}"
                time.sleep(0.2)
            while (job := api.get(f"/v1/jobs/{job_id}").json())["models"]["echo"]["succeeded"] < 3:
                assert time.monotonic() < deadline, f"echo's requests never finished: {job}"
                time.sleep(0.1)
        yield running, job_id


def _unescaped(text: str) -> str:
    """A message as a reader means it: escaped newlines (a JSON log line's) as line breaks."""
    if "\\n" in text:
        text = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "  ", "r": ""}.get(m[1], m[1]), text)
    return " ".join(text.split())


def test_a_model_whose_worker_cannot_start_shows_the_cause_in_one_line_and_all_of_it_on_click(page, failing, tmp_path):
    stack, _ = failing
    reason = _model(stack, "llama")["health"]["reason"]
    _open(page, stack, KEY_A)
    row = page.locator("tr[data-model=llama]")
    cell = row.locator("[data-field=health]")
    _wait_text(cell, r"^unavailable since \d")

    summary = cell.locator("details[data-field=cause] > summary")
    cause = summary.inner_text()
    assert "\n" not in cause and "\\n" not in cause and "Traceback" not in cause and "  File " not in cause, cause
    # what failed, and why: the worker's own error (the hub out of reach), not a frame of its traceback
    assert re.match(r"its last \d+ worker starts? failed: .*OSError: .*huggingface\.co", cause), cause
    detail = cell.locator("[data-field=detail]")
    assert detail.is_hidden()

    summary.click()
    detail.wait_for(state="visible")
    shown = detail.inner_text()
    assert _unescaped(reason) in " ".join(shown.split()), (reason, shown)  # the whole message
    assert "\\n" not in shown and re.search(r"unavailable since \d", shown), shown
    assert re.search(r"worker starts failed in a row: [1-9]", shown), shown
    # it stays open while the page refreshes (each second)
    live = page.locator("#live")
    before = live.inner_text()
    _wait_text(live, rf"^(?!{re.escape(before)}$)")
    assert detail.is_visible()

    # the scaling column: the failing starts, counted, and their error in one line
    scaling = row.locator("[data-field=scaling]")
    assert re.search(r"\b[1-9]\d* failing starts \(exit status \d+\)", scaling.inner_text()), scaling.inner_text()
    start_error = scaling.locator("details[data-field=cause] > summary").inner_text()
    assert "\n" not in start_error and "\\n" not in start_error and "Traceback" not in start_error, start_error
    _wait_text(row.locator("[data-field=replicas]"), r"^(0 replicas|1 replica)\n1 wanted · 0–1 allowed$")
    _shot(page, tmp_path, "models-failing")


SINCE = r"since \d{1,2}:\d{2}(:\d{2})?( [AP]M)?"


def test_a_job_waiting_for_an_unavailable_model_says_so_instead_of_an_eta(page, failing, tmp_path):
    stack, job_id = failing
    since = _model(stack, "llama")["health"]["since"]
    _open(page, stack, KEY_A, "#/jobs")
    row = page.locator(f"tr[data-job={job_id}]")
    eta = row.locator("[data-field=eta]")
    _wait_text(eta, rf"^waiting for llama: unavailable {SINCE}$")  # and nothing else: no ETA
    assert "3/3" in row.inner_text() and "0/2" in row.inner_text()  # echo's done, llama's not
    shown_since = eta.locator("time").get_attribute("datetime")
    assert abs(datetime.fromisoformat(shown_since.replace("Z", "+00:00")).timestamp() - since) < 1
    _shot(page, tmp_path, "jobs-waiting")

    row.get_by_role("link", name=job_id).click()
    page.get_by_role("heading", name=re.compile(f"Job {job_id}")).wait_for()
    eta = page.locator(".toolbar [data-field=eta]")
    _wait_text(eta, rf"^waiting for llama: unavailable {SINCE}$")
    assert "ETA" not in page.locator(".toolbar").inner_text()
    _wait_text(page.locator("[data-field=results-count]"), r"^3 results")  # echo's, as they came
    _shot(page, tmp_path, "job-waiting")


# One priced model of its own, so its speed, plans and quote errors are this test's alone.
PLANNED = """
[models.timed]
engine = "dummy"
max_inflight = 8
price_per_hour = 3.6
[models.timed.options]
latency_ms = 20
"""
CLOCK = r"\d{1,2}:\d{2}(:\d{2})?(\s?[AP]M)?"  # a local time as toLocaleTimeString writes it (en-US: a narrow space)
LEFT = r"(\d+s|\d+m \d{2}s|\d+h \d{2}m)"


def _requests(n: int, tag: str) -> list[dict]:
    return [{"custom_id": f"{tag}{i}", "model": "timed", "prompt": f"hello {i}", "max_tokens": 8} for i in range(n)]


def _until(what, timeout_s: float, every: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return found


def _shown_at(locator) -> float:
    """The Unix time a <time> element stands for."""
    return datetime.fromisoformat(locator.get_attribute("datetime").replace("Z", "+00:00")).timestamp()


def test_a_job_shows_its_planned_eta_and_deadline_and_the_models_page_how_wrong_quotes_were(
    page, tmp_path_factory, tmp_path
):
    with _stack(tmp_path_factory, "planned", PLANNED) as stack, _api(stack, KEY_A) as api:
        _open(page, stack, KEY_A)
        quotes = page.locator("tr[data-model=timed] [data-field=quotes]")
        _wait_text(quotes, r"^no finished quotes yet$")

        # the planner knows the model's speed only from work it finished: a warm-up job first,
        # and a quote (POST /v1/jobs/quote writes nothing) says when it is measured
        warm = api.post("/v1/jobs", json={"requests": _requests(300, "warm")}).json()["id"]
        _until(lambda: api.get(f"/v1/jobs/{warm}").json()["status"] == "completed", 30)
        _until(lambda: api.post("/v1/jobs/quote", json={"requests": _requests(10, "q")}).json()["current"], 15)

        # a job that cannot make its deadline (served first: its deadline is the earlier), and one
        # with minutes to spare behind it
        def submit(n: int, tag: str, deadline: int) -> str:
            resp = api.post("/v1/jobs", json={"requests": _requests(n, tag), "deadline": deadline})
            assert resp.status_code == 202, resp.text
            return resp.json()["id"]

        late_id = submit(2000, "late", int(time.time()) + 2)
        deadline = int(time.time()) + 240
        job_id = submit(3000, "d", deadline)
        _until(lambda: api.get(f"/v1/jobs/{late_id}").json()["deadline_at_risk"], 10)
        job = _until(lambda: (j := api.get(f"/v1/jobs/{job_id}").json())["estimated_completion_at"] and j, 10)
        assert job["deadline"] == deadline and job["deadline_at_risk"] is False

        page.goto(f"{stack.base_url}/ui/#/jobs/{late_id}")
        line = page.locator("[data-field=deadline]")
        text = _wait_text(
            line, rf"^Deadline {CLOCK} at risk \((in|passed) {LEFT}( ago)?\) · the plan finishes {LEFT} late", 5
        )
        assert text.endswith(" · if late: best effort") and line.locator(".badge.s-at_risk").count() == 1, text

        page.goto(f"{stack.base_url}/ui/#/jobs/{job_id}")
        page.get_by_role("heading", name=re.compile(f"Job {job_id}")).wait_for()
        eta = page.locator(".toolbar [data-field=eta]")
        _wait_text(eta, rf"^ETA {CLOCK} \(in {LEFT}\)$", 5)
        planned = api.get(f"/v1/jobs/{job_id}").json()["estimated_completion_at"]
        assert planned is None or abs(_shown_at(eta.locator("time")) - planned) <= 3
        on_track = rf"^Deadline {CLOCK} on track \(in [34]m \d{{2}}s\) · {LEFT} to spare · if late: best effort$"
        _wait_text(line, on_track, 5)
        assert _shown_at(line.locator("time")) == deadline
        assert line.locator(".badge.s-on_track").count() == 1
        # once it is served too: its ETA stays, counting down as the page refreshes
        _wait_text(page.locator("[data-field=succeeded] dd"), r"^[1-9]", 15)
        _wait_text(eta, rf"^ETA {CLOCK} \(in {LEFT}\)$", 5)
        _wait_text(line, on_track, 5)
        _shot(page, tmp_path, "job-eta")

        # the list: the planner's ETA, and each deadline with its marker
        page.get_by_role("link", name="Jobs").first.click()
        row = page.locator(f"tr[data-job={job_id}]")
        _wait_text(row.locator("[data-field=eta]"), rf"^({CLOCK} \(in {LEFT}\)|done)$", 5)
        _wait_text(row.locator("[data-field=deadline]"), rf"^{CLOCK} (on track|met)$", 5)
        late = page.locator(f"tr[data-job={late_id}] [data-field=deadline]")
        _wait_text(late, rf"^{CLOCK} (at risk|missed)$", 5)
        _wait_text(late, rf"^{CLOCK} missed$", 20)  # ended, after its deadline

        # ended: each says whether it finished by its deadline; their quotes were measured
        row.get_by_role("link", name=job_id).click()
        _wait_text(page.get_by_role("heading", name=re.compile(f"Job {job_id}")), r"completed$", 30)
        _wait_text(line, rf"^Deadline {CLOCK} met · finished [34]m \d{{2}}s before the deadline$", 5)
        assert page.locator(".toolbar [data-field=eta]").inner_text() == "ETA done"
        page.goto(f"{stack.base_url}/ui/#/jobs/{late_id}")
        _wait_text(line, rf"^Deadline {CLOCK} missed · finished {LEFT} after the deadline$", 5)

        page.get_by_role("link", name="Models").first.click()
        # the warm-up job had no quote with a time (nothing measured then): the other two count
        pct = r"[+−]\d+\.\d%"
        _wait_text(quotes, rf"^quotes: 2 jobs, finish p50 {pct} \(p90 ±\d+\.\d%\), cost p50 {pct}$", 15)
        error = _until(lambda: _model(stack, "timed")["quote_error"], 5)
        shown = re.search(r"finish p50 ([+−])(\d+\.\d)%", quotes.inner_text())
        assert float(shown[2]) * (-1 if shown[1] == "−" else 1) == pytest.approx(
            100 * error["finish_error_p50"], abs=0.051
        )
