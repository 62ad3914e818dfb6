"""Every error inferq raises on purpose, in one place, so a caller can tell "try again" from
"this will never work" without reading the code that raised it.

Hierarchy:

* TRANSIENT_REDIS_ERRORS - a tuple, not a class: Redis (or the network to it) is briefly unable.
  |                          Loops wait and retry (shared/core/backoff.py), reporting to
  |                          shared/redis/outage.py; the API answers 503 with Retry-After.
  ├── REDIS_UNAVAILABLE      - raised by Redis or its client only: where other network calls
  │   │                          happen too (the autoscaler's backends), only these mean Redis.
  │   ├── redis.exceptions.ConnectionError   (BusyLoadingError: LOADING, the dataset is loading)
  │   ├── redis.exceptions.TimeoutError      (no answer within the socket timeout: a partition)
  │   ├── redis.exceptions.OutOfMemoryError  (OOM: maxmemory reached under noeviction)
  │   ├── redis.exceptions.ReadOnlyError     (READONLY: a replica, e.g. during a failover)
  │   ├── redis.exceptions.TryAgainError     (TRYAGAIN)
  │   ├── redis.exceptions.MasterDownError   (MASTERDOWN: a replica lost its primary)
  │   ├── RedisMisconfError                  (MISCONF: Redis cannot persist, so refuses writes)
  │   ├── RedisBusyError                     (BUSY: a script ran past busy-reply-threshold)
  │   └── RedisUnblockedError                (UNBLOCKED: a blocking read cut short by a failover)
  └── OSError                (sockets, DNS; the builtin ConnectionError is one)
  redis-py raises a plain ResponseError for MISCONF, BUSY, UNBLOCKED (and for TRYAGAIN, MASTERDOWN and
  every code when Redis 6.2 reports it from inside a script); the connections made by
  shared/redis/client.py parse those replies into the classes above, so `except` clauses work
  on any inferq connection, pipelines and scripts included.
* Any other redis.exceptions.RedisError is permanent (a script error, NOGROUP, WRONGTYPE): a bug
  or a deleted stream, handled where it can happen or left to crash the task that met it.
* InferqError - a domain outcome a caller handles; nothing was changed when one is raised.
  ├── ConfigError            (ValueError) - the service cannot start with this configuration.
  │   ├── SettingsError      - an INFERQ_* variable; the message names it.
  │   └── ModelsFileError    - the models file; the message names the file and the entry.
  ├── UnsafeURL              (ValueError) - a webhook URL inferq must not call (SSRF guard).
  ├── JobRefused             - a submission was not accepted; nothing of it was written.
  │   ├── AdmissionRejected  - a model's (or the overall) backlog would pass its limit.
  │   ├── TenantLimitReached - the tenant's unfinished requests would pass its limit.
  │   ├── IdempotencyConflict - the Idempotency-Key was used with another body.
  │   └── IdempotentJobExpired - the Idempotency-Key's job has expired (its record is gone).
  ├── StopRefused            - cancel or expire of a finished or missing job.
  ├── RequeueRefused         - a dead-lettered request cannot run again (its job is gone or
  │                            stopped, or its failure is not recorded).
  ├── DeliveryPending        - a webhook delivery asked to be sent again is already due.
  └── EndpointLimitReached   - the tenant already has its most webhook endpoints.

Engine errors (a model's failure, retryable or not; a dead engine) belong to the inference service:
services/inference/engines/base.py.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import (
    BusyLoadingError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class RedisMisconfError(ResponseError):
    """MISCONF: Redis failed to persist (disk full, an RDB or AOF write failing) and refuses writes
    until it can again."""


class RedisBusyError(ResponseError):
    """BUSY: a script or function has run past busy-reply-threshold; Redis answers nothing else
    until it ends or is killed."""


class RedisUnblockedError(ResponseError):
    """UNBLOCKED: a blocking read (XREADGROUP BLOCK) was ended by the server: it became a replica
    (a failover), or its stream was deleted; the next read tells which."""


# Redis is there but briefly refuses (memory, persistence, a failover, loading, a long script), or
# does not answer at all (connection refused or reset, a socket timeout).
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
    MasterDownError,
    RedisMisconfError,
    RedisBusyError,
    RedisUnblockedError,
)
TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, OSError)


def redis_refused(exc: BaseException) -> bool:
    """Redis answered that it did not run the command (OOM, READONLY, LOADING...): nothing was
    written. Otherwise (a lost connection, a timeout) the command may have run before the reply
    was lost."""
    return isinstance(exc, (ResponseError, BusyLoadingError))


class InferqError(Exception):
    """Base of the domain errors: expected outcomes, each handled by its caller."""


class ConfigError(InferqError, ValueError):
    """The service cannot start with this configuration."""


class SettingsError(ConfigError):
    """An environment variable holds a value the services cannot use; the message names it."""


class ModelsFileError(ConfigError):
    """The models file cannot be used; the message names the file and the entry."""


def describe_validation(exc) -> str:
    """msgspec says `... - at `$.x``; a config error reads better as `x: ...`."""
    text = str(exc)
    msg, sep, path = text.rpartition(" - at `")
    if not sep:
        return text
    return f"{path.rstrip('`').removeprefix('$.').removeprefix('$')}: {msg}".lstrip(": ")


class UnsafeURL(InferqError, ValueError):
    """A URL inferq must not call: it reaches, or may reach, inferq's own network."""


class JobRefused(InferqError):
    """A job was not accepted; nothing of it was written, and the same job may be sent again."""


class AdmissionRejected(JobRefused):
    """Accepting the job would push a model's (or the overall) unfinished backlog over its limit."""

    def __init__(self, model: str | None, current: int, limit: int) -> None:
        super().__init__(f"backlog of {model or 'all models'} is {current}; limit {limit}")
        self.model = model
        self.current = current
        self.limit = limit


class TenantLimitReached(JobRefused):
    """Accepting the job would push the tenant's unfinished requests over its limit."""

    def __init__(self, tenant: str, current: int, limit: int) -> None:
        super().__init__(f"tenant {tenant} has {current} unfinished requests; limit {limit}")
        self.tenant = tenant
        self.current = current
        self.limit = limit


class IdempotencyConflict(JobRefused):
    """The Idempotency-Key was used for a different body within 24 h (`job_id`: the first job)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class IdempotentJobExpired(JobRefused):
    """The Idempotency-Key (same body) created `job_id`, whose record has since expired: replaying
    it would answer for a job that no longer exists, and a new job would not be a replay."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class StopRefused(InferqError):
    """Cancel or expire of a job that is finished (`status`) or does not exist (`status` None)."""

    def __init__(self, status: str | None) -> None:
        super().__init__(status or "missing")
        self.status = status


class RequeueRefused(InferqError):
    """A dead-lettered request cannot be staged again. `reason`: `gone` (its job no longer
    exists), `stopped` (its job is `status`: cancelled or expired) or `not_failed` (no recorded
    failure to undo: not yet collected, or already requeued)."""

    REASONS = ("gone", "stopped", "not_failed")

    def __init__(self, reason: str, status: str = "") -> None:
        super().__init__(f"{reason} ({status})" if status else reason)
        self.reason = reason
        self.status = status


class DeliveryPending(InferqError):
    """A webhook delivery asked to be sent again already has an attempt scheduled (`rec`)."""

    def __init__(self, rec: Any) -> None:
        super().__init__(rec.id)
        self.rec = rec


class EndpointLimitReached(InferqError):
    """The tenant already has `count` webhook endpoints, its `limit`; nothing was written."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} of {limit} webhook endpoints")
        self.count = count
        self.limit = limit
