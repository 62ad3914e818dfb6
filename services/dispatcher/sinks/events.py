"""One event as a sink handles it, and what became of handing it over.

The document is the events stream's CloudEvents JSON; the CloudEvents SDK parses it (checking it
is a valid CloudEvent) and writes each protocol binding's message (shared by every sink kind)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.formats.json import JSONFormat

from shared.redis.keys import EVENT_FIELD
from shared.redis.streams import Entry

FORMAT = JSONFormat()
_EVENT, _TYPE, _JOB = EVENT_FIELD.encode(), b"type", b"job"


@dataclass
class SinkEvent:
    entry_id: bytes
    type: str  # short type: job.completed, request.completed
    job_id: str
    document: bytes  # CloudEvents JSON, as on the events stream
    _event: BaseCloudEvent | None = field(default=None, repr=False)

    @classmethod
    def of(cls, entry: Entry) -> SinkEvent:
        entry_id, fields = entry
        return cls(
            entry_id=entry_id,
            type=fields.get(_TYPE, b"").decode(),
            job_id=fields.get(_JOB, b"").decode(),
            document=fields.get(_EVENT, b""),
        )

    @property
    def cloudevent(self) -> BaseCloudEvent:
        """The SDK's event (parsed once); raises on a document that is not a CloudEvent."""
        if self._event is None:
            self._event = FORMAT.read(None, self.document)
        return self._event

    @property
    def id(self) -> str:
        return self.cloudevent.get_id()


@dataclass(frozen=True)
class Outcome:
    """`delivered`: the sink has it. `rejected`: the receiver refused this event as malformed and
    would refuse it again (skipped, counted). `failed`: try again after `retry_after_s` at least."""

    kind: Literal["delivered", "rejected", "failed"]
    detail: str = ""
    retry_after_s: float = 0.0


DELIVERED = Outcome("delivered")


def error_text(exc: BaseException) -> str:
    """An exception as a sink's `last_error` shows it: its type, then its message if any."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
