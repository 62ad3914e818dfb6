"""The Modal deployment, offline: with `modal` installed and no credentials the app imports, and its
classes carry the GPU, volumes, secrets and scaling settings of the models file; the image is built
as declared (CUDA base, pinned vLLM, the project's requirements). The container body it delegates to
runs here for real, on the dummy engine and a real Redis."""

from __future__ import annotations

import asyncio
import importlib
import sys

import msgspec
import pytest

from shared.core.settings import Settings
from shared.jobs.store import JobStore
from shared.redis.keys import PAYLOAD_FIELD, WORKER_GROUP
from shared.wire.messages import InferenceRequest, SamplingParams
from tests.support.published import published_results

MODELS = """
[models."meta-llama/Llama-3.1-8B-Instruct"]
engine = "vllm"
max_inflight = 128
[models."meta-llama/Llama-3.1-8B-Instruct".options]
model = "meta-llama/Llama-3.1-8B-Instruct"
[models."meta-llama/Llama-3.1-8B-Instruct".modal]
gpu = "L40S"
max_containers = 4
scaledown_window_s = 120

[models.qwen-72b]
engine = "vllm"
[models.qwen-72b.options]
model = "Qwen/Qwen2.5-72B-Instruct"
tensor_parallel_size = 4
[models.qwen-72b.scaling]
min_replicas = 1
max_replicas = 2
[models.qwen-72b.modal]
gpu = "H100:4"
min_containers = 1

[models.vllm-cpu]
engine = "vllm"
[models.vllm-cpu.options]
model = "Qwen/Qwen2.5-0.5B-Instruct"

[models.echo]
engine = "dummy"

[models.echo-gpu]
engine = "dummy"
max_inflight = 8
[models.echo-gpu.options]
latency_ms = 1
[models.echo-gpu.modal]
gpu = "T4"
memory_snapshot = true
"""


@pytest.fixture
def modal_app(tmp_path, monkeypatch):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    monkeypatch.setenv("INFERQ_MODELS", str(models))
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    sys.modules.pop("services.inference.modal_app", None)
    module = importlib.import_module("services.inference.modal_app")
    yield module
    sys.modules.pop("services.inference.modal_app", None)


def _spec(cls):
    return cls._get_class_service_function()._spec_


def test_one_class_per_gpu_model_with_its_settings(modal_app):
    classes = modal_app.WORKER_CLASSES
    # a modal table makes the class, whatever the engine; the vllm model without one runs elsewhere
    assert sorted(classes) == ["echo-gpu", "meta-llama/Llama-3.1-8B-Instruct", "qwen-72b"]
    assert not hasattr(modal_app, "Worker_vllm_cpu") and not hasattr(modal_app, "Worker_echo")
    assert modal_app.app.name == "inferq"
    llama, qwen = classes["meta-llama/Llama-3.1-8B-Instruct"], classes["qwen-72b"]
    assert modal_app.Worker_meta_llama_Llama_3_1_8B_Instruct is llama  # importable by name in a container
    assert _spec(llama).gpus == "L40S" and _spec(qwen).gpus == "H100:4"
    for cls in (llama, qwen):
        spec = _spec(cls)
        assert {path: vol.name for path, vol in spec.volumes.items()} == {
            "/root/.cache/huggingface": "inferq-hf-cache",
            "/root/.cache/vllm": "inferq-vllm-cache",
        }
        assert [s.name for s in spec.secrets] == ["inferq-redis"]
        assert set(cls._get_method_names()) == {"run"}


def _closure(obj) -> dict:
    """What a lazily loaded modal object (a Secret, a Function) will send when it is created."""
    import inspect

    from modal._utils.async_utils import synchronizer

    return inspect.getclosurevars(synchronizer._translate_in(obj)._load).nonlocals


def test_secrets_name_the_keys_the_containers_need(modal_app):
    [redis] = _spec(modal_app.WORKER_CLASSES["qwen-72b"]).secrets
    assert _closure(redis)["required_keys"] == ["INFERQ_REDIS_URL"]  # a secret without it fails the deploy


