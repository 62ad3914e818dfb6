"""Redis connections, and the start-up checks that the server can hold our data.

Every connection is made here, so every one has the same timeouts, keepalive and error classes:
a reply Redis sends when it is briefly unable (MISCONF, BUSY, UNBLOCKED, TRYAGAIN, MASTERDOWN,
and any of them reported from inside a script by Redis 6.2) is raised as one of the classes of
`shared.core.errors.REDIS_UNAVAILABLE`, never as a plain ResponseError, whichever call met it (a
command, a pipeline, EVALSHA).
"""

from __future__ import annotations

import re
import socket
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import DefaultParser
from redis.exceptions import MasterDownError, ResponseError, TryAgainError

from shared.core.errors import RedisBusyError, RedisMisconfError, RedisUnblockedError
from shared.core.settings import Settings

EVICTING_POLICIES = {
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
}
# XAUTOCLAIM, LPOP with a count and XTRIM MINID came with Redis 6.2.
MIN_REDIS_VERSION = (6, 2)
# Probes sent on an idle connection, so a peer that vanished without a reset is noticed.
KEEPALIVE = {
    name: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}
_EXTRA_CODES: dict[str, type[ResponseError]] = {
    "MISCONF": RedisMisconfError,
    "BUSY": RedisBusyError,
    "UNBLOCKED": RedisUnblockedError,
    "TRYAGAIN": TryAgainError,
    "MASTERDOWN": MasterDownError,
}
# Redis 6.2 wraps the error of a command called by a script: "ERR Error running script (call to
# f_<sha>): @user_script:1: @user_script: 1: -OOM command not allowed ..." (7.0 keeps the code first).
_SCRIPT_ERROR = re.compile(r"^ERR Error running script .*?: -([A-Z]+) ")


class _Parser(DefaultParser):  # type: ignore[valid-type,misc]  # DefaultParser is a variable of redis-py's
    """redis-py's reply parser, with the codes of a Redis that is briefly unable mapped to their
    classes (redis-py leaves MISCONF, BUSY and UNBLOCKED plain ResponseErrors)."""

    EXCEPTION_CLASSES = {**DefaultParser.EXCEPTION_CLASSES, **_EXTRA_CODES}

    @classmethod
    def parse_error(cls, response: str) -> ResponseError:
        wrapped = _SCRIPT_ERROR.match(response)
        if wrapped:
            found = cls.EXCEPTION_CLASSES.get(wrapped.group(1))
            if isinstance(found, type):
                return found(response)
        return super().parse_error(response)


def connection_options(settings: Settings | None = None, *, tcp: bool = True) -> dict[str, Any]:
    """What every connection is made with: bytes replies (payloads are msgpack, decoding is the
    caller's business), timeouts, keepalive (TCP only: a unix socket has none), and the error
    classes above."""
    settings = settings or Settings()
    options: dict[str, Any] = {
        "decode_responses": False,
        "health_check_interval": 30,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "parser_class": _Parser,
    }
    if tcp:
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = {getattr(socket, name): value for name, value in KEEPALIVE.items()}
    return options


def connect(
    url: str, settings: Settings | None = None, *, client_class: type[aioredis.Redis] = aioredis.Redis, **overrides: Any
) -> aioredis.Redis:
    """A client for `url` with the connection options of `settings` (defaults when None);
    `client_class` is arq's ArqRedis for the dispatcher's job queue."""
    options = connection_options(settings, tcp=not url.startswith("unix://"))
    return client_class.from_url(url, **{**options, **overrides})


def version_problem(info: dict) -> str | None:
    """Why a server whose INFO server section is `info` cannot run inferq, or None."""
    found = str(info.get("redis_version", ""))
    parts = re.match(r"(\d+)\.(\d+)", found)
    if parts is None or (int(parts.group(1)), int(parts.group(2))) < MIN_REDIS_VERSION:
        needed = ".".join(map(str, MIN_REDIS_VERSION))
        return (
            f"Redis {found or '(unknown version)'} found; inferq needs Redis {needed} or newer "
            "(XAUTOCLAIM, LPOP with a count, XTRIM MINID)"
        )
    return None


def check_server_at_start(url: str) -> str | None:
    """Run by every service before it starts: an error message if the server is too old or may
    evict data (the service must refuse to start), else None. An unreachable Redis is not an
    error here: the services wait for it and /readyz reports it."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        # the sync client's commands are typed as possibly awaitable; these return dicts
        try:
            info = cast(dict, client.info("server"))
        except redis.ResponseError:  # INFO disabled or renamed: cannot check
            info = None
        if info is not None and (problem := version_problem(info)):
            return f"{problem}: {url}"
        try:
            config = cast(dict, client.config_get("maxmemory-policy"))
        except redis.ResponseError:  # CONFIG disabled (managed Redis): cannot check
            return None
        policy = config.get("maxmemory-policy", b"")
    except (redis.ConnectionError, redis.TimeoutError):  # LOADING too: it will answer soon
        return None
    finally:
        client.close()
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if policy in EVICTING_POLICIES:
        return (
            f"Redis at {url} has maxmemory-policy {policy!r}, which can evict queued requests and job "
            "records; set it to 'noeviction' (redis-server --maxmemory-policy noeviction)"
        )
    return None
