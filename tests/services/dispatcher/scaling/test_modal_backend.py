"""The `modal` scaling backend against the fake Modal client (tests/support/fakes/modal) at that boundary
only; call ids and failure records live in the real Redis; time is a fake clock, so a minute-long
outage takes no time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from services.dispatcher.scaling.modal_backend import ModalBackend, Outcome, poll_outcome
from shared.catalog.models import parse_models
from shared.models.flow import model_scaling
from tests.conftest import ROOT
from tests.support.fakes import modal as fake_modal
from tests.support.fakes.clock import Clock
from tests.support.fakes.modal import exception as fake_exc

MODELS = parse_models("""
[models."meta-llama/Llama-3.1-8B"]
engine = "vllm"
options = {model = "meta-llama/Llama-3.1-8B"}
scaling = {backend = "modal", max_replicas = 4, idle_cooldown_s = 45}
modal = {gpu = "L4"}
""")
MODEL = "meta-llama/Llama-3.1-8B"
CLS = "Worker_meta_llama_Llama_3_1_8B"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(clock, tmp_path, monkeypatch):
    fake_modal.world.reset()
    fake_modal.world.clock = clock
    monkeypatch.setenv("INFERQ_FAKE_MODAL_LOG", str(tmp_path / "modal.jsonl"))
    yield fake_modal.world
    fake_modal.world.reset()


def _calls(tmp_path, op: str | None = None) -> list[dict]:
    path = tmp_path / "modal.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [c for c in lines if op is None or c["op"] == op]


def _backend(r, keys, clock) -> ModalBackend:
    return ModalBackend(r, keys, MODELS, app_name="inferq", modal_module=fake_modal, clock=clock)


async def _ids(r, keys) -> list[str]:
    return sorted(k.decode() for k in await r.hkeys(keys.modal_calls(MODEL)))


async def test_spawns_counts_and_cancels_runs_with_the_modal_api(r, keys, world, clock, tmp_path):
    backend = _backend(r, keys, clock)
    assert await backend.replicas(MODEL) == 0 and _calls(tmp_path) == []

    assert await backend.scale(MODEL, 3) == 3
    spawns = _calls(tmp_path, "spawn")
    assert [(c["app"], c["cls"], c["kwargs"], c["error"]) for c in spawns] == [
        ("inferq", CLS, {"idle_exit_s": 45.0}, None)
    ] * 3
    first, second, third = (c["id"] for c in spawns)
    assert await _ids(r, keys) == sorted([first, second, third])

    world.finish(second, {"completed": 7})  # that run ended by itself (its streams went idle)
    assert await backend.replicas(MODEL) == 2
    assert await _ids(r, keys) == sorted([first, third])

    assert await backend.scale(MODEL, 1) == 1  # the newest run is cancelled: its container's worker drains
    assert [c["id"] for c in _calls(tmp_path, "cancel")] == [third]
    assert await _ids(r, keys) == [first]


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("CUDA error: out of memory"),
        OSError("gated repo"),
        fake_exc.RemoteError("the function call was cancelled"),
        fake_exc.FunctionTimeoutError("24h"),
        fake_exc.InternalFailure("container died"),
        fake_exc.OutputExpiredError(),
        fake_exc.ExecutionError("cannot unpickle"),
        fake_exc.NotFoundError("no such call"),
    ],
)
async def test_a_run_that_failed_in_modal_has_ended(r, keys, world, clock, exc):
    backend = _backend(r, keys, clock)
    await backend.scale(MODEL, 2)
    failed, other = await _ids(r, keys)
    world.fail(failed, exc)
    assert await backend.replicas(MODEL) == 1
    assert await _ids(r, keys) == [other]


@pytest.mark.parametrize(
    "exc",
    [
        fake_exc.ConnectionError("Could not connect to the Modal server."),
        fake_exc.AuthError("token"),
        fake_exc.ResourceExhaustedError("rate limit"),
        fake_exc.ServiceError("UNAVAILABLE"),
        fake_exc.InternalError("INTERNAL"),
        fake_exc.ClientClosed(),
        fake_exc.TimeoutError("the operation timed out after repeated failures"),
    ],
)
async def test_a_client_error_while_polling_keeps_every_run(r, keys, world, clock, tmp_path, exc):
    backend = _backend(r, keys, clock)
    await backend.scale(MODEL, 2)
    ids = await _ids(r, keys)
    world.fail_next("get", exc)
    assert await backend.replicas(MODEL) == 2
    assert await backend.scale(MODEL, 4) == 2  # backing off: no spawn on top of runs it could not check
    assert await _ids(r, keys) == ids and len(_calls(tmp_path, "spawn")) == 2


def test_the_classification_holds_for_the_real_modal_exceptions():
    """The fake's classes have the real names and bases, so the backend sorts the real ones alike."""
    real = pytest.importorskip("modal.exception")
    for name in (
        "RemoteError",
        "FunctionTimeoutError",
        "InternalFailure",
        "OutputExpiredError",
        "ExecutionError",
        "NotFoundError",
        "ConnectionError",
        "AuthError",
        "ResourceExhaustedError",
        "ServiceError",
        "InternalError",
        "ClientClosed",
        "TimeoutError",
        "InvalidError",
        "PermissionDeniedError",
    ):
        fake_cls, real_cls = getattr(fake_exc, name), getattr(real, name)
        assert [b.__name__ for b in fake_cls.__mro__] == [b.__name__ for b in real_cls.__mro__], name
        assert poll_outcome(fake_cls("x"), fake_exc) is poll_outcome(real_cls("x"), real), name
    assert poll_outcome(real.ConnectionError("down"), real) is Outcome.UNKNOWN
    assert poll_outcome(real.RemoteError("terminated"), real) is Outcome.ENDED
    assert poll_outcome(TimeoutError(), real) is Outcome.RUNNING  # get(timeout=0) with no output yet
    grpclib = pytest.importorskip("grpclib")
    assert poll_outcome(grpclib.GRPCError(grpclib.Status.UNAVAILABLE, "down"), real) is Outcome.UNKNOWN


