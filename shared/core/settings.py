"""Process settings, read once from the environment.

Every service reads the same variables so one `.env` (or compose file) configures the whole stack.
Each field is the variable `INFERQ_<FIELD>` (`models_path` is `INFERQ_MODELS`); its type and
`Meta` constraints are the validation, so a bad value stops the service at start with an error
naming the variable, never later inside a request.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shared.core.errors import SettingsError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_SECONDS_LIST = r"^\s*\d+(\.\d+)?\s*(,\s*\d+(\.\d+)?\s*)*$"
_ENV_NAMES = {"models_path": "INFERQ_MODELS"}


def valid_tenant(name: str) -> bool:
    """`default` is reserved: it is everyone when auth is off, and the owner of records older than tenancy."""
    return (
        name != "default"
        and 0 < len(name) <= 63
        and name[0].isalnum()
        and all(c.isalnum() or c in "_-" for c in name)
        and name.isascii()
    )


Positive = Annotated[int, Meta(ge=1, description="positive")]
NotNegative = Annotated[int, Meta(ge=0, description="zero or more")]
Port = Annotated[int, Meta(ge=1, le=65535, description="positive (a TCP port, at most 65535)")]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: Annotated[
        str, Meta(pattern=r"^(redis|rediss|unix)://", description="a redis://, rediss:// or unix:// URL")
    ] = "redis://localhost:6379/0"
    # Every Redis connection: seconds to connect, and to wait for any reply (more than the longest
    # blocking read, the 5 s of GET /v1/jobs/{id}/events), so a partition fails over to backoff
    # instead of hanging; TCP keepalive finds a dead peer on idle connections.
    redis_connect_timeout_s: Annotated[float, Meta(gt=0, description="positive")] = 5.0
    redis_socket_timeout_s: Annotated[
        float, Meta(gt=5, description="more than 5 seconds (the longest blocking read)")
    ] = 10.0
    models_path: str = "models.toml"
    key_prefix: Annotated[str, Meta(pattern=r"^[^:]+$", description="non-empty, without ':'")] = "inferq"
    host: str = "127.0.0.1"
    port: Port = 8000
    max_requests_per_job: Positive = 50_000
    max_body_bytes: Positive = 64 * 1024 * 1024
    job_ttl_s: Positive = 7 * 24 * 3600
    # Admission control over all models: accepted-but-unfinished requests; more gets HTTP 429.
    max_backlog: Positive = 10_000_000
    # Retry-After (seconds) sent with a 429.
    retry_after_s: Positive = 5
    shutdown_grace_s: Annotated[float, Meta(ge=0, description="zero or more seconds")] = 30.0
    # Dispatcher streams (ingest, results): an entry read but unacknowledged this long belongs to a
    # dispatcher that died, and another takes it over. Workers use their model's reclaim_idle_s.
    reclaim_idle_s: Annotated[float, Meta(gt=0, description="positive")] = 30.0
    # ... and an entry delivered more often than this (its consumers keep dying) is dead-lettered.
    max_deliveries: Positive = 5
    # Every stream consumer (router, collector, webhook fan-out, workers) renews a heartbeat key with
    # this TTL every quarter of it; a consumer whose key is gone is dead and its work is taken over.
    heartbeat_ttl_s: Annotated[float, Meta(ge=1, description="at least 1 second")] = 10.0
    log_level: str = "INFO"
    # API keys: `on` (every /v1 route needs `Authorization: Bearer <key>`) or `off` (one tenant,
    # `default`; for local demos only). INFERQ_API_KEYS seeds keys: `tenant:key,tenant:key`.
    auth: Annotated[Literal["on", "off"], Meta(description="`on` or `off`")] = "on"
    api_keys: str = ""
    # Per-tenant limits (0 = none): requests submitted per second (token bucket; a burst up to
    # `tenant_burst`, by default one maximal job) and requests accepted but not finished.
    tenant_rate: Annotated[float, Meta(ge=0, description="zero or more")] = 0.0
    tenant_burst: NotNegative = 0
    tenant_max_queued: NotNegative = 0
    max_prompt_chars: Positive = 200_000
    # The public events stream keeps about this many events (one per finished request, one per job).
    events_maxlen: Annotated[int, Meta(ge=1000, description="at least 1000")] = 100_000
    # Dead letters are kept this long and at most this many (the oldest go first).
    dead_letter_max_age_s: Positive = 7 * 24 * 3600
    dead_letter_maxlen: Annotated[int, Meta(ge=100, description="at least 100")] = 100_000
    # The webhook fan-out's work stream holds at most this many events: past 90% of it request
    # events are refused (counted, logged), past all of it job events too.
    webhook_events_maxlen: Annotated[int, Meta(ge=1000, description="at least 1000")] = 1_000_000
    # A webhook delivery is kept this long after it ended (or after its next attempt was due), and an
    # endpoint's delivery list keeps at most this many of the newest.
    webhook_delivery_ttl_s: Positive = 7 * 24 * 3600
    webhook_deliveries_per_endpoint: Positive = 10_000
    # Uploaded files per tenant (they count until deleted or expired): total bytes and number.
    tenant_file_bytes: Positive = 1024 * 1024 * 1024
    tenant_files: Positive = 1000
    # Webhook endpoints a tenant may register (a job's own endpoint expires and does not count).
    tenant_webhooks: Positive = 100
    # Port of the /metrics endpoint of the dispatcher and workers (0 = off; ingest serves /metrics itself).
    metrics_port: Annotated[int, Meta(ge=0, le=65535, description="0 (off) or a TCP port, at most 65535")] = 0
    # Webhooks: seconds before each attempt (the first is the delay after the event), per timeout,
    # and whether private addresses and plain http are allowed (both off: SSRF protection).
    webhook_retry_schedule: Annotated[
        str, Meta(pattern=_SECONDS_LIST, description="comma-separated non-negative seconds (e.g. 0,5,300)")
    ] = "0,5,300,1800,7200,18000,36000,36000"
    webhook_timeout_s: Annotated[float, Meta(gt=0, description="positive")] = 15.0
    webhook_allow_private: bool = False
    webhook_allow_http: bool = False
    # At most this many webhook attempts in flight to one endpoint, over all dispatchers.
    webhook_max_concurrency_per_endpoint: Positive = 4
    # CA certificates (a PEM file) to verify webhook receivers' certificates against instead of the
    # system's, for receivers behind a private CA ("" = the system's). Verification is never off.
    webhook_ca_bundle: str = ""
    # Local scaling backend: where the dispatcher writes the logs of the workers it starts ("" = none).
    local_worker_log_dir: str = ""
    # The Modal app the GPU workers are deployed as (`modal deploy`), which the dispatcher spawns runs of.
    modal_app: Annotated[str, Meta(min_length=1, description="a Modal app name")] = "inferq"
    # Read by `modal deploy` only: the Modal Secrets holding INFERQ_REDIS_URL and (optional, for
    # gated models) HF_TOKEN.
    modal_redis_secret: str = "inferq-redis"
    modal_hf_secret: str = ""

    def seeded_keys(self) -> dict[str, str]:
        """INFERQ_API_KEYS as {key: tenant}."""
        out: dict[str, str] = {}
        for item in filter(None, (x.strip() for x in self.api_keys.split(","))):
            tenant, sep, key = item.partition(":")
            if not sep or not valid_tenant(tenant) or len(key) < 16:
                raise ValueError(
                    "expected `tenant:key` pairs (tenant: a-z, 0-9, _ or -, not `default`; key: at least 16 characters)"
                )
            out[key] = tenant
        return out

    def retry_schedule(self) -> list[float]:
        return [float(x) for x in self.webhook_retry_schedule.split(",")]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings from the environment (unset or empty variables keep their defaults);
        SettingsError naming the variable for a value of the wrong type or out of bounds."""
        env = os.environ if env is None else env
        raw: dict[str, str] = {}
        for field in msgspec.structs.fields(cls):
            value = env.get(env_name(field.name))
            if value:
                raw[field.name] = _bool_word(value) if field.type is bool else value
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise _named(exc, env) from None
        try:
            settings.seeded_keys()
        except ValueError as exc:
            raise SettingsError(f"INFERQ_API_KEYS: {exc}") from None
        return settings


