"""The Lua scripts live in shared/lua, one file each, and spell no state or field name: those
reach them from shared/states.py and shared/keys.py through the loader (shared/scripts.py)."""

from __future__ import annotations

import re

from shared import scripts
from shared.states import BatchStatus, JobStatus, RequestStatus
from tests.conftest import ROOT

LUA = ROOT / "shared" / "lua"
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua"))
STATUS_NAMES = {s.value for enum in (JobStatus, RequestStatus, BatchStatus) for s in enum}


def test_no_lua_source_inside_python_files():
    for folder in ("shared", "services", "inferq", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "redis.call" not in path.read_text(), path


def test_each_script_states_its_keys_and_argv_and_spells_no_status():
    assert len(SCRIPTS) >= 13
    for path in [*LUA.glob("*.lua"), *LUA.glob("lib/*.lua")]:
        text = path.read_text()
        literals = set(re.findall(r"'([a-z_]+)'", text)) | set(re.findall(r'"([a-z_]+)"', text))
        assert not literals & STATUS_NAMES, (path.name, literals & STATUS_NAMES)
        if path.parent == LUA:
            header = text.split("\nlocal ", 1)[0]
            assert "-- KEYS" in header and "ARGV" in header, path.name


async def test_every_script_compiles_on_redis(r):
    for name in SCRIPTS:
        assert await r.script_load(scripts.source(name))


def test_scripts_ship_as_package_data():
    assert '"lua/*.lua"' in (ROOT / "pyproject.toml").read_text()