async def test_a_minute_long_connection_error_spawns_nothing_and_loses_no_run(r, keys, world, clock, tmp_path):
    backend = _backend(r, keys, clock)
    await backend.scale(MODEL, 2)
    ids = await _ids(r, keys)
    world.fail_connection(60)
    world.finish(ids[0])  # one run ends during the outage: nobody can know until Modal answers

    for _ in range(120):  # a minute of half-second ticks that want 4 replicas
        assert await backend.replicas(MODEL) == 2
        assert await backend.scale(MODEL, 4) == 2
        clock.now += 0.5
    assert await _ids(r, keys) == ids and len(_calls(tmp_path, "spawn")) == 2
    # retried after 1, 2, 4, 8, 16 and 30 s, not at every tick
    assert [c["error"] for c in _calls(tmp_path, "get")] == ["ConnectionError"] * 6
    failures = (await model_scaling(r, keys, MODELS.get(MODEL))).failures
    assert failures.count == 6 and failures.last_error.startswith("ConnectionError")
    assert failures.next_attempt_at == pytest.approx(1_800_000_000.0 + 31 + 30)

    clock.now = 1_800_000_000.0 + 61  # the backoff ends after Modal is back
    assert await backend.replicas(MODEL) == 1
    assert await backend.scale(MODEL, 4) == 4
    assert len(_calls(tmp_path, "spawn")) == 5 and len(await _ids(r, keys)) == 4
    assert (await model_scaling(r, keys, MODELS.get(MODEL))).failures is None


async def test_a_spawn_whose_outcome_is_unknown_backs_off(r, keys, world, clock, tmp_path):
    backend = _backend(r, keys, clock)
    start = clock.now
    world.fail_next("spawn", fake_exc.ServiceError("DEADLINE_EXCEEDED"))
    world.fail_next("spawn", fake_exc.ServiceError("DEADLINE_EXCEEDED"))
    ticks = []
    for _ in range(7):  # ticks that want 3 replicas: (seconds, spawn calls so far, replicas reached)
        reached = await backend.scale(MODEL, 3)
        ticks.append((clock.now - start, len(_calls(tmp_path, "spawn")), reached))
        clock.now += 0.5
    # fails at 0 s (no id recorded, no further spawn that tick), waits 1 s, fails, waits 2 s, spawns 3
    assert ticks == [(0.0, 1, 0), (0.5, 1, 0), (1.0, 2, 0), (1.5, 2, 0), (2.0, 2, 0), (2.5, 2, 0), (3.0, 5, 3)]
    assert len(await _ids(r, keys)) == 3
    assert (await model_scaling(r, keys, MODELS.get(MODEL))).failures is None


