"""docs/operations.md's "Running the services", followed as written on a fresh clone: its shell
blocks, taken from the page itself so the two cannot drift, run in order in one shell. The stack
they start must answer the job they submit with curl (its events to the end, and every result)
and the example file they submit with the CLI (every request of it succeeded).

The clone is of HEAD (what a new user gets), so an uncommitted change to the page is not seen.
Three things differ from a user's machine, each replaced where the page writes it, and each must
be there: the install line links this checkout's `.venv` instead of installing one, Redis is the
tests' own server, and the API listens on a free port instead of 8000."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess

import pytest

from inferq.localstack import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -e ."
REDIS_URL = "redis://localhost:6379/0"
API = "localhost:8000"
PAGE = "docs/operations.md"


def section_blocks(page: str) -> list[str]:
    """The ```bash blocks of "## Running the services", up to the next heading, in order."""
    after = page.split("\n## Running the services\n", 1)
    assert len(after) == 2, f"{PAGE} has no '## Running the services' section"
    section = re.split(r"\n#{2,3} ", after[1], maxsplit=1)[0]
    return re.findall(r"^```bash\n(.*?)^```$", section, flags=re.S | re.M)


def as_run_here(script: str, redis_url: str, port: int) -> str:
    for written in (INSTALL, REDIS_URL, API):
        assert written in script, f"{PAGE}'s Running the services no longer has {written!r}: update this test"
    script = script.replace(INSTALL, f"ln -s {shlex.quote(str(ROOT / '.venv'))} .venv")
    return script.replace(REDIS_URL, redis_url).replace(API, f"localhost:{port}")


async def test_running_the_services_as_the_operations_page_says(r, redis_server, tmp_path):
    """`r`: the tests' Redis, flushed, as a new user's would be empty."""
    clone = tmp_path / "inferq"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    blocks = section_blocks((clone / PAGE).read_text(encoding="utf-8"))
    assert blocks, f"{PAGE}'s Running the services has no ```bash block"
    port = free_port()
    script = as_run_here("\n".join(blocks), redis_server.url, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_") and k != "VIRTUAL_ENV"}
    # the clone's own code, also for the `inferq` command, whose install points at this checkout
    env.update(PYTHONPATH=str(clone), INFERQ_PORT=str(port))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        shell = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=clone,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # the services it starts are in its process group
        )
        try:
            rc: int | None = shell.wait(timeout=90)
        except subprocess.TimeoutExpired:
            rc = None
        left_running = True
        try:
            os.killpg(shell.pid, signal.SIGKILL)  # whatever is left of the shell and the services
        except ProcessLookupError:
            left_running = False
    printed, logged = out.read_text(), err.read_text()
    assert rc is not None, f"the page's commands did not end within 90 s:\n{printed}\n{logged}"
    assert rc == 0, f"the page's commands failed (exit {rc}):\n{printed}\n{logged}"
    assert not left_running, f"services were left running after the page's last command:\n{logged}"
    assert "Traceback" not in logged, logged

    events = re.findall(r"^event: (\S+)$", printed, flags=re.M)
    assert events == ["request.completed", "request.completed", "job.completed"]
    results = [json.loads(line) for line in printed.splitlines() if line.startswith('{"custom_id"')]
    assert sorted(line["custom_id"] for line in results) == ["a", "b"]  # the page's curl job
    assert {line["status"] for line in results} == {"succeeded"}
    assert all(line["output"]["text"] for line in results)

    # the example file the page submits with the CLI: every request of it, each succeeded
    submitted = json.loads((clone / "examples/prompts.local.json").read_text(encoding="utf-8"))["requests"]
    assert submitted, "examples/prompts.local.json has no requests"
    written = [json.loads(line) for line in (clone / "results.jsonl").read_text().splitlines()]
    assert sorted(line["custom_id"] for line in written) == sorted(r["custom_id"] for r in submitted)
    assert {line["status"] for line in written} == {"succeeded"}
    assert all(line["output"]["text"] for line in written)
