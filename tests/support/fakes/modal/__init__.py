"""A fake of the modal 1.6 client, for the part of it the `modal` scaling backend uses:

    modal.Cls.from_name(app, cls)() -> instance; instance.run.spawn.aio(**kwargs) -> FunctionCall
    modal.FunctionCall.from_id(id) -> FunctionCall; .object_id, .get.aio(timeout=0), .cancel.aio()
    modal.exception.* (same names and base classes as modal's)

Import it as `tests.support.fakes.modal`, or as `modal` in a subprocess started with `tests/support/fakes` on its
PYTHONPATH. `world` is its state, which a test steers: a spawned run is running (get raises the
builtin TimeoutError, as modal's "no output yet") until it is finished, failed or cancelled; an id
this process never spawned (a run of an earlier process) is running too. While a connection
failure lasts, every call raises modal.exception.ConnectionError, as the client does once its
retries are spent. When INFERQ_FAKE_MODAL_LOG names a file, every call appends one JSON line to
it: {"op": "spawn" | "get" | "cancel", "app", "cls", "kwargs", "id", "error"}.
"""

from __future__ import annotations

import itertools
import json
import os
import time

from . import exception
from .exception import Error

__all__ = ["Cls", "Error", "FunctionCall", "exception", "world"]

_TERMINATED = "the function call was cancelled"


class World:
    """What the fake Modal knows: runs by id, failures to inject, and a clock (monotonic seconds,
    replaceable by a test's fake clock)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.clock = time.monotonic
        self.runs: dict[str, dict] = {}  # id -> {"app", "cls", "kwargs", "state", "outcome"}
        self._ids = itertools.count(1)
        self._down_until = float("-inf")
        self._fail_next: dict[str, list[BaseException]] = {}

    # steering
    def fail_connection(self, for_s: float) -> None:
        """Every call raises modal.exception.ConnectionError for the next `for_s` seconds."""
        self._down_until = self.clock() + for_s

    def fail_next(self, op: str, exc: BaseException) -> None:
        """The next `op` call ("spawn", "get", "cancel") raises `exc`."""
        self._fail_next.setdefault(op, []).append(exc)

    def finish(self, call_id: str, result: object = None) -> None:
        """The run returned (e.g. its worker went idle): get returns `result`."""
        self._run(call_id).update(state="finished", outcome=result)

    def fail(self, call_id: str, exc: BaseException) -> None:
        """The run failed in its container: get re-raises `exc`, as the client does."""
        self._run(call_id).update(state="failed", outcome=exc)

    def running(self) -> list[str]:
        return [i for i, run in self.runs.items() if run["state"] == "running"]

    # the client's side
    def _run(self, call_id: str) -> dict:
        return self.runs.setdefault(
            call_id, {"app": None, "cls": None, "kwargs": None, "state": "running", "outcome": None}
        )

    def _outcome(self, op: str, app: str | None, cls: str | None, kwargs: dict, call_id: str | None) -> str | None:
        """Log one call and raise what was injected for it; a spawn that goes through gets its id."""
        error: BaseException | None = None
        if self.clock() < self._down_until:
            error = exception.ConnectionError("Could not connect to the Modal server.")
        elif self._fail_next.get(op):
            error = self._fail_next[op].pop(0)
        if op == "spawn" and error is None:
            call_id = f"fc-{os.getpid()}-{next(self._ids)}"
            self.runs[call_id] = {"app": app, "cls": cls, "kwargs": kwargs, "state": "running", "outcome": None}
        _log(
            {
                "op": op,
                "app": app,
                "cls": cls,
                "kwargs": kwargs,
                "id": call_id,
                "error": type(error).__name__ if error else None,
            }
        )
        if error is not None:
            raise error
        return call_id


def _log(entry: dict) -> None:
    path = os.environ.get("INFERQ_FAKE_MODAL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


world = World()


class _Aio:
    """modal's methods are called as `.aio(...)` from async code."""

    def __init__(self, fn) -> None:
        self.aio = fn


class FunctionCall:
    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        self.get = _Aio(self._get)
        self.cancel = _Aio(self._cancel)

    @classmethod
    def from_id(cls, function_call_id: str, client=None) -> FunctionCall:
        return cls(function_call_id)

    async def _get(self, timeout: float | None = None, *, index: int = 0):
        run = world._run(self.object_id)
        world._outcome("get", run["app"], run["cls"], {"timeout": timeout}, self.object_id)
        if run["state"] == "running":
            raise TimeoutError()
        if run["state"] == "cancelled":
            raise exception.RemoteError(_TERMINATED)
        if run["state"] == "failed":
            raise run["outcome"]
        return run["outcome"]

    async def _cancel(self, terminate_containers: bool = False) -> None:
        run = world._run(self.object_id)
        world._outcome("cancel", run["app"], run["cls"], {}, self.object_id)
        if run["state"] == "running":
            run["state"] = "cancelled"


class _Method:
    def __init__(self, app: str, cls: str) -> None:
        self.spawn = _Aio(lambda **kwargs: self._spawn(app, cls, kwargs))

    @staticmethod
    async def _spawn(app: str, cls: str, kwargs: dict) -> FunctionCall:
        return FunctionCall(world._outcome("spawn", app, cls, kwargs, None))


class _Obj:
    def __init__(self, app: str, cls: str) -> None:
        self.run = _Method(app, cls)


class Cls:
    """A deployed class looked up by name; like modal's, the lookup itself is lazy and free."""

    def __init__(self, app: str, cls: str) -> None:
        self.app, self.cls = app, cls

    @classmethod
    def from_name(cls, app_name: str, name: str, **_options) -> Cls:
        return cls(app_name, name)

    def __call__(self, *args, **kwargs) -> _Obj:
        return _Obj(self.app, self.cls)
