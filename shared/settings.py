"""Process settings, read once from the environment.

Every service reads the same variables so one `.env` (or compose file) configures the whole stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from shared.errors import SettingsError


def valid_tenant(name: str) -> bool:
    """`default` is reserved: it is everyone when auth is off, and the owner of records older than tenancy."""
    return name != "default" and 0 < len(name) <= 63 and name[0].isalnum() and all(c.isalnum() or c in "_-" for c in name) and name.isascii()


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://localhost:6379/0"
    models_path: str = "models.toml"
    key_prefix: str = "inferq"
    host: str = "127.0.0.1"
    port: int = 8000
    max_requests_per_job: int = 50_000
    max_body_bytes: int = 64 * 1024 * 1024
    job_ttl_s: int = 7 * 24 * 3600
    # Admission control over all models: accepted-but-unfinished requests; more gets HTTP 429.
    max_backlog: int = 10_000_000
    # Retry-After (seconds) sent with a 429.
    retry_after_s: int = 5
    shutdown_grace_s: float = 30.0
    # Dispatcher streams (ingest, results): an entry read but unacknowledged this long belongs to a
    # dispatcher that died, and another takes it over. Workers use their model's reclaim_idle_s.
    reclaim_idle_s: float = 30.0
    # ... and an entry delivered more often than this (its consumers keep dying) is dead-lettered.
    max_deliveries: int = 5
    log_level: str = "INFO"
    # API keys: `on` (every /v1 route needs `Authorization: Bearer <key>`) or `off` (one tenant,
    # `default`; for local demos only). INFERQ_API_KEYS seeds keys: `tenant:key,tenant:key`.
    auth: str = "on"
    api_keys: str = ""
    # Per-tenant limits (0 = none): requests submitted per second (token bucket; a burst up to
    # `tenant_burst`, by default one maximal job) and requests accepted but not finished.
    tenant_rate: float = 0.0
    tenant_burst: int = 0
    tenant_max_queued: int = 0
    max_prompt_chars: int = 200_000
    # The public events stream keeps about this many events (one per finished request, one per job).
    events_maxlen: int = 100_000
    # Port of the /metrics endpoint of the dispatcher and workers (0 = off; ingest serves /metrics itself).
    metrics_port: int = 0
    # Webhooks: seconds before each attempt (the first is the delay after the event), per timeout,
    # and whether private addresses and plain http are allowed (both off: SSRF protection).
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_timeout_s: float = 15.0
    webhook_allow_private: bool = False
    webhook_allow_http: bool = False

    def seeded_keys(self) -> dict[str, str]:
        """INFERQ_API_KEYS as {key: tenant}."""
        out: dict[str, str] = {}
        for item in filter(None, (x.strip() for x in self.api_keys.split(","))):
            tenant, sep, key = item.partition(":")
            if not sep or not valid_tenant(tenant) or len(key) < 16:
                raise ValueError("expected `tenant:key` pairs (tenant: a-z, 0-9, _ or -, not `default`; key: at least 16 characters)")
            out[key] = tenant
        return out

    def retry_schedule(self) -> list[float]:
        return [float(x) for x in self.webhook_retry_schedule.split(",")]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            name = f"INFERQ_{field.name.upper()}"
            if field.name == "models_path":
                name = "INFERQ_MODELS"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                if field.type is bool:
                    if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                        raise ValueError
                    values[field.name] = raw.lower() in ("1", "true", "yes", "on")
                    continue
                values[field.name] = field.type(raw) if field.type is not str else raw
            except ValueError:
                raise SettingsError(
                    f"{name}={raw!r} is not a valid {field.type.__name__}"
                ) from None
        settings = cls(**values)
        for name in ("port", "max_requests_per_job", "max_body_bytes", "job_ttl_s", "max_backlog", "retry_after_s", "max_deliveries"):
            if getattr(settings, name) <= 0:
                raise SettingsError(f"INFERQ_{name.upper()} must be positive")
        try:
            schedule = settings.retry_schedule()
        except ValueError:
            schedule = []
        if not schedule or any(x < 0 for x in schedule):
            raise SettingsError("INFERQ_WEBHOOK_RETRY_SCHEDULE must be comma-separated non-negative seconds, e.g. 0,5,300")
        if settings.webhook_timeout_s <= 0:
            raise SettingsError("INFERQ_WEBHOOK_TIMEOUT_S must be positive")
        if settings.auth not in ("on", "off"):
            raise SettingsError("INFERQ_AUTH must be `on` or `off`")
        try:
            settings.seeded_keys()
        except ValueError as exc:
            raise SettingsError(f"INFERQ_API_KEYS: {exc}") from None
        if settings.events_maxlen < 1000:
            raise SettingsError("INFERQ_EVENTS_MAXLEN must be at least 1000")
        for name in ("tenant_rate", "tenant_burst", "tenant_max_queued", "metrics_port"):
            if getattr(settings, name) < 0:
                raise SettingsError(f"INFERQ_{name.upper()} must not be negative")
        if settings.max_prompt_chars <= 0:
            raise SettingsError("INFERQ_MAX_PROMPT_CHARS must be positive")
        if ":" in settings.key_prefix or not settings.key_prefix:
            raise SettingsError("INFERQ_KEY_PREFIX must be non-empty and contain no ':'")
        return settings
