"""README's quick start, followed as written on a fresh clone with the model hub unreachable: the
first block (`inferq up`) in one terminal, the second (a first job) in another, then the API
section's curl submission. The up command takes the offline path (a stand-in model it names as
such), every request of both jobs succeeds, and a Ctrl-C stops the stack with exit 0.

The clone is of HEAD (what a new user gets). Three things differ from a user's machine: the
install line links this checkout's `.venv` instead of installing one, the API listens on a free
port (INFERQ_PORT, INFERQ_URL), and the hub is a closed port on loopback (HF_ENDPOINT)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time

import pytest
from jsonschema import Draft202012Validator
from openai import OpenAI

from inferq.client import Client
from inferq.localstack import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

INSTALL = "make install"
UP = ".venv/bin/inferq up"
API = "localhost:8000"


def quick_start_blocks(readme: str) -> list[str]:
    """The ```bash blocks of "## Quick start", up to the next `##` heading, in order."""
    after = readme.split("\n## Quick start\n", 1)
    assert len(after) == 2, "README.md has no '## Quick start' section"
    section = re.split(r"\n## ", after[1], maxsplit=1)[0]
    return re.findall(r"^```bash\n(.*?)^```$", section, flags=re.S | re.M)


def api_blocks(readme: str) -> list[str]:
    """The ```bash blocks of "## The API in brief"."""
    section = re.split(r"\n## ", readme.split("\n## The API in brief\n", 1)[1], maxsplit=1)[0]
    return re.findall(r"^```bash\n(.*?)^```$", section, flags=re.S | re.M)


def contract_blocks(readme: str, language: str = "bash") -> list[str]:
    """The ```bash (or ```python) blocks of "## Results in the shape you asked for"."""
    section = re.split(r"\n## ", readme.split("\n## Results in the shape you asked for\n", 1)[1], maxsplit=1)[0]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.S | re.M)


def _lines(block: str) -> list[str]:
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.timeout(400)
def test_the_quick_start_works_as_written_with_the_hub_unreachable(tmp_path):
    clone = tmp_path / "inferq"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    blocks = quick_start_blocks((clone / "README.md").read_text(encoding="utf-8"))
    up_block = next(b for b in blocks if UP in b)
    job_block = blocks[blocks.index(up_block) + 1]
    assert _lines(up_block) == [INSTALL, UP], up_block
    assert len(_lines(up_block)) + len(_lines(job_block)) == 5, "the quick start is five lines"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERQ_", "HF_")) and k != "VIRTUAL_ENV"}
    env.update(
        PYTHONPATH=str(clone),  # the clone's own code, also for the `inferq` command
        INFERQ_PORT=str(port),
        INFERQ_URL=f"http://127.0.0.1:{port}",
        HF_ENDPOINT=f"http://127.0.0.1:{free_port()}",  # nothing listens there: the hub is unreachable
        HF_HOME=str(tmp_path / "hf"),  # and nothing is cached
        COLUMNS="120",
    )
    subprocess.run(["ln", "-s", str(ROOT / ".venv"), ".venv"], cwd=clone, check=True)  # for `make install`
    up_log = tmp_path / "up.log"
    with up_log.open("wb") as log:
        up = subprocess.Popen(
            ["bash", "-e", "-c", UP], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    api_submit = api_blocks((clone / "README.md").read_text(encoding="utf-8"))[0]
    assert "/v1/jobs" in api_submit and API in api_submit, api_submit
    try:
        second = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", _wait_for_api(port) + "\n" + job_block],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 0, f"{second.stdout}\n{second.stderr}\n{up_log.read_text()}"
        # the API section's submission, against the same stack
        answer = subprocess.run(
            ["bash", "-e", "-c", api_submit.replace(API, f"127.0.0.1:{port}")],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        job = json.loads(answer.stdout)
        assert job["status"] == "queued" and job["request_counts"]["total"] == 2, answer.stdout + answer.stderr
        with Client(env["INFERQ_URL"]) as client:
            assert client.wait(job["id"], poll_s=0.2, timeout=120).request_counts.succeeded == 2
        _check_the_contract_example(clone, env, port)
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C in the first terminal
        up.wait(timeout=90)
    finally:
        if up.poll() is None:  # a failure above: stop it as Ctrl-C does, so its services stop too
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
    printed = up_log.read_text()
    assert up.returncode == 0, printed
    assert "OFFLINE" in printed and "NOISE" in printed, printed  # the stand-in, named as such
    submitted = json.loads((clone / "examples/prompts.json").read_text())["requests"]
    written = [json.loads(line) for line in (clone / "results.jsonl").read_text().splitlines()]
    assert sorted(line["custom_id"] for line in written) == sorted(r["custom_id"] for r in submitted)
    assert {line["status"] for line in written} == {"succeeded"}
    assert '{"custom_id"' in second.stdout  # `head` showed the first result
    assert all(m in second.stdout for m in ("smol", "echo-small")), second.stdout  # `inferq models`


def _check_the_contract_example(clone, env: dict, port: int) -> None:
    """The README's response_format job, as written, against the same stack: its result is in the
    schema the block gives, decoded in `output.parsed`."""
    block = contract_blocks((clone / "README.md").read_text(encoding="utf-8"))[0]
    answer = subprocess.run(
        ["bash", "-e", "-c", block.replace(API, f"127.0.0.1:{port}")],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    job = json.loads(answer.stdout)
    body = json.loads(block.split("-d '", 1)[1].rsplit("'", 1)[0])
    schema = body["response_format"]["json_schema"]["schema"]
    with Client(env["INFERQ_URL"]) as client:
        assert client.wait(job["id"], poll_s=0.2, timeout=120).request_counts.succeeded == 1
        (line,) = list(client.results(job["id"]))
    assert Draft202012Validator(schema).is_valid(json.loads(line.output.text)), line
    assert line.output.parsed == json.loads(line.output.text)
    _check_the_sdk_example(clone, env, port)


SHOW = '\nprint(json.dumps(fmt["json_schema"]["schema"]))\nprint(batch.id)\n'  # after the README's code


def _check_the_sdk_example(clone, env: dict, port: int) -> None:
    """The README's OpenAI SDK batch with a response_format in each line, as written (its batch id
    printed after it): every output line's content is in the line's schema."""
    code = contract_blocks((clone / "README.md").read_text(encoding="utf-8"), "python")[0]
    answer = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", code.replace("127.0.0.1:8000", f"127.0.0.1:{port}") + SHOW],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    sdk = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    shown, batch_id = answer.stdout.splitlines()[-2:]
    schema = json.loads(shown)
    for _ in range(600):
        if (batch := sdk.batches.retrieve(batch_id)).status in ("completed", "failed", "expired", "cancelled"):
            break
        time.sleep(0.2)
    assert batch.status == "completed" and batch.request_counts.completed == 3, batch
    for line in sdk.files.content(batch.output_file_id).text.splitlines():
        content = json.loads(line)["response"]["body"]["choices"][0]["message"]["content"]
        assert Draft202012Validator(schema).is_valid(json.loads(content)), content


def _wait_for_api(port: int) -> str:
    """What a user does between the two terminals: wait until the first says it is up."""
    url = shlex.quote(f"http://127.0.0.1:{port}/readyz")
    return f"for i in $(seq 600); do curl -sf {url} >/dev/null && break; sleep 0.5; done"