def env_name(field: str) -> str:
    """The environment variable a Settings field is read from."""
    return _ENV_NAMES.get(field, f"INFERQ_{field.upper()}")


def _bool_word(value: str) -> str:
    """The spellings of yes and no that the variables accept, as msgspec's `true` / `false`."""
    word = value.strip().lower()
    return "true" if word in _TRUE else "false" if word in _FALSE else value


def _named(exc: msgspec.ValidationError, env: Mapping[str, str]) -> SettingsError:
    """msgspec's `Expected `int` >= 1 - at `$.port`` as `INFERQ_PORT must be positive, not '0'`."""
    problem, _, where = str(exc).rpartition(" - at `$.")
    field = where.rstrip("`")
    name = env_name(field)
    value = env.get(name, "")
    wrong_type = re.match(r"Expected `(\w+)`, got `str`", problem)
    if wrong_type:
        return SettingsError(f"{name}={value!r} is not a valid {wrong_type.group(1)}")
    description = _descriptions().get(field)
    if description:
        return SettingsError(f"{name} must be {description}, not {value!r}")
    return SettingsError(f"{name}={value!r}: {problem}")


def _descriptions() -> dict[str, str]:
    """Each constrained field's `Meta(description=...)`: what a valid value is, in words."""
    out: dict[str, str] = {}
    for field, hint in typing.get_type_hints(Settings, include_extras=True).items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, Meta) and meta.description:
                out[field] = meta.description
    return out
