"""While a command waits for a job: which of the models it still needs are not serving, and when
to stop waiting. A model unavailable for the whole grace period will not finish the job's
requests on its own (its workers cannot start, or none reads), so waiting on says nothing more."""

from __future__ import annotations

import time
from collections.abc import Callable

from inferq.client import Client
from shared.wire.api import Job, ModelInfo

DEFAULT_GRACE_S = 120.0


class CannotServe(Exception):
    """A model the job still needs has been unavailable for the whole grace period."""


def remaining_models(job: Job) -> list[str]:
    """The models that still have requests of the job to finish."""
    return [m for m, c in job.models.items() if c.total > c.finished]


def _clock_time(unix_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix_s))


class ServingWatch:
    """`check(job)` returns one line per remaining model that is not serving ("smol unavailable
    since 12:03:04: the worker failed: ..."), and raises CannotServe once one has stayed
    unavailable for `grace_s` as seen from here. Model health is read at most every `every_s`."""

    def __init__(
        self,
        client: Client,
        grace_s: float = DEFAULT_GRACE_S,
        *,
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.grace_s, self.every_s, self.clock = client, grace_s, every_s, clock
        self._models: dict[str, ModelInfo] = {}
        self._read_at: float | None = None
        self._unavailable_from: dict[str, float] = {}

    def check(self, job: Job) -> list[str]:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.every_s:
            self._models = {m.id: m for m in self.client.models()}
            self._read_at = now
        notes = []
        for name in remaining_models(job):
            info = self._models.get(name)
            if info is None or info.health.state == "serving":
                self._unavailable_from.pop(name, None)
                continue
            h = info.health
            note = f"{name} {h.state} since {_clock_time(h.since)}" + (f": {h.reason}" if h.reason else "")
            notes.append(note)
            if h.state != "unavailable":
                self._unavailable_from.pop(name, None)
                continue
            first = self._unavailable_from.setdefault(name, now)
            if now - first >= self.grace_s:
                raise CannotServe(f"{note} (still unavailable after {self.grace_s:g}s of waiting)")
        return notes