def test_snapshot_settings_reach_modal_and_split_the_start(modal_app):
    from modal._partial_function import _PartialFunctionFlags
    from modal._utils.async_utils import synchronizer

    from shared.catalog.models import load_models, parse_models

    models = load_models(modal_app.MODELS_FILE).models
    snap, plain = modal_app.class_options(models["echo-gpu"]), modal_app.class_options(models["qwen-72b"])
    assert (snap["enable_memory_snapshot"], snap["experimental_options"]) == (True, None)
    assert (plain["enable_memory_snapshot"], plain["experimental_options"]) == (False, None)

    def hooks(cls) -> dict[str, str]:
        user_cls = cls._get_user_cls()
        flags = {}
        for name in ("load", "prepare", "start"):
            partial = getattr(user_cls, name, None)
            if partial is not None:
                f = synchronizer._translate_in(partial).flags
                flags[name] = "before snapshot" if f & _PartialFunctionFlags.ENTER_PRE_SNAPSHOT else "after snapshot"
        return flags

    # imports before Modal's snapshot, the model's load and Redis after it; one hook without snapshots
    assert hooks(modal_app.WORKER_CLASSES["echo-gpu"]) == {"prepare": "before snapshot", "start": "after snapshot"}
    assert hooks(modal_app.WORKER_CLASSES["qwen-72b"]) == {"load": "after snapshot"}
    gpu = parse_models(MODELS.replace('gpu = "H100:4"', 'gpu = "H100:4"\nmemory_snapshot = true\ngpu_snapshot = true'))
    options = modal_app.class_options(gpu.get("qwen-72b"))
    assert (options["enable_memory_snapshot"], options["experimental_options"]) == (True, {"enable_gpu_snapshot": True})


def test_a_gpu_snapshot_needs_a_memory_snapshot_and_the_vllm_engine(tmp_path, monkeypatch):
    from shared.catalog.models import ModelsFileError, parse_models

    with pytest.raises(ModelsFileError, match="modal.gpu_snapshot needs modal.memory_snapshot = true"):
        parse_models(MODELS.replace('gpu = "H100:4"', 'gpu = "H100:4"\ngpu_snapshot = true'))
    with pytest.raises(ModelsFileError, match="modal.gpu_snapshot needs the vllm engine"):
        parse_models(MODELS.replace("memory_snapshot = true", "memory_snapshot = true\ngpu_snapshot = true"))
    both = parse_models(MODELS.replace('gpu = "H100:4"', 'gpu = "H100:4"\nmemory_snapshot = true\ngpu_snapshot = true'))
    assert both.get("qwen-72b").modal.gpu_snapshot


def test_scaling_settings_come_from_the_models_file(modal_app):
    from shared.catalog.models import load_models

    models = load_models(modal_app.MODELS_FILE).models
    llama = modal_app.class_options(models["meta-llama/Llama-3.1-8B-Instruct"])
    qwen = modal_app.class_options(models["qwen-72b"])
    assert (llama["gpu"], llama["min_containers"], llama["max_containers"], llama["scaledown_window"]) == (
        "L40S",
        0,
        4,
        120,
    )
    assert (qwen["gpu"], qwen["min_containers"], qwen["max_containers"], qwen["scaledown_window"]) == (
        "H100:4",
        1,
        2,
        300,
    )


def test_the_image_is_cuda_devel_with_pinned_vllm_and_fast_hub_downloads(tmp_path, monkeypatch):
    """Spies on the image builder calls the module makes (the layers themselves are lazy)."""
    import modal

    seen: dict[str, list] = {"registry": [], "install": [], "env": []}
    from_registry, uv_pip_install, env = modal.Image.from_registry, modal.Image.uv_pip_install, modal.Image.env

    def spy_registry(tag, *args, **kwargs):
        seen["registry"].append((tag, kwargs.get("add_python")))
        return from_registry(tag, *args, **kwargs)

    def spy_install(self, *packages, **kwargs):
        seen["install"].append(packages)
        return uv_pip_install(self, *packages, **kwargs)

    def spy_env(self, variables):
        seen["env"].append(dict(variables))
        return env(self, variables)

    monkeypatch.setattr(modal.Image, "from_registry", staticmethod(spy_registry))
    monkeypatch.setattr(modal.Image, "uv_pip_install", spy_install)
    monkeypatch.setattr(modal.Image, "env", spy_env)
    monkeypatch.setattr(modal.Image, "debian_slim", None)  # slim images lack the CUDA toolkit
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    monkeypatch.setenv("INFERQ_MODELS", str(models))
    sys.modules.pop("services.inference.modal_app", None)
    try:
        module = importlib.import_module("services.inference.modal_app")
    finally:
        sys.modules.pop("services.inference.modal_app", None)

    [(tag, python)] = seen["registry"]
    assert tag.startswith("nvidia/cuda:") and "-devel-ubuntu" in tag and python == "3.11"
    [packages] = seen["install"]
    assert packages[0] == f"vllm=={module.VLLM_VERSION}" and module.VLLM_VERSION.count(".") == 2
    import tomllib

    from tests.conftest import ROOT

    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert list(packages[1:]) == required  # msgspec, redis, httpx, uvloop, ... exactly as the project pins them
    assert not any("hf_transfer" in p or "hf-transfer" in p for p in packages)
    [variables] = seen["env"]
    assert variables["HF_XET_HIGH_PERFORMANCE"] == "1" and "HF_HUB_ENABLE_HF_TRANSFER" not in variables
    assert variables["INFERQ_MODELS"] == module.REMOTE_MODELS_FILE


