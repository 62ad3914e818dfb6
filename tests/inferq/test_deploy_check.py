"""`inferq deploy --check` and `make deploy-check`: the Modal deployment planned offline from a models
file, with the real `modal` package and no credentials; a file the services refuse fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferq.cli import app
from tests.conftest import ROOT

MODELS = """
[models."meta-llama/Llama-3.1-8B-Instruct"]
engine = "vllm"
options = {model = "meta-llama/Llama-3.1-8B-Instruct"}
[models."meta-llama/Llama-3.1-8B-Instruct".modal]
gpu = "L40S"
scaledown_window_s = 120
timeout_s = 3600
[models."meta-llama/Llama-3.1-8B-Instruct".scaling]
max_replicas = 4
target_per_replica = 512

[models.qwen-72b]
engine = "vllm"
options = {model = "Qwen/Qwen2.5-72B-Instruct", tensor_parallel_size = 4}
[models.qwen-72b.modal]
gpu = "H100:4"
min_containers = 1
max_containers = 2
memory_snapshot = true
gpu_snapshot = true
[models.qwen-72b.scaling]
min_replicas = 1
max_replicas = 3

[models.vllm-cpu]
engine = "vllm"
options = {model = "Qwen/Qwen2.5-0.5B-Instruct"}

[models.echo]
engine = "dummy"
scaling = {backend = "local"}
"""


@pytest.fixture
def models_file(tmp_path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    return path


@pytest.fixture(autouse=True)
def no_modal_credentials(monkeypatch):
    for var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "INFERQ_MODAL_APP", "INFERQ_MODAL_HF_SECRET"):
        monkeypatch.delenv(var, raising=False)


def _check(models_file, **env):
    return CliRunner().invoke(app, ["deploy", "--check", "--models", str(models_file)], env=env or None)


def test_the_plan_shows_each_modal_model_and_who_drives_it(models_file):
    result = _check(models_file)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f'Modal app "inferq" from {models_file}'
    assert lines[1].startswith("image: nvidia/cuda:") and "-devel-ubuntu" in lines[1] and "+ Python 3.11" in lines[1]
    assert "vllm==0.32.0" in lines[1] and "HF_XET_HIGH_PERFORMANCE=1" in lines[1] and "HF_TRANSFER" not in lines[1]
    llama = lines[
        lines.index("meta-llama/Llama-3.1-8B-Instruct -> class Worker_meta_llama_Llama_3_1_8B_Instruct") + 1 :
    ][:12]
    assert llama == [
        "  gpu               L40S",
        "  containers        min 0, max 4",
        "  scaledown window  120 s",
        "  timeout           3600 s per container, 1200 s to load the model",
        "  secrets           inferq-redis (holds INFERQ_REDIS_URL)",
        "  volumes           /root/.cache/huggingface <- inferq-hf-cache, /root/.cache/vllm <- inferq-vllm-cache",
        "  driven by         modal: the dispatcher spawns runs by queue depth (one per 512 waiting requests), "
        "up to 4 at a time; none after 60 s without work",
        "  snapshots         off (modal.memory_snapshot, modal.gpu_snapshot)",
        # 60 s of a run without work, then the 120 s scaledown window, at L40S's ~$1.95 an hour
        "  idle billing      up to 180 s after its last work (scaling.idle_cooldown_s, then "
        "modal.scaledown_window_s), ~$0.098 at list price per scale-down",
        f"  container files   {_container_files()} from this checkout, {_lua_scripts()} of them Lua scripts",
        "  warning           meta-llama/Llama-3.1-8B-Instruct is gated on the model hub and no HF secret is set: its "
        "containers cannot download it; modal secret create huggingface HF_TOKEN=hf_... and export "
        "INFERQ_MODAL_HF_SECRET=huggingface",
        "",
    ]
    qwen = lines[lines.index("qwen-72b -> class Worker_qwen_72b") + 1 :][:12]
    assert qwen[0] == "  gpu               H100:4" and qwen[1] == "  containers        min 1, max 2"
    assert qwen[6] == (
        "  driven by         modal: the dispatcher spawns runs by queue depth (one per 256 waiting "
        "requests), up to 3 at a time; 1 kept going"
    )
    assert qwen[7] == "  snapshots         memory and GPU: new containers restore vLLM loaded and asleep, then wake it"
    assert qwen[10] == "  note              runs beyond 2 (modal.max_containers) wait for a free container"
    assert not qwen[11].startswith("  warning")  # not a gated organisation
    assert lines[lines.index("not on Modal:") + 1 :] == [
        "  vllm-cpu: static (you start its workers)",
        "  echo: local (the dispatcher starts worker processes on its machine)",
    ]


def _container_files() -> int:
    """The code a container carries: every .py and .lua of shared/ and services/, the deployment
    module again at /root, and the models file."""
    return sum(1 for d in ("shared", "services") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".lua")) + 2


def _lua_scripts() -> int:
    return sum(1 for d in ("shared", "services") for _ in (ROOT / d).rglob("*.lua"))


def test_the_plan_follows_the_deployment_settings_of_the_environment(models_file):
    result = _check(models_file, INFERQ_MODAL_APP="inferq-staging", INFERQ_MODAL_HF_SECRET="huggingface")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f'Modal app "inferq-staging" from {models_file}\n')
    assert "  secrets           inferq-redis (holds INFERQ_REDIS_URL), huggingface (holds HF_TOKEN)" in result.stdout
    assert "warning" not in result.stdout  # the gated model has its token now


@pytest.mark.parametrize("password", ["p@ss", "a/b", "x:y", "100%"])
def test_a_redis_password_a_url_cannot_hold_raw_is_warned_about(models_file, password):
    result = _check(models_file, INFERQ_REDIS_PASSWORD=password, INFERQ_MODAL_HF_SECRET="huggingface")
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.stdout.splitlines() if line.startswith("warning")]
    assert warning.startswith("warning: INFERQ_REDIS_PASSWORD holds a character a URL must escape")


def test_a_redis_url_with_an_unescaped_password_is_warned_about(models_file):
    broken = _check(models_file, INFERQ_REDIS_URL="rediss://:pa/ss@redis.example:6380/0", INFERQ_MODAL_HF_SECRET="hf")
    escaped = _check(
        models_file, INFERQ_REDIS_URL="rediss://:pa%2Fss@redis.example:6380/0", INFERQ_MODAL_HF_SECRET="hf"
    )
    assert "warning: INFERQ_REDIS_URL does not parse as rediss://:PASSWORD@HOST:PORT/DB" in broken.stdout
    assert "warning" not in escaped.stdout


@pytest.mark.parametrize(
    "edit, reason",
    [
        (("min_replicas = 1\n", ""), "model 'qwen-72b': modal.min_containers (1) exceeds scaling.min_replicas (0)"),
        (
            ('scaling = {backend = "local"}', 'scaling = {backend = "modal"}'),
            "model 'echo': scaling.backend = \"modal\" needs a [models.echo.modal] table",
        ),
    ],
)
def test_a_file_the_services_refuse_fails_the_check_with_the_reason(models_file, edit, reason):
    models_file.write_text(MODELS.replace(*edit, 1))
    result = _check(models_file)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: models file {models_file.resolve()}: ") and reason in result.stderr


def test_a_file_without_modal_models_has_nothing_to_deploy(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text('[models.echo]\nengine = "dummy"\n')
    result = _check(path)
    assert result.exit_code == 2
    assert result.stderr == f"error: nothing to deploy: no model of {path} has a [models.NAME.modal] table\n"


def test_without_check_it_runs_modal_deploy_on_the_deployment_module(models_file, monkeypatch):
    import inferq.deploy_plan

    calls = []

    def fake_run(cmd, env):
        calls.append((cmd, env["INFERQ_MODELS"]))
        return subprocess.CompletedProcess(cmd, 7)

    monkeypatch.setattr(inferq.deploy_plan.subprocess, "run", fake_run)
    result = CliRunner().invoke(app, ["deploy", "--models", str(models_file)])
    assert result.exit_code == 7  # modal deploy's own status
    assert "qwen-72b -> class Worker_qwen_72b" in result.stdout  # the plan comes first
    assert calls == [
        (
            [sys.executable, "-m", "modal", "deploy", str(ROOT / "services/inference/modal_app.py")],
            str(models_file.resolve()),
        )
    ]


def test_make_deploy_check_runs_the_check(models_file):
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_TOKEN")}
    ok = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "deploy-check", f"BIN={bin_dir}", f"INFERQ_MODELS={models_file}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "qwen-72b -> class Worker_qwen_72b" in ok.stdout
    models_file.write_text(MODELS.replace("min_replicas = 1\n", "", 1))
    refused = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "deploy-check", f"BIN={bin_dir}", f"INFERQ_MODELS={models_file}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "modal.min_containers (1) exceeds scaling.min_replicas (0)" in refused.stderr
