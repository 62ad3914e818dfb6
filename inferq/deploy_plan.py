"""What `make deploy` would put on Modal, worked out offline from a models file.

The plan comes from the deployment module itself (services/inference/modal_app.py, imported with
INFERQ_MODELS pointing at the file; defining the app needs no Modal account), so what it prints is
what `modal deploy` would send, not a second reading of the models file that could drift from it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from msgspec import Struct

from inferq.modal_files import container_files, import_as_deployed
from shared.catalog.models import ModelConfig, load_models, modal_class_name
from shared.catalog.pricing import hourly_price

APP_MODULE = "services.inference.modal_app"
# Model-hub organisations whose models need an accepted licence (and so a token) to download.
GATED_ORGS = ("meta-llama", "mistralai", "google", "CohereForAI", "CohereLabs", "tiiuae", "bigcode")
# What a password must not hold raw inside a URL (RFC 3986 delimiters and the escape character).
URL_DELIMITERS = set("@/:?#[]%")


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
    memory_snapshot: bool
    gpu_snapshot: bool
    files: int  # what a container gets from this machine: the code, its Lua scripts, the models file
    lua_scripts: int
    idle_billed_s: float  # after its last work a container is billed this long (run idle + scaledown)
    idle_cost_usd: float | None  # that window at the GPU's list price
    notes: list[str]
    warnings: list[str]


class DeployPlan(Struct, kw_only=True):
    app: str
    models_file: str
    image: str
    classes: list[ClassPlan]
    elsewhere: dict[str, str]  # models not on Modal -> who runs their workers
    warnings: list[str]


@contextmanager
def _deployment(models_file: Path):
    """The deployment module as `modal deploy` imports it for this file (as a script); forgotten
    afterwards so a later import reads its own models file."""
    saved = os.environ.get("INFERQ_MODELS")
    try:
        module = import_as_deployed(models_file)
        yield module
    finally:
        sys.modules.pop("modal_app", None)
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


def _warnings(cfg: ModelConfig, hf_secret: str) -> list[str]:
    """What would make the model's containers fail although the deploy succeeds."""
    out = []
    source = str(getattr(cfg.engine_options(), "model", "") or "")
    org = source.split("/")[0] if "/" in source and not source.startswith(("/", ".", "~")) else ""
    if org in GATED_ORGS and not hf_secret:
        out.append(
            f"{source} is gated on the model hub and no HF secret is set: its containers cannot download it; "
            f"modal secret create huggingface HF_TOKEN=hf_... and export INFERQ_MODAL_HF_SECRET=huggingface"
        )
    return out


def redis_url_warnings(env: dict[str, str]) -> list[str]:
    """A Redis password with URL delimiters breaks the URL built from it (docs/modal.md, step 2), unless
    escaped; checked on what this shell holds, since the secret itself is only on Modal."""
    out = []
    password = env.get("INFERQ_REDIS_PASSWORD", "")
    if URL_DELIMITERS & set(password):
        out.append(
            "INFERQ_REDIS_PASSWORD holds a character a URL must escape (@ / : ? # [ ] %): put it in the URL "
            "percent-encoded, as step 2 of docs/modal.md does, or the containers connect to the wrong host"
        )
    url = env.get("INFERQ_REDIS_URL", "")
    if url:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  # raises on a port that is not a number
            bad = not parts.hostname or "/" in (parts.password or "") or "@" in (parts.password or "")
        except ValueError:
            bad = True
        if bad:
            out.append(
                "INFERQ_REDIS_URL does not parse as rediss://:PASSWORD@HOST:PORT/DB: escape the password "
                "(urllib.parse.quote(password, safe=''))"
            )
    return out


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
        for name, modal_cls in module.WORKER_CLASSES.items():
            cfg = config.models[name]
            assert cfg.modal is not None  # only models with a modal table are deployed
            options = module.class_options(cfg)
            files = container_files(modal_cls)
            idle_s = cfg.scaling.idle_cooldown_s + cfg.modal.scaledown_window_s
            per_hour = hourly_price(cfg)
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
                    memory_snapshot=cfg.modal.memory_snapshot,
                    gpu_snapshot=cfg.modal.gpu_snapshot,
                    files=len(files),
                    lua_scripts=sum(1 for f in files if f.suffix == ".lua"),
                    idle_billed_s=idle_s,
                    idle_cost_usd=round(per_hour * idle_s / 3600, 4) if per_hour is not None else None,
                    notes=_notes(cfg),
                    warnings=_warnings(cfg, module.HF_SECRET),
                )
            )
        plan = DeployPlan(
            app=module.app.name,
            models_file=str(models_file),
            image=_image(module),
            classes=classes,
            elsewhere={n: str(c.scaling.backend) for n, c in config.models.items() if c.modal is None},
            warnings=redis_url_warnings(dict(os.environ)),
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
            f"  snapshots         {_snapshots(c)}",
            f"  idle billing      {_idle(c)}",
            f"  container files   {c.files} from this checkout, {c.lua_scripts} of them Lua scripts",
            *(f"  note              {n}" for n in c.notes),
            *(f"  warning           {w}" for w in c.warnings),
        ]
    if plan.warnings:
        lines += [""] + [f"warning: {w}" for w in plan.warnings]
    if plan.elsewhere:
        lines += ["", "not on Modal:"]
        lines += [
            f"  {name}: {backend} ({ELSEWHERE.get(backend, backend)})" for name, backend in plan.elsewhere.items()
        ]
    return "\n".join(lines)


def _snapshots(c: ClassPlan) -> str:
    if c.gpu_snapshot:
        return "memory and GPU: new containers restore vLLM loaded and asleep, then wake it"
    if c.memory_snapshot:
        return "memory: new containers restore the engine's imports, then load the weights"
    return "off (modal.memory_snapshot, modal.gpu_snapshot)"


def _idle(c: ClassPlan) -> str:
    cost = f", ~${c.idle_cost_usd:.3f} at list price" if c.idle_cost_usd is not None else ""
    return (
        f"up to {c.idle_billed_s:g} s after its last work (scaling.idle_cooldown_s, then "
        f"modal.scaledown_window_s){cost} per scale-down"
    )


def deploy(models_file: str | Path) -> int:
    """`modal deploy` of the deployment module for this models file; returns its exit status."""
    spec = importlib.util.find_spec(APP_MODULE)
    assert spec is not None and spec.origin is not None, f"{APP_MODULE} is not importable"
    module_path = Path(spec.origin)
    env = {**os.environ, "INFERQ_MODELS": str(Path(models_file).resolve())}
    return subprocess.run([sys.executable, "-m", "modal", "deploy", str(module_path)], env=env).returncode
