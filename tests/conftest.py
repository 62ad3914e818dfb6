"""Fixtures: a real redis-server on a free port for the whole session, flushed before each test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from inferq.localstack import RedisServer
from shared.catalog.models import parse_models
from shared.core.settings import Settings
from shared.redis.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
# tests/vllm_cpu runs the real vLLM, which lives in its own virtualenv (.venv-vllm; `make test`
# runs them there): a venv without vLLM leaves them to that run.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm_cpu"]

FAST_MODELS = """
[models.alpha]
engine = "dummy"
max_inflight = 64

[models.beta]
engine = "dummy"
max_inflight = 32
[models.beta.options]
latency_ms = 1

[models.gamma]
engine = "dummy"
max_inflight = 16
max_tokens_limit = 100
default_max_tokens = 50
[models.gamma.options]
latency_ms = 2
ms_per_token = 0.1
failure_rate = 0.05
"""


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
async def r(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys("inferq")


@pytest.fixture
def models_file(tmp_path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(FAST_MODELS)
    return path


@pytest.fixture
def models(models_file):
    return parse_models(models_file.read_text(), str(models_file))


@pytest.fixture
def settings(redis_server, models_file) -> Settings:
    """Auth off: these tests are about other behaviour; tests/services/ingest/test_tenancy.py turns it on."""
    return Settings(redis_url=redis_server.url, models_path=str(models_file), auth="off")


@pytest.fixture
async def api(r, settings, models):
    """The ingest API in process (no HTTP server) on the test's Redis and models; files that need
    other settings define their own. Imported here, not above: the vLLM virtualenv shares this file."""
    import httpx

    from services.ingest.app import create_app

    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client
