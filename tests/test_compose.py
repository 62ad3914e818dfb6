"""docker-compose.yml cannot run here (no Docker engine), so check its structure instead."""

from __future__ import annotations

import importlib.util

import yaml

from inferq.localstack import REDIS_PERSISTENCE
from shared.catalog.models import load_models
from tests.conftest import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_command_names_a_real_module():
    services = _compose()["services"]
    app_services = {n: s for n, s in services.items() if n != "redis"}
    assert {"ingest", "dispatcher"} <= set(app_services)
    assert any(s["command"][2] == "services.inference" for s in app_services.values())
    for name, svc in app_services.items():
        cmd = svc["command"]
        assert cmd[:2] == ["python", "-m"], name
        assert importlib.util.find_spec(cmd[2]) is not None, f"{name}: no module {cmd[2]}"
        assert importlib.util.find_spec(cmd[2] + ".__main__") is not None, f"{name}: {cmd[2]} is not runnable with -m"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_name_models_from_the_models_file_it_mounts():
    services = _compose()["services"]
    models_path = services["ingest"]["environment"]["INFERQ_MODELS"].removeprefix("/app/")
    names = load_models(ROOT / models_path).names()
    for name, svc in services.items():
        cmd = svc.get("command", [])
        if "services.inference" in cmd:
            assert cmd[cmd.index("--model") + 1] in names, name


def test_redis_is_durable_and_healthchecked():
    redis = _compose()["services"]["redis"]
    cmd = redis["command"]
    # the same persistence settings as the local stack's Redis, each with its value
    for flag, value in zip(REDIS_PERSISTENCE[0::2], REDIS_PERSISTENCE[1::2]):
        assert flag in cmd and cmd[cmd.index(flag) + 1] == value, flag
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert redis["volumes"]


def test_dockerfile_installs_the_project_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in text and "\nUSER " in text


def test_hardened_redis_password_healthchecks_and_non_root():
    compose = _compose()
    services = compose["services"]
    redis = services["redis"]
    cmd = redis["command"]
    assert "--requirepass" in cmd and cmd[cmd.index("--requirepass") + 1].startswith("${INFERQ_REDIS_PASSWORD:?")
    assert "ports" not in redis  # reachable only on the compose network
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${INFERQ_REDIS_PASSWORD")  # the healthcheck authenticates
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("user") and not svc["user"].startswith("0"), f"{name} runs as root"
        assert svc.get("read_only") is True and svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        if name != "redis":
            env = svc["environment"]
            assert env["INFERQ_REDIS_URL"].startswith("redis://:${INFERQ_REDIS_PASSWORD"), name
            assert env["INFERQ_AUTH"] == "on", name
            if name != "ingest":  # their healthcheck reads the metrics endpoint this port serves
                assert env["INFERQ_METRICS_PORT"] in " ".join(svc["healthcheck"]["test"]), name


class _ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: `!reset` marks an attribute the override file removes."""


RESET = object()
_ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
LISTS_MERGED = {"volumes", "ports", "tmpfs", "cap_drop", "security_opt"}  # Compose unions these; others replace


def _merge(base, override, key: str = ""):
    """Compose's merge of an override file, for what these files use: mappings merge key by key,
    `!reset` removes, a string `build` is its context, listed sequences are appended."""
    if key == "build":
        base, override = ({"context": b} if isinstance(b, str) else b for b in (base, override))
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            if v is RESET:
                merged.pop(k, None)
            else:
                merged[k] = _merge(base[k], v, k) if k in base else v
        return merged
    if key in LISTS_MERGED and isinstance(base, list) and isinstance(override, list):
        return base + [v for v in override if v not in base]
    return override


def _with_modal() -> dict:
    override = yaml.load((ROOT / "docker-compose.modal.yml").read_text(), Loader=_ComposeLoader)
    return _merge(_compose(), override)


def test_the_modal_override_runs_ingest_and_a_modal_driving_dispatcher_on_the_remote_redis():
    base, services = _compose()["services"], _with_modal()["services"]
    started_by_up = {n for n, s in services.items() if not s.get("profiles")}
    assert started_by_up == {"ingest", "dispatcher"}  # no local Redis, no CPU echo workers
    for name in ("ingest", "dispatcher"):
        svc, env = services[name], services[name]["environment"]
        assert svc["command"] == base[name]["command"] and "depends_on" not in svc, name
        assert env["INFERQ_REDIS_URL"].startswith("rediss://:${INFERQ_REDIS_PASSWORD:?"), name  # TLS and a password
        assert "@${INFERQ_REDIS_HOST:?" in env["INFERQ_REDIS_URL"], name
        [models] = [v for v in svc["volumes"] if v["target"] == env["INFERQ_MODELS"]]
        assert models["type"] == "bind" and models["read_only"] is True, name
        assert models["source"].startswith("${INFERQ_MODELS:?"), name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"] and svc["user"] == "10001:10001", name
        assert env["INFERQ_AUTH"] == "on" and svc["healthcheck"]["test"], name
    dispatcher, ingest = services["dispatcher"], services["ingest"]
    assert dispatcher["build"] == {"context": ".", "args": {"INFERQ_EXTRAS": "modal"}}
    assert ingest["build"] == "." and dispatcher["image"] != ingest["image"]  # two builds, two tags
    assert dispatcher["environment"]["MODAL_TOKEN_ID"].startswith("${MODAL_TOKEN_ID:?")
    assert dispatcher["environment"]["MODAL_TOKEN_SECRET"].startswith("${MODAL_TOKEN_SECRET:?")
    assert dispatcher["environment"]["INFERQ_MODAL_APP"] == "${INFERQ_MODAL_APP:-inferq}"
    assert "MODAL_TOKEN_ID" not in ingest["environment"]  # only the dispatcher talks to Modal


def test_the_modal_override_requires_exactly_what_it_needs():
    import re

    text = (ROOT / "docker-compose.modal.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required == {
        "INFERQ_REDIS_PASSWORD",
        "INFERQ_REDIS_HOST",
        "INFERQ_MODELS",
        "MODAL_TOKEN_ID",
        "MODAL_TOKEN_SECRET",
    }


def test_the_dockerfile_installs_the_extras_it_is_built_with():
    import subprocess
    import tomllib

    text = (ROOT / "Dockerfile").read_text()
    run = next(line for line in text.splitlines() if line.startswith("RUN pip install "))
    assert text.index('ARG INFERQ_EXTRAS=""') < text.index(run)
    target = run.removeprefix("RUN pip install ").split(" &&")[0]
    for extras, expected in (("", "."), ("modal", ".[modal]"), ("dev,modal", ".[dev,modal]")):
        words = subprocess.run(
            ["sh", "-c", f'printf "%s\\n" {target}'],
            env={"INFERQ_EXTRAS": extras},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert words == [expected], extras
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    args = yaml.load((ROOT / "docker-compose.modal.yml").read_text(), Loader=_ComposeLoader)["services"]["dispatcher"][
        "build"
    ]["args"]
    assert args["INFERQ_EXTRAS"] in extras and any(r.startswith("modal") for r in extras["modal"])
