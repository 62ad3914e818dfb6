"""What `make deploy` would put on Modal, worked out offline from a models file.

The plan comes from the deployment module itself (services/inference/modal_app.py, imported with
INFERQ_MODELS pointing at the file; defining the app needs no Modal account), so what it prints is
what `modal deploy` would send, not a second reading of the models file that could drift from it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from msgspec import Struct

from shared.models_config import ModelConfig, load_models, modal_class_name

APP_MODULE = "services.inference.modal_app"


class NothingToDeploy(ValueError):
    """The models file is valid but no model in it runs on Modal."""


class ClassPlan(Struct, kw_only=True):
    model: str
    cls: str
    gpu: str
    min_containers: int
    max_containers: int
    scaledown_window_s: int
    timeout_s: int
    startup_timeout_s: int
    secrets: list[str]
    volumes: dict[str, str]  # mount path -> Modal Volume name
    driven_by: str
    notes: list[str]


class DeployPlan(Struct, kw_only=True):
    app: str
    models_file: str
    image: str
    classes: list[ClassPlan]
    elsewhere: dict[str, str]  # models not on Modal -> who runs their workers


@contextmanager
def _deployment(models_file: Path):
    """The deployment module as `modal deploy` would import it for this file; forgotten afterwards
    so a later import reads its own models file."""
    saved = os.environ.get("INFERQ_MODELS")
    os.environ["INFERQ_MODELS"] = str(models_file)
    sys.modules.pop(APP_MODULE, None)
    try:
        yield importlib.import_module(APP_MODULE)
    finally:
        sys.modules.pop(APP_MODULE, None)
        if saved is None:
            os.environ.pop("INFERQ_MODELS", None)
        else:
            os.environ["INFERQ_MODELS"] = saved


def _driven_by(cfg: ModelConfig) -> str:
    s = cfg.scaling
    kept = f"{s.min_replicas} kept going" if s.min_replicas else f"none after {s.idle_cooldown_s:g} s without work"
    return (
        f"{s.backend}: the dispatcher spawns runs by queue depth (one per {s.target_per_replica} waiting "
        f"requests), up to {s.max_replicas} at a time; {kept}"
    )


def _notes(cfg: ModelConfig) -> list[str]:
    runs, cap = cfg.scaling.max_replicas, cfg.modal_max_containers
    assert cap is not None  # only models with a modal table are planned
    if runs < cap:
        return [
            f"scaling.max_replicas is {runs}: at most {runs} of the {cap} containers is ever used; raise it to use them"
        ]
    if runs > cap:
        return [f"runs beyond {cap} (modal.max_containers) wait for a free container"]
    return []


def _image(module: ModuleType) -> str:
    env = " ".join(f"{k}={v}" for k, v in module.IMAGE_ENV.items())
    return (
        f"{module.CUDA_IMAGE} + Python {module.PYTHON_VERSION}; vllm=={module.VLLM_VERSION} and the "
        f"{len(module.project_requirements())} requirements of pyproject.toml; env {env}"
    )


def build_plan(models_file: str | Path) -> DeployPlan:
    """Raises ModelsFileError for a file the services would refuse, NothingToDeploy when no model
    has a modal table, ImportError without the `modal` package."""
    path = Path(models_file).resolve()
    config = load_models(path)
    with _deployment(path) as module:
        holds = {module.REDIS_SECRET: "INFERQ_REDIS_URL", module.HF_SECRET: "HF_TOKEN"}  # what each secret must hold
        classes = []
        for name in module.WORKER_CLASSES:
            cfg = config.models[name]
            options = module.class_options(cfg)
            classes.append(
                ClassPlan(
                    model=name,
                    cls=modal_class_name(name),
                    gpu=options["gpu"],
                    min_containers=options["min_containers"],
                    max_containers=options["max_containers"],
                    scaledown_window_s=options["scaledown_window"],
                    timeout_s=options["timeout"],
                    startup_timeout_s=options["startup_timeout"],
                    secrets=[f"{s.name} (holds {holds[s.name]})" for s in options["secrets"]],
                    volumes={p: v.name for p, v in options["volumes"].items()},
                    driven_by=_driven_by(cfg),
                    notes=_notes(cfg),
                )
            )
        plan = DeployPlan(
            app=module.app.name,
            models_file=str(models_file),
            image=_image(module),
            classes=classes,
            elsewhere={n: str(c.scaling.backend) for n, c in config.models.items() if c.modal is None},
        )
    if not plan.classes:
        raise NothingToDeploy(f"nothing to deploy: no model of {models_file} has a [models.NAME.modal] table")
    return plan


ELSEWHERE = {"static": "you start its workers", "local": "the dispatcher starts worker processes on its machine"}


def render(plan: DeployPlan) -> str:
    lines = [f'Modal app "{plan.app}" from {plan.models_file}', f"image: {plan.image}"]
    for c in plan.classes:
        lines += [
            "",
            f"{c.model} -> class {c.cls}",
            f"  gpu               {c.gpu}",
            f"  containers        min {c.min_containers}, max {c.max_containers}",
            f"  scaledown window  {c.scaledown_window_s} s",
            f"  timeout           {c.timeout_s} s per container, {c.startup_timeout_s} s to load the model",
            f"  secrets           {', '.join(c.secrets)}",
            f"  volumes           {', '.join(f'{p} <- {v}' for p, v in c.volumes.items())}",
            f"  driven by         {c.driven_by}",
            *(f"  note              {n}" for n in c.notes),
        ]
    if plan.elsewhere:
        lines += ["", "not on Modal:"]
        lines += [
            f"  {name}: {backend} ({ELSEWHERE.get(backend, backend)})" for name, backend in plan.elsewhere.items()
        ]
    return "\n".join(lines)


def deploy(models_file: str | Path) -> int:
    """`modal deploy` of the deployment module for this models file; returns its exit status."""
    spec = importlib.util.find_spec(APP_MODULE)
    assert spec is not None and spec.origin is not None, f"{APP_MODULE} is not importable"
    module_path = Path(spec.origin)
    env = {**os.environ, "INFERQ_MODELS": str(Path(models_file).resolve())}
    return subprocess.run([sys.executable, "-m", "modal", "deploy", str(module_path)], env=env).returncode
