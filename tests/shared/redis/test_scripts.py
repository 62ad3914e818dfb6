"""The Lua scripts live in the `lua/` folder beside the module that wraps each, one file each, and
spell no state or field name: those reach them from shared/core/states.py and shared/redis/keys.py
through the loader (shared/redis/scripts.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from shared.core.states import BatchStatus, JobStatus, RequestStatus
from shared.redis import scripts
from tests.conftest import ROOT

SCRIPT_FILES = sorted(p for top in ("shared", "services") for p in (ROOT / top).rglob("lua/*.lua"))
LIB_FILES = sorted((ROOT / "shared" / "redis" / "lua" / "lib").glob("*.lua"))
SCRIPTS = [(".".join(p.parent.parent.relative_to(ROOT).parts), p.stem) for p in SCRIPT_FILES]
STATUS_NAMES = {s.value for enum in (JobStatus, RequestStatus, BatchStatus) for s in enum}


def test_no_lua_source_inside_python_files():
    for folder in ("shared", "services", "inferq", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "redis.call" not in path.read_text(), path


def test_each_script_states_its_keys_and_argv_and_spells_no_status():
    assert len(SCRIPTS) >= 13
    for path in [*SCRIPT_FILES, *LIB_FILES]:
        text = path.read_text()
        literals = set(re.findall(r"'([a-z_]+)'", text)) | set(re.findall(r'"([a-z_]+)"', text))
        assert not literals & STATUS_NAMES, (path.name, literals & STATUS_NAMES)
        if path.parent.name == "lua":
            header = text.split("\nlocal ", 1)[0]
            assert "-- KEYS" in header and "ARGV" in header, path.name


async def test_every_script_compiles_on_redis(r):
    for package, name in SCRIPTS:
        assert await r.script_load(scripts.source(package, name))


def test_scripts_ship_as_package_data():
    assert '"lua/*.lua", "lua/lib/*.lua"' in (ROOT / "pyproject.toml").read_text()


def test_every_process_sends_the_same_script_text():
    """Processes start with different hash seeds; a script text that followed set or dict order
    would differ between them, and Redis would cache and compile one copy per process."""
    probe = (
        "import hashlib; from shared.redis import scripts; "
        f"names = {SCRIPTS!r}; "
        "print(hashlib.sha1(''.join(scripts.source(p, n) for p, n in names).encode()).hexdigest())"
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
