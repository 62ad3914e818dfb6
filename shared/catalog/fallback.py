"""Fallback chains: where a model's waiting requests go when it cannot serve them.

A request waiting for model M moves to the first model of M's `fallback` list that may take it
(not unavailable, no spend limit covering it reached); once there, that model's own list applies.
The models file refuses chains that name unknown models or come back to where they started, so
a request moves at most once per model. Why it moves (`FallbackReason`): the model is
unavailable, the request's expected wait exceeds its max_queue_wait, a spend limit covering it
was reached (all three moved by services/dispatcher/fallback.py), or every attempt failed with a
retryable error (moved by the worker, in the script that acknowledges it: shared/lanes/lua/publish.lua).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from shared.catalog.models import ModelsConfig


def reachable(models: ModelsConfig, names: Iterable[str]) -> list[str]:
    """`names` and every model their chains can move requests to, sorted."""
    seen: set[str] = set()
    todo = [n for n in names if n in models.models]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(models.models[name].fallback)
    return sorted(seen)


def next_model(models: ModelsConfig, model: str, usable: Callable[[str], bool]) -> str | None:
    """The first model of `model`'s chain that `usable` accepts, or None."""
    cfg = models.get(model)
    for candidate in cfg.fallback if cfg else ():
        if usable(candidate):
            return candidate
    return None


def contract_kinds(models: ModelsConfig, name: str) -> frozenset[str]:
    """The response_format kinds every model `name`'s requests may reach (itself, then its chains)
    can hold an output to: a contracted request is never moved to an engine that cannot."""
    kinds = models.models[name].contract_kinds
    for other in reachable(models, [name]):
        kinds &= models.models[other].contract_kinds
    return kinds


def cannot_enforce(models: ModelsConfig, name: str, kind: str) -> str | None:
    """The first model `name`'s requests may reach (itself first) whose engine cannot hold an
    output to a `kind` response_format; None when every one can."""
    for candidate in [name, *(n for n in reachable(models, [name]) if n != name)]:
        if kind not in models.models[candidate].contract_kinds:
            return candidate
    return None
