import os
import subprocess
import sys

import pytest

from shared.catalog.models import ModelsFileError, load_models, parse_models


def test_entries_are_parsed_with_defaults(models):
    assert models.names() == ["alpha", "beta", "gamma"]
    gamma = models.get("gamma")
    assert gamma.name == "gamma" and gamma.max_inflight == 16 and gamma.max_tokens_limit == 100
    assert gamma.engine_options().latency_ms == 2
    assert gamma.scaling.backend == "static"


def test_example_models_file_is_valid():
    from tests.conftest import ROOT

    assert len(load_models(ROOT / "examples/models.local.toml").names()) >= 3


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[models.a]\nengine = "dummy"\nmax_inflight = 0', "model 'a': max_inflight: Expected `int` >= 1"),
        (
            '[models.a]\nengine = "gpt"',
            "model 'a': unknown engine 'gpt'; known engines: ['dummy', 'openai', 'transformers', 'vllm']",
        ),
        (
            '[models.a]\nengine = "transformers"',
            "model 'a': engine 'transformers' options: Object missing required field `model`",
        ),
        (
            '[models.a]\nengine = "openai"\noptions = {base_url = "ftp://x"}',
            "model 'a': engine 'openai' options: base_url: Expected `str` matching regex '^https?://'",
        ),
        ('[models.a]\nengine = "dummy"\nmax_inflihgt = 3', "model 'a': Object contains unknown field `max_inflihgt`"),
        (
            '[models.a]\nengine = "dummy"\n[models.a.options]\nlatency = 3',
            "model 'a': engine 'dummy' options: Object contains unknown field `latency`",
        ),
        (
            '[models.ok]\nengine = "dummy"\n[models.b]\nmax_inflight = 3',
            "model 'b': Object missing required field `engine`",
        ),
        ('[models."bad name"]\nengine = "dummy"', "model 'bad name': invalid name"),
        (
            '[models.a]\nengine = "dummy"\n[models.a.scaling]\nmin_replicas = 3\nmax_replicas = 2',
            "model 'a': scaling.min_replicas exceeds",
        ),
        (
            '[models.a]\nengine = "dummy"\n[models.a.modal]\n[models.a.scaling]\nbackend = "static"',
            "model 'a': has a [models.a.modal] table but scaling.backend = \"static\"",
        ),
        (
            '[models.a]\nengine = "dummy"\n[models.a.modal]\n[models.a.scaling]\nbackend = "local"',
            "model 'a': has a [models.a.modal] table but scaling.backend = \"local\"",
        ),
        (
            '[models."org/m-1"]\nengine = "dummy"\n[models."org/m-1".scaling]\nbackend = "modal"',
            'model \'org/m-1\': scaling.backend = "modal" needs a [models."org/m-1".modal] table',
        ),
        (
            '[models.a]\nengine = "dummy"\n[models.a.modal]\nmin_containers = 1\n[models.a.scaling]\nmax_replicas = 2',
            "model 'a': modal.min_containers (1) exceeds scaling.min_replicas (0): only runs the dispatcher spawns "
            "serve requests, so the extra containers would stay idle and be billed; to keep 1 warm, set "
            "scaling.min_replicas = 1",
        ),
        (
            '[models.a]\nengine = "dummy"\n[models.a.modal]\nmin_containers = 3\nmax_containers = 2\n'
            "[models.a.scaling]\nmin_replicas = 3\nmax_replicas = 4",
            "model 'a': modal.min_containers (3) exceeds modal.max_containers (2)",
        ),
        ("models = 3", "no models defined"),
        ("[other]\nx = 1", "unknown top-level key(s) ['other']"),
        ("[models.a\n", "not valid TOML"),
    ],
)
def test_malformed_file_names_the_entry(text, expected):
    with pytest.raises(ModelsFileError) as info:
        parse_models(text, "m.toml")
    assert str(info.value).startswith("models file m.toml")
    assert expected in str(info.value)


def test_a_modal_table_means_the_modal_backend():
    models = parse_models("""
[models.gpu]
engine = "vllm"
options = {model = "org/m"}
[models.gpu.modal]
gpu = "L40S"

[models.gpu-scaled]
engine = "vllm"
options = {model = "org/m"}
[models.gpu-scaled.scaling]
max_replicas = 3
[models.gpu-scaled.modal]

[models.cpu-vllm]
engine = "vllm"
options = {model = "org/m"}
""").models
    assert models["gpu"].scaling.backend == "modal" and models["gpu"].modal.gpu == "L40S"
    assert models["gpu-scaled"].scaling.backend == "modal" and models["gpu-scaled"].modal_max_containers == 3
    # a vllm model without a modal table runs wherever you start its workers (vLLM on CPU, your own GPUs)
    assert models["cpu-vllm"].scaling.backend == "static" and models["cpu-vllm"].modal is None
    assert models["cpu-vllm"].modal_max_containers is None


def test_warm_containers_used_by_kept_runs_are_accepted():
    text = (
        '[models.a]\nengine = "dummy"\n[models.a.modal]\nmin_containers = 2\n'
        "[models.a.scaling]\nmin_replicas = 2\nmax_replicas = 4"
    )
    a = parse_models(text).models["a"]
    assert (a.modal.min_containers, a.scaling.min_replicas, a.modal_max_containers) == (2, 2, 4)


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["services.ingest"], "ingest"),
        (["services.dispatcher"], "dispatcher"),
        (["services.inference", "--model", "echo-small"], "worker"),
    ],
)
def test_a_missing_models_file_stops_each_service_with_one_line(redis_server, tmp_path, command, name):
    from tests.conftest import ROOT

    missing = tmp_path / "models.toml"
    env = {**os.environ, "INFERQ_MODELS": str(missing), "INFERQ_REDIS_URL": redis_server.url}
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"inferq {name}: INFERQ_MODELS: models file {missing} not found (tried {missing}); set INFERQ_MODELS to "
        "your models file, or start from an example: examples/models.demo.toml, examples/models.local.toml "
        "(e.g. INFERQ_MODELS=examples/models.local.toml)\n"
    )


def test_max_inflight_defaults_to_what_the_engine_needs():
    models = parse_models("""
[models.gpu]
engine = "vllm"
options = {model = "m"}
[models.gpu-capped]
engine = "vllm"
max_inflight = 64
options = {model = "m"}
[models.echo]
engine = "dummy"
""")
    # vLLM batches from what it holds: a worker keeps it well fed; other engines keep 32
    assert models.get("gpu").max_inflight == 2048 and models.get("gpu").high_watermark == 4096
    assert models.get("gpu-capped").max_inflight == 64
    assert models.get("echo").max_inflight == 32
