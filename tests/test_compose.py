"""docker-compose.yml cannot run here (no Docker engine), so check its structure instead."""

from __future__ import annotations

import importlib.util

import yaml

from shared.models_config import load_models
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
    cmd = " ".join(redis["command"])
    assert "--appendonly yes" in cmd and "--appendfsync everysec" in cmd and "noeviction" in cmd
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
