"""The `modal` scaling backend against a stand-in for the Modal client at that boundary only,
asserting the exact Modal 1.6 calls it makes; call ids are kept in the real Redis."""

from __future__ import annotations

import itertools

import pytest

from services.dispatcher.scaling.modal_backend import ModalBackend
from shared.models_config import parse_models

MODELS = parse_models("""
[models."meta-llama/Llama-3.1-8B"]
engine = "vllm"
options = {model = "meta-llama/Llama-3.1-8B"}
scaling = {backend = "modal", max_replicas = 4, idle_cooldown_s = 45}
modal = {gpu = "L4"}
""")
MODEL = "meta-llama/Llama-3.1-8B"


class FakeModal:
    """Records calls in the shape of the Modal 1.6 API: Cls.from_name(app, cls)() → instance;
    instance.run.spawn.aio(**kw) → FunctionCall; FunctionCall.from_id(id).get.aio(timeout=0) /
    .cancel.aio()."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.running: set[str] = set()
        ids = itertools.count(1)
        fake = self

        class _Aio:
            def __init__(self, fn):
                self.aio = fn

        class FunctionCall:
            def __init__(self, object_id):
                self.object_id = object_id
                self.get = _Aio(self._get)
                self.cancel = _Aio(self._cancel)

            @staticmethod
            def from_id(object_id):
                fake.calls.append(("FunctionCall.from_id", object_id))
                return FunctionCall(object_id)

            async def _get(self, timeout=None):
                fake.calls.append(("get", self.object_id, timeout))
                if self.object_id in fake.running:
                    raise TimeoutError()
                return {"completed": 1}

            async def _cancel(self):
                fake.calls.append(("cancel", self.object_id))
                fake.running.discard(self.object_id)

        class _Instance:
            def __init__(self):
                self.run = type("M", (), {})()
                self.run.spawn = _Aio(self._spawn)

            async def _spawn(self, **kwargs):
                call_id = f"fc-{next(ids)}"
                fake.calls.append(("run.spawn", kwargs))
                fake.running.add(call_id)
                return FunctionCall(call_id)

        class Cls:
            @staticmethod
            def from_name(app_name, class_name):
                fake.calls.append(("Cls.from_name", app_name, class_name))
                return _Instance

        self.Cls = Cls
        self.FunctionCall = FunctionCall


@pytest.fixture
def fake():
    return FakeModal()


async def test_spawns_counts_and_cancels_runs_with_the_modal_api(r, keys, fake):
    backend = ModalBackend(r, keys, MODELS, app_name="inferq", modal_module=fake)
    assert await backend.replicas(MODEL) == 0 and fake.calls == []

    await backend.scale(MODEL, 3)
    assert fake.calls == [("Cls.from_name", "inferq", "Worker_meta_llama_Llama_3_1_8B")] + [("run.spawn", {"idle_exit_s": 45.0})] * 3
    assert sorted(k.decode() for k in await r.hkeys(keys.modal_calls(MODEL))) == ["fc-1", "fc-2", "fc-3"]

    fake.calls.clear()
    fake.running.discard("fc-2")  # that run ended by itself (its streams went idle)
    assert await backend.replicas(MODEL) == 2
    assert [c for c in fake.calls if c[0] == "get"] == [("get", "fc-1", 0), ("get", "fc-2", 0), ("get", "fc-3", 0)]
    assert sorted(k.decode() for k in await r.hkeys(keys.modal_calls(MODEL))) == ["fc-1", "fc-3"]

    fake.calls.clear()
    await backend.scale(MODEL, 1)  # the newest run is cancelled: its container's worker drains
    assert ("cancel", "fc-3") in fake.calls and ("cancel", "fc-1") not in fake.calls
    assert [k.decode() for k in await r.hkeys(keys.modal_calls(MODEL))] == ["fc-1"]

    # a restarted dispatcher knows which runs it owns
    again = ModalBackend(r, keys, MODELS, app_name="inferq", modal_module=fake)
    assert await again.replicas(MODEL) == 1
    fake.calls.clear()
    await again.scale(MODEL, 2)
    assert fake.calls[-1] == ("run.spawn", {"idle_exit_s": 45.0})


async def test_a_failed_run_no_longer_counts(r, keys, fake):
    backend = ModalBackend(r, keys, MODELS, modal_module=fake)
    await backend.scale(MODEL, 2)

    async def crashed(self, timeout=None):
        raise RuntimeError("container exited with status 3")

    fake.FunctionCall._get = crashed
    assert await backend.replicas(MODEL) == 0
    assert await r.hlen(keys.modal_calls(MODEL)) == 0