def test_the_xet_setting_is_the_one_the_hub_client_reads():
    from huggingface_hub import constants

    assert hasattr(constants, "HF_XET_HIGH_PERFORMANCE")


def test_a_bad_modal_setting_is_refused_when_the_app_is_defined(tmp_path, monkeypatch):
    models = tmp_path / "models.toml"
    models.write_text(MODELS.replace("min_containers = 1", "min_containers = 5"))  # above max_containers (2)
    monkeypatch.setenv("INFERQ_MODELS", str(models))
    sys.modules.pop("services.inference.modal_app", None)
    from shared.catalog.models import ModelsFileError

    with pytest.raises(
        ModelsFileError, match=r"model 'qwen-72b': modal.min_containers \(5\) exceeds modal.max_containers \(2\)"
    ):
        importlib.import_module("services.inference.modal_app")
    sys.modules.pop("services.inference.modal_app", None)


async def test_the_container_body_serves_until_idle_and_drains(r, keys, redis_server, tmp_path, monkeypatch):
    from services.inference.container import ContainerWorker
    from services.inference.engines.dummy import DummyEngine

    loads, stops = [], []
    start, stop = DummyEngine.start, DummyEngine.stop

    async def counted_start(self):
        loads.append(self)
        await start(self)

    async def counted_stop(self):
        stops.append(self)
        await stop(self)

    monkeypatch.setattr(DummyEngine, "start", counted_start)
    monkeypatch.setattr(DummyEngine, "stop", counted_stop)
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    settings = Settings(redis_url=redis_server.url, models_path=str(models), shutdown_grace_s=1.0)
    await JobStore(r, keys).create("job_m", 0, {"echo-gpu": 20}, {}, [])
    enc = msgspec.msgpack.Encoder()
    for i in range(20):
        req = InferenceRequest(
            request_id=f"req_{i}",
            job_id="job_m",
            custom_id=f"c{i}",
            model="echo-gpu",
            accepted_ms=0,
            prompt=f"w{i} x y",
            params=SamplingParams(max_tokens=2),
        )
        await r.xadd(keys.model_stream("echo-gpu", "batch"), {PAYLOAD_FIELD: enc.encode(req)})
    container = ContainerWorker("echo-gpu", settings)
    await container.start()
    engine = container.engine
    assert loads == [engine]
    first = await asyncio.wait_for(container.run(idle_exit_s=0.3), 10)  # returns once the stream is idle
    assert first["served"] == 20
    second = await asyncio.wait_for(container.run(idle_exit_s=0.3), 10)  # same container, same engine
    assert second["served"] == 0 and container.engine is engine and loads == [engine]  # loaded once
    results = await published_results(r, keys)
    assert sorted(e.line.custom_id for e in results) == sorted(f"c{i}" for i in range(20))
    assert (await r.xpending(keys.model_stream("echo-gpu", "batch"), WORKER_GROUP))["pending"] == 0
    assert stops == []  # runs ending does not release the model

    running = asyncio.create_task(container.run(idle_exit_s=60))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(container.drain(), 10)  # the container is going away: the run ends
    assert running.done() and stops == [engine]
