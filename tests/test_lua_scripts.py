"""The Lua scripts live in shared/lua, one file each, and spell no state or field name: those
reach them from shared/states.py and shared/keys.py through the loader (shared/scripts.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

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


def test_every_process_sends_the_same_script_text():
    """Processes start with different hash seeds; a script text that followed set or dict order
    would differ between them, and Redis would cache and compile one copy per process."""
    probe = (
        "import hashlib, os; from shared import scripts; "
        "names = sorted(n[:-4] for n in os.listdir('shared/lua') if n.endswith('.lua')); "
        "print(hashlib.sha1(''.join(scripts.source(n) for n in names).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(1, 9)
    }
    assert len(digests) == 1, digests
