"""Is a recorded pid still the worker process that was started under it? A pid is reused once its
process is gone, so a match needs the same start time (boot clock ticks, from /proc/<pid>/stat)
and the worker's command line; a zombie (exited, not yet reaped) is gone. Linux only: elsewhere
nothing matches, so recorded workers are never adopted."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if there is no such live process."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def worker_argv(model: str) -> list[str]:
    return ["-m", "services.inference", "--model", model]


def is_worker(pid: int, ticks: int | None, model: str) -> bool:
    """`pid` is alive, started at `ticks`, and runs `services.inference --model MODEL`."""
    if ticks is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now
        return False
    if start_ticks(pid) != ticks:
        return False
    try:
        argv = [a.decode() for a in (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")]
    except (OSError, UnicodeDecodeError):
        return False
    want = worker_argv(model)
    return any(argv[i : i + len(want)] == want for i in range(len(argv)))
