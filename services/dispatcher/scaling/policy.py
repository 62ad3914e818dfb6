"""The scaling policy: from a model's backlog over time to a replica count, with no I/O, so it can
be tested on scripted backlog curves."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from shared.catalog.models import ScalingConfig


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str


@dataclass
class ScalePolicy:
    """Scale up at once; scale down to the highest recommendation of the stabilization window
    (as Kubernetes' HPA does), so a backlog hovering around a threshold does not flap; go to zero
    only after the backlog has stayed at zero for the idle cooldown."""

    config: ScalingConfig
    # Seconds a new replica takes to serve (the model's measured start, shared/models/start_phases.py);
    # None until one was measured. With it, a growing backlog is scaled for what it will be once
    # the replicas started now are ready, not for what it is.
    boot_s: float | None = None
    _history: deque = field(default_factory=deque)  # (time, recommendation)
    _backlogs: deque = field(default_factory=deque)  # (time, backlog) of the last GROWTH_WINDOW_S
    _last_busy: float | None = None

    GROWTH_WINDOW_S = 10.0  # the backlog's growth is judged over this long (at least 2 s of it)

    def projected(self, now: float, backlog: int) -> int:
        """The backlog `boot_s` from now if it keeps growing as it has lately (never below now)."""
        self._backlogs.append((now, backlog))
        while self._backlogs and self._backlogs[0][0] < now - self.GROWTH_WINDOW_S:
            self._backlogs.popleft()
        if not self.boot_s or backlog <= 0:
            return backlog
        then, before = self._backlogs[0]
        if now - then < 2.0 or backlog <= before:
            return backlog
        return backlog + math.ceil((backlog - before) / (now - then) * self.boot_s)

    def recommend(self, backlog: int) -> int:
        c = self.config
        if backlog <= 0:
            return c.min_replicas
        return max(c.min_replicas, min(c.max_replicas, math.ceil(backlog / c.target_per_replica)))

    def decide(self, now: float, backlog: int, current: int, deadlines: int = 0) -> Decision:
        """`deadlines`: the replicas the deadlines waiting for the model need (the planner's,
        within max_replicas); the recommendation is never below it."""
        c = self.config
        if backlog > 0:
            self._last_busy = now
        deadlines = min(deadlines, c.max_replicas) if backlog > 0 else 0
        if current == 0 and 0 < backlog < c.activation_backlog and deadlines == 0:
            self._remember(now, 0)
            return Decision(
                max(0, c.min_replicas), f"backlog {backlog} below the activation threshold {c.activation_backlog}"
            )
        ahead = self.projected(now, backlog)
        raw = self.recommend(ahead)
        for_deadlines = deadlines > raw
        raw = max(raw, deadlines)
        if backlog == 0 and current > 0 and c.min_replicas == 0:
            idle_for = now - self._last_busy if self._last_busy is not None else math.inf
            if idle_for < c.idle_cooldown_s:
                raw = 1  # hold one worker until the cooldown has passed
        self._remember(now, raw)
        if raw > current:
            if for_deadlines:
                return Decision(raw, f"backlog {backlog}: up from {current} to {raw} to meet the deadlines waiting")
            grown = f", {ahead} expected in the {self.boot_s:g}s a replica takes to start" if ahead > backlog else ""
            return Decision(
                raw,
                f"backlog {backlog}{grown}: up from {current} to {raw} (target {c.target_per_replica} per replica)",
            )
        stable = max(r for _, r in self._history)
        if stable < current:
            if stable == 0:
                return Decision(0, f"idle for {c.idle_cooldown_s:g}s: down to zero")
            return Decision(
                stable,
                f"backlog {backlog}: down from {current} to {stable} (highest of the last {c.scale_down_window_s:g}s)",
            )
        return Decision(current, f"backlog {backlog}: steady at {current}")

    def _remember(self, now: float, recommendation: int) -> None:
        self._history.append((now, recommendation))
        while self._history and self._history[0][0] < now - self.config.scale_down_window_s:
            self._history.popleft()
