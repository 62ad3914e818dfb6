"""The one loader of inferq's Lua scripts. Each script lives in the `lua/` folder beside the module
that wraps it (shared/jobs/lua/create_job.lua beside shared/jobs/scripts.py); the helpers they
share live in shared/redis/lua/lib.

A script's source is, in order: a preamble generated here, the helper files it names on its first
line (`-- uses: hash keys` includes lib/hash.lua and lib/keys.lua), then its own file. The
preamble defines, as Lua tables, the job and request status names from shared/core/states.py and
the hash field names from shared/redis/keys.py, so no script spells them: states and fields reach
Lua by substitution at load time, not as ARGV. Each source is built once per process and
registered with redis-py's `register_script` (EVALSHA, falling back to EVAL after a Redis restart).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from shared.core.states import JOB_END_STATES, RUNNING_JOB_STATES, STOPPING_JOB_STATES, JobStatus, RequestStatus
from shared.redis.keys import (
    LANES,
    MOVED,
    REQUEST_DONE,
    REQUEST_REQUEUED,
    REQUEST_RUNNING,
    AttemptField,
    FlowField,
    JobField,
    SinkField,
    UsageField,
    dead_letter_field,
    model_field,
    spend_field,
    staged_field,
    turn_field,
)

_USES = "-- uses:"


def _lua(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _table(pairs) -> str:
    return "{" + ", ".join(f"[{_lua(str(k))}] = {v}" for k, v in pairs) + "}"


def _pair(first: str, second: str) -> str:
    return "{" + _lua(first) + ", " + _lua(second) + "}"


def _names(pairs) -> str:
    return _table((k, _lua(str(v))) for k, v in pairs)


@cache
def preamble() -> str:
    """The Lua constants every script starts with."""
    fields = {
        **{k: v for k, v in vars(JobField).items() if k.isupper()},
        **{k: v for k, v in vars(FlowField).items() if k.isupper()},
    }
    return "\n".join(
        [
            "-- generated from shared/core/states.py and shared/redis/keys.py",
            f"local JOB = {_names((s.name, s) for s in JobStatus)}",
            f"local REQUEST = {_names((s.name, s) for s in RequestStatus)}",
            "-- job states whose requests may still be routed and started",
            f"local RUNNING = {_table((s, 'true') for s in sorted(RUNNING_JOB_STATES))}",
            "-- stopping job state -> {the state it ends in, the state its unfinished requests take}",
            f"local STOPPING = {_table((s, _pair(end, req)) for s, (end, req) in sorted(STOPPING_JOB_STATES.items()))}",
            "-- the state a job ends in once its last request is final, by the state it is in then",
            f"local FINAL_OF = {_names(sorted(JOB_END_STATES.items()))}",
            f"local F = {_names(fields.items())}",
            f"local A = {_names((k, v) for k, v in vars(AttemptField).items() if k.isupper())}",
            f"local LANE = {_names((lane.upper(), lane) for lane in LANES)}",
            f"local STAGED = {_names((lane, staged_field(lane)) for lane in LANES)}",
            f"local TURN = {_names((lane, turn_field(lane)) for lane in LANES)}",
            f"local MOVED = {_lua(MOVED)}",
            "local REQ_MARK = "
            + _names([("RUNNING", REQUEST_RUNNING), ("DONE", REQUEST_DONE), ("REQUEUED", REQUEST_REQUEUED)]),
            "local function model_field(model, name)"
            f" return string.format({_lua(model_field('%s', '%s'))}, model, name) end",
            "local function dead_letter_field(request_id)"
            f" return {_lua(dead_letter_field('%s').replace('%s', ''))} .. request_id end",
            f"local U = {_names((k, v) for k, v in vars(UsageField).items() if k.isupper())}",
            f"local SINK = {_names((k, v) for k, v in vars(SinkField).items() if k.isupper())}",
            "local function spend_field(tenant, model)"
            f" return string.format({_lua(spend_field('%s', '%s'))}, tenant, model) end",
            "",
        ]
    )


LIB_PACKAGE = __name__.rpartition(".")[0]  # shared.redis: lua/lib holds the shared helpers


def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", name).read_text(encoding="utf-8")


@cache
def source(package: str, name: str) -> str:
    """The full source of script `name` (without `.lua`) of the `lua/` folder in `package`."""
    body = _read(package, f"{name}.lua")
    first, _, _ = body.partition("\n")
    libs = first[len(_USES) :].split() if first.startswith(_USES) else []
    return preamble() + "".join(_read(LIB_PACKAGE, f"lib/{lib}.lua") for lib in libs) + body


def register(r: aioredis.Redis, module: str, name: str) -> AsyncScript:
    """Script `name` of the `lua/` folder beside `module` (the wrapper passes its `__name__`),
    registered on `r` (called with keys=..., args=..., client=...)."""
    return r.register_script(source(module.rpartition(".")[0], name))