async def test_a_failing_spawn_shows_in_the_models_api(r, keys, world, clock):
    backend = _backend(r, keys, clock)
    world.fail_next("spawn", fake_exc.NotFoundError("App 'inferq' not found"))
    assert await backend.scale(MODEL, 1) == 0
    failures = (await model_scaling(r, keys, MODELS.get(MODEL))).failures
    assert (failures.count, failures.last_error, failures.last_exit_status) == (
        1,
        "NotFoundError: App 'inferq' not found",
        None,
    )
    assert (failures.last_at, failures.next_attempt_at) == (clock.now, clock.now + 1)


async def test_a_new_backend_adopts_the_recorded_runs(r, keys, world, clock, tmp_path):
    await _backend(r, keys, clock).scale(MODEL, 2)
    ids = await _ids(r, keys)

    leader = _backend(r, keys, clock)  # another dispatcher took the scaling lease
    world.fail_next("get", fake_exc.ConnectionError("Could not connect to the Modal server."))
    assert await leader.scale(MODEL, 3) == 2  # it could not check them: they count, nothing is spawned
    clock.now += 1
    assert await leader.replicas(MODEL) == 2
    assert await leader.scale(MODEL, 3) == 3
    assert len(_calls(tmp_path, "spawn")) == 3 and set(ids) < set(await _ids(r, keys))


async def test_a_new_backend_continues_the_backoff(r, keys, world, clock, tmp_path):
    world.fail_next("spawn", fake_exc.ResourceExhaustedError("rate limit"))
    assert await _backend(r, keys, clock).scale(MODEL, 1) == 0
    leader = _backend(r, keys, clock)
    assert await leader.scale(MODEL, 1) == 0 and len(_calls(tmp_path, "spawn")) == 1
    clock.now += 1
    assert await leader.scale(MODEL, 1) == 1


async def test_a_failed_cancel_keeps_the_run(r, keys, world, clock, tmp_path):
    backend = _backend(r, keys, clock)
    await backend.scale(MODEL, 2)
    ids = await _ids(r, keys)
    world.fail_next("cancel", fake_exc.ConnectionError("Could not connect to the Modal server."))
    assert await backend.scale(MODEL, 1) == 2 and await _ids(r, keys) == ids
    clock.now += 1
    assert await backend.scale(MODEL, 1) == 1
    assert len(_calls(tmp_path, "cancel")) == 2 and len(await _ids(r, keys)) == 1


def test_the_fake_is_the_modal_package_of_a_subprocess(tmp_path):
    """The contract another process relies on: `tests/support/fakes` on PYTHONPATH makes it `modal`, and
    its calls land in INFERQ_FAKE_MODAL_LOG."""
    script = (
        "import asyncio, modal\n"
        "async def main():\n"
        "    call = await modal.Cls.from_name('inferq', 'Worker_m')().run.spawn.aio(idle_exit_s=3)\n"
        "    try:\n"
        "        await modal.FunctionCall.from_id(call.object_id).get.aio(timeout=0)\n"
        "    except TimeoutError:\n"
        "        await modal.FunctionCall.from_id(call.object_id).cancel.aio()\n"
        "    print(modal.__file__)\n"
        "asyncio.run(main())\n"
    )
    log_path = tmp_path / "calls.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'tests' / 'support' / 'fakes'}{os.pathsep}{ROOT}",
        "INFERQ_FAKE_MODAL_LOG": str(log_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(ROOT / "tests" / "support" / "fakes" / "modal" / "__init__.py")
    calls = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(c["op"], c["app"], c["cls"], c["kwargs"]) for c in calls] == [
        ("spawn", "inferq", "Worker_m", {"idle_exit_s": 3}),
        ("get", "inferq", "Worker_m", {"timeout": 0}),
        ("cancel", "inferq", "Worker_m", {}),
    ]
    assert calls[0]["id"] == calls[1]["id"] == calls[2]["id"] and calls[0]["id"].startswith("fc-")
