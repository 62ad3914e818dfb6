"""The `modal` scaling backend: spawns and cancels `run` calls of the model's deployed Modal class.

Why spawned runs rather than setting min/max containers at runtime: a run is a unit of work the
dispatcher can count, start in about a second and end on purpose (cancel → the container's worker
loop drains: in-flight requests finish or go back to the stream); containers kept warm by
`min_containers` would do nothing unless their @enter started a loop nobody can stop cleanly, and
runtime autoscaler values are reset by the next deploy. Each run also ends by itself once the
model's streams have been idle for the cooldown, so a dispatcher outage cannot leave GPUs running.
The deployed class's `max_containers` stays the hard cost cap.

Live call ids are kept in Redis (`scaling:modal:<model>`), so a restarted dispatcher, or the next
leader, counts the runs already going and spawns only the difference. An id is forgotten only when
Modal says its run ended; when Modal cannot be asked (connection, auth, rate limit), every id still
counts as running and nothing is spawned until the backoff has passed: a flaky connection must not
double the GPUs.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time

import redis.asyncio as aioredis

from services.dispatcher.scaling.failures import BackendFailures
from shared.catalog.models import ModelsConfig, modal_class_name
from shared.redis.keys import Keys

log = logging.getLogger("inferq.scaling")


class Outcome(enum.Enum):
    RUNNING = "running"
    ENDED = "ended"
    UNKNOWN = "unknown"  # Modal could not be asked: says nothing about the run


def poll_outcome(exc: BaseException | None, exceptions) -> Outcome:
    """What `FunctionCall.get(timeout=0)` ending with `exc` (None: it returned) says about a run,
    in the modal 1.6 client (`exceptions` is its `modal.exception` module):

    The run ended:
      - get returned: the run finished (it went idle, or it drained after a cancel);
      - RemoteError: a failure result without a pickled exception, e.g. a cancelled (terminated) run;
      - FunctionTimeoutError: the run hit the class's timeout; InternalFailure: its container failed;
      - OutputExpiredError: no output and no unfinished input: it ended so long ago its output expired;
      - ExecutionError: it failed with an exception this process cannot unpickle;
      - NotFoundError: Modal knows no such call, so nothing of it can be running;
      - any exception not listed below: the run's own exception, unpickled and re-raised by the client
        (a raw OSError is one too: the client turns its own OSErrors into modal's ConnectionError).
    Still running: the builtin TimeoutError, the client's "no output yet" for timeout=0.
    We could not find out (the id is kept and counted as running): every other modal.exception.Error,
    i.e. ConnectionError (socket errors and timeouts after the client's retries), AuthError,
    PermissionDeniedError, ResourceExhaustedError (rate limits, quotas), ServiceError, InternalError,
    ClientClosed, the client's own deadline (a modal TimeoutError), and raw grpclib errors.
    Known blind spot: a run whose own code raised the builtin TimeoutError reads as still running
    until its output expires.
    """
    if exc is None:
        return Outcome.ENDED
    ended = (
        exceptions.RemoteError,
        exceptions.FunctionTimeoutError,
        exceptions.InternalFailure,
        exceptions.OutputExpiredError,
        exceptions.ExecutionError,
        exceptions.NotFoundError,
    )
    if isinstance(exc, ended):
        return Outcome.ENDED
    if type(exc) is TimeoutError:
        return Outcome.RUNNING
    if isinstance(exc, (exceptions.Error, *_grpc_error_types(exceptions))):
        return Outcome.UNKNOWN
    return Outcome.ENDED


def _grpc_error_types(exceptions) -> tuple[type, ...]:
    """grpclib's error, the base of modal's wrapped server errors (found through them, so no import)."""
    return tuple(b for b in exceptions.ServiceError.__mro__ if b.__name__ == "GRPCError")


class ModalBackend:
    name = "modal"

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        models: ModelsConfig,
        app_name: str = "inferq",
        modal_module=None,
        *,
        clock=time.time,
    ) -> None:
        if modal_module is None:
            import modal as modal_module
        self.modal = modal_module
        self.r = r
        self.keys = keys
        self.models = models
        self.app_name = app_name
        self.failures = BackendFailures(keys, first_s=1.0, cap_s=30.0, clock=clock)
        self._classes: dict[str, object] = {}

    def _instance(self, model: str):
        if model not in self._classes:
            cls = self.modal.Cls.from_name(self.app_name, modal_class_name(model))
            self._classes[model] = cls()
        return self._classes[model]

    async def _recorded(self, model: str) -> list[tuple[str, int]]:
        """(call id, spawned ns) of the runs this or an earlier leader spawned, oldest first."""
        h = await self.r.hgetall(self.keys.modal_calls(model))  # type: ignore[misc]
        return sorted(((k.decode(), int(v)) for k, v in h.items()), key=lambda c: c[1])

    async def _live_calls(self, model: str) -> list[tuple[str, int]]:
        """The recorded runs not known to have ended, oldest first; forgets the ended ones. When
        Modal cannot be asked, the rest are kept unasked and the model backs off."""
        calls = await self._recorded(model)
        if not calls or await self.failures.waiting(self.r, model):
            return calls
        live, ended = [], []
        for i, (call_id, spawned) in enumerate(calls):
            try:
                await self.modal.FunctionCall.from_id(call_id).get.aio(timeout=0)
                exc = None
            except asyncio.CancelledError:  # the autoscaler's call timeout: as if Modal did not answer
                await self.failures.failed(self.r, model, "poll", _describe(asyncio.CancelledError()))
                raise
            except Exception as e:
                exc = e
            outcome = poll_outcome(exc, self.modal.exception)
            if outcome is Outcome.UNKNOWN:
                assert exc is not None  # only an exception leaves a run's outcome unknown
                await self.failures.failed(self.r, model, "poll", _describe(exc))
                live.extend(calls[i:])
                break
            if outcome is Outcome.RUNNING:
                live.append((call_id, spawned))
            else:
                log.info(
                    "modal run %s ended%s", call_id, f": {type(exc).__name__}" if exc else "", extra={"model": model}
                )
                ended.append(call_id)
        else:
            await self.failures.succeeded(self.r, model, "poll")
        if ended:
            await self.r.hdel(self.keys.modal_calls(model), *ended)  # type: ignore[misc]
        return live

    async def replicas(self, model: str) -> int:
        return len(await self._live_calls(model))

    async def scale(self, model: str, desired: int) -> int:
        """Spawn or cancel toward `desired`; returns the count reached. Inside a backoff it does
        nothing; a failed spawn records no id (none is known) and ends this round."""
        live = await self._live_calls(model)
        if await self.failures.waiting(self.r, model):
            return len(live)
        if desired > len(live):
            return len(live) + await self._spawn(model, desired - len(live))
        remaining = len(live)
        for call_id, _ in sorted(live, key=lambda c: c[1], reverse=True)[: len(live) - desired]:
            if not await self._cancel(model, call_id):
                break
            remaining -= 1
        return remaining

    async def _spawn(self, model: str, n: int) -> int:
        cfg = self.models.get(model)
        assert cfg is not None  # the autoscaler only scales configured models
        idle_exit_s = cfg.scaling.idle_cooldown_s
        for spawned in range(n):
            try:
                call = await self._instance(model).run.spawn.aio(idle_exit_s=idle_exit_s)
            except (Exception, asyncio.CancelledError) as exc:  # cancelled: the autoscaler's call timeout
                await self.failures.failed(self.r, model, "spawn", _describe(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return spawned
            await self.r.hset(self.keys.modal_calls(model), call.object_id, str(time.time_ns()))  # type: ignore[misc]
            log.info("spawned a modal run", extra={"model": model, "call_id": call.object_id})
            await self.failures.succeeded(self.r, model, "spawn")
        return n

    async def _cancel(self, model: str, call_id: str) -> bool:
        """Cancel a run (its container's worker drains); when that fails the id stays, so the next
        round cancels it again or finds it ended."""
        try:
            await self.modal.FunctionCall.from_id(call_id).cancel.aio()
        except (Exception, asyncio.CancelledError) as exc:
            await self.failures.failed(self.r, model, "cancel", _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return False
        await self.r.hdel(self.keys.modal_calls(model), call_id)  # type: ignore[misc]
        log.info("cancelled a modal run (its worker drains)", extra={"model": model, "call_id": call_id})
        await self.failures.succeeded(self.r, model, "cancel")
        return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "no answer before the call timeout"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
