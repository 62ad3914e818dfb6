"""Event sinks as the models file declares them: `[sinks.NAME]` tables beside `[models.*]`.

```toml
[sinks.broker]                    # a CloudEvents HTTP receiver (Knative broker, Argo Events, ...)
kind = "http"
url = "https://broker.internal/default"
mode = "binary"                   # "structured" | "binary" | "batch"
types = ["job.completed", "job.failed"]   # all event types when left out
tenants = ["acme"]                # only these tenants' events (all when left out)
headers_env = { Authorization = "BROKER_AUTH" }   # header value read from the env variable

[sinks.bus]                       # NATS JetStream
kind = "nats"
servers = ["nats://127.0.0.1:4222"]
subject = "inferq.{type}"         # {type}: job.completed, request.completed, ...
stream = "INFERQ"                 # created (subjects from `subject`) when missing; optional
```

The dispatcher delivers every event of the events stream to each sink at least once, in stream
order, the CloudEvent `id` being the dedupe key (services/dispatcher/sinks/)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from shared.core.errors import ModelsFileError, describe_validation
from shared.wire.events import EVENT_TYPES

SINK_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EventName = Literal[
    "job.completed", "job.failed", "job.cancelled", "job.expired", "job.deadline_at_risk", "request.completed"
]
assert set(EventName.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]
HttpMode = Literal["structured", "binary", "batch"]
Start = Literal["earliest", "latest"]
EnvName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
HeaderName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
_RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding"}


class _Common(Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    # Event types to send, short names (`job.completed`); all of them when left out.
    types: list[EventName] = msgspec.field(default_factory=lambda: list(EVENT_TYPES))  # type: ignore[arg-type]
    # Only events of these tenants' jobs; every tenant's when left out. A scoped sink is shown to
    # its tenants in GET /v1/sinks.
    tenants: list[Annotated[str, Meta(min_length=1)]] = []
    # Only events of jobs whose metadata holds each of these key/value pairs.
    metadata: dict[str, str] = {}
    # Where a sink seen for the first time starts: the oldest event still in the stream, or the next one.
    start: Start = "earliest"
    # Events read and handed over per step; the cursor moves once per step.
    batch_size: Annotated[int, Meta(ge=1, le=1000)] = 100
    # Retries back off from `retry_initial_s` doubling to `retry_max_s`; the sink never gives up on
    # an event it could not hand over (it is at least once), it keeps retrying and reports the error.
    retry_initial_s: Annotated[float, Meta(gt=0)] = 0.5
    retry_max_s: Annotated[float, Meta(gt=0)] = 30.0
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0

    def wants_all_jobs(self) -> bool:
        return not self.tenants and not self.metadata


class HttpSink(_Common, tag="http"):
    url: Annotated[str, Meta(min_length=1)]
    mode: HttpMode = "structured"
    # Requests in flight at once in structured and binary mode; a job's events are sent one after
    # another (in order), different jobs' side by side.
    concurrency: Annotated[int, Meta(ge=1, le=256)] = 8
    # Extra request headers, each read from the named environment variable (credentials stay out
    # of the file). A variable that is not set is a start-up error naming it.
    headers_env: dict[HeaderName, EnvName] = {}
    # Plain http and private addresses, as for webhooks (INFERQ_WEBHOOK_ALLOW_HTTP / _PRIVATE)
    # unless set here: a sink is the operator's, often on the cluster's own network.
    allow_http: bool | None = None
    allow_private: bool | None = None


class NatsSink(_Common, tag="nats"):
    servers: Annotated[list[Annotated[str, Meta(pattern=r"^(nats|tls|ws|wss)://")]], Meta(min_length=1)]
    # Subject per event: `{type}` is the short event type (job.completed, request.completed).
    subject: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.{}-]+$")] = "inferq.{type}"
    # JetStream stream to create when missing, over the subjects `subject` yields; left out, a
    # stream must already take those subjects (publishing is refused otherwise, and retried).
    stream: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    # Credentials, each from an environment variable or file.
    user_env: EnvName | None = None
    password_env: EnvName | None = None
    token_env: EnvName | None = None
    creds_file: str | None = None

    def subject_for(self, event_type: str) -> str:
        return self.subject.replace("{type}", event_type)

    def subjects(self) -> list[str]:
        """The subjects this sink publishes to (for the stream it may create)."""
        return sorted({self.subject_for(t) for t in self.types})


SinkConfig = HttpSink | NatsSink


def parse_sinks(table: Any, source: str) -> dict[str, SinkConfig]:
    """The `[sinks.NAME]` tables, or ModelsFileError naming the sink and the field."""
    if not isinstance(table, dict):
        raise ModelsFileError(f"models file {source}: sinks must be a table of [sinks.NAME] tables")
    out: dict[str, SinkConfig] = {}
    for name, entry in table.items():
        where = f"models file {source}: sink {name!r}"
        if not SINK_NAME_RE.match(name):
            raise ModelsFileError(f"{where}: invalid name (letters, digits, _ and - only, at most 64 characters)")
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ModelsFileError(f'{where}: needs kind = "http" or kind = "nats"')
        if entry["kind"] not in ("http", "nats"):
            raise ModelsFileError(f'{where}: kind: unknown kind {entry["kind"]!r}; expected "http" or "nats"')
        try:
            cfg = msgspec.convert(entry, SinkConfig)
        except msgspec.ValidationError as exc:
            raise ModelsFileError(f"{where}: {describe_validation(exc)}") from None
        _check(cfg, where)
        out[name] = cfg
    return out


def _check(cfg: SinkConfig, where: str) -> None:
    if not cfg.types:
        raise ModelsFileError(f"{where}: types: empty, so the sink would get nothing; leave it out for every type")
    if cfg.retry_initial_s > cfg.retry_max_s:
        raise ModelsFileError(f"{where}: retry_initial_s exceeds retry_max_s")
    if isinstance(cfg, HttpSink):
        if not re.match(r"^https?://", cfg.url):
            raise ModelsFileError(f"{where}: url: must start with https:// (or http://)")
        if "@" in cfg.url.split("/")[2]:
            raise ModelsFileError(f"{where}: url: must not carry credentials; use headers_env")
        reserved = sorted(h for h in cfg.headers_env if h.lower() in _RESERVED_HEADERS or h.lower().startswith("ce-"))
        if reserved:
            raise ModelsFileError(f"{where}: headers_env: {reserved} are set by the CloudEvents binding")
    else:
        if any("@" in server.split("://", 1)[1].split("/")[0] for server in cfg.servers):
            raise ModelsFileError(
                f"{where}: servers: must not carry credentials; use user_env/password_env or token_env"
            )
        if cfg.creds_file and (cfg.user_env or cfg.token_env):
            raise ModelsFileError(f"{where}: creds_file and user_env/token_env are different ways to log in; pick one")
        if (cfg.user_env is None) != (cfg.password_env is None):
            raise ModelsFileError(f"{where}: user_env and password_env go together")
        if cfg.subject.count("{") != cfg.subject.count("{type}") or "}" in cfg.subject.replace("{type}", ""):
            raise ModelsFileError(f"{where}: subject: the only placeholder is {{type}}")
