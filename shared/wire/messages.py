"""Messages carried by the internal streams (msgpack-encoded, one schema each)."""

from __future__ import annotations

from typing import Protocol

import msgspec
from msgspec import Struct

from shared.core.states import RequestStatus
from shared.wire.api import ChatMessage, ErrorInfo, ResultLine, Timings, Usage


class SamplingParams(Struct, kw_only=True, omit_defaults=True):
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None


class InferenceRequest(Struct, kw_only=True, omit_defaults=True):
    """One request as a worker receives it from its model's stream."""

    request_id: str
    job_id: str
    custom_id: str
    model: str
    params: SamplingParams
    accepted_ms: int
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    # Moves along the model's fallback chain when it has waited longer than this (ms), if set.
    max_queue_wait_ms: int | None = None
    # The id of the output contract it is held to (shared/wire/contract.py), stored once in its job's hash.
    contract: str | None = None


# A request that moved along its model's fallback chain (shared/redis/lua/lib/moves.lua): why, and the
# request as it was accepted (its `model` stays the model it named).
MovedRequest = tuple[str, InferenceRequest]


class IngestChunk(Struct, array_like=True):
    """One ingest-stream entry: up to a few hundred requests of one job, each already encoded for
    its model's stream, so the router forwards bytes without decoding prompts."""

    job_id: str
    items: list[tuple[str, str, bytes]]  # (model, lane, encoded InferenceRequest)
    deadline_ms: int = 0  # the job's deadline (0: none): its staging queues are served first


class DirectChunk(Struct, kw_only=True):
    """An ingest chunk of one model and lane that the job's creation may send straight to the lane
    stream when flow control has room (shared/jobs/lua/create_job.lua); what does not fit goes to the
    ingest stream for the router, as any chunk does."""

    chunk: bytes  # the encoded IngestChunk
    model: str
    lane: str
    payloads: list[bytes]  # its requests, as the lane stream carries them
    high_watermark: int
    low_watermark: int
    batch_bundle: int = 1  # requests per batch-lane entry (flow.batch_bundle)


class ResultEnvelope(Struct, array_like=True):
    """One results-stream entry: the job it belongs to and the public result line."""

    job_id: str
    line: ResultLine
    # The request's charge as integers, exactly (`line.usage.gpu_seconds` and `.cost` are derived
    # from them), so the collector's sums are exact: busy microseconds, micro-dollars.
    busy_us: int = 0
    cost_micros: int = 0


class ResultRecord(Struct, array_like=True):
    """One result as the collector applies it: what it counts, and the public line already encoded
    as the JSON that is stored (`line`), so the line is encoded once, by whoever produced it."""

    job_id: str
    request_id: str
    model: str
    status: str
    prompt_tokens: int
    completion_tokens: int
    line: bytes
    error_code: str = ""
    served_by: str = ""  # the model that ran it ('' when it never ran)
    busy_us: int = 0  # its share of that model's worker busy time
    cost_micros: int = 0
    queued_ms: float = 0.0  # for the per-model figures (GET /v1/model-stats)
    inference_ms: float = 0.0
    # what the planner measures tokens against (shared/planning/plan.py): the request's prompt
    # characters and its max_tokens (0: not reported)
    prompt_chars: int = 0
    max_tokens: int = 0


_line_encoder = msgspec.json.Encoder()
# Line breaks JSON lets a string hold raw, escaped so that NDJSON readers splitting on every Unicode
# line break (Python's str.splitlines, httpx's iter_lines) still read one result per line.
_RAW_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def encode_line(line: ResultLine) -> bytes:
    """A result line as the JSON that is stored and served (one NDJSON line)."""
    return one_line(_line_encoder.encode(line))


def one_line(out: bytes) -> bytes:
    """Encoded JSON with the raw line breaks of its strings escaped (the same JSON value)."""
    for raw, escaped in _RAW_BREAKS:
        if raw in out:
            out = out.replace(raw, escaped)
    return out


def result_record(job_id: str, line: ResultLine, busy_us: int = 0, cost_micros: int = 0) -> ResultRecord:
    """The record of a result line (the one place a line becomes what the collector applies)."""
    return ResultRecord(
        job_id,
        line.request_id,
        line.model,
        line.status,
        line.usage.prompt_tokens,
        line.usage.completion_tokens,
        encode_line(line),
        line.error.code if line.error else "",
        line.served_by or "",
        busy_us,
        cost_micros,
        line.timings.queued_ms,
        line.timings.inference_ms,
    )


def prompt_chars(req: InferenceRequest) -> int:
    """The characters of a request's prompt, or of its messages' contents."""
    if req.prompt is not None:
        return len(req.prompt)
    return sum(len(m.content) for m in req.messages or ())


request_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(InferenceRequest)
# What a model stream carries: a request as accepted, or one moved there from another model.
routed_decoder = msgspec.msgpack.Decoder(InferenceRequest | MovedRequest)


def decode_routed(raw: bytes) -> tuple[InferenceRequest, str | None]:
    """A model stream's (or staging queue's) request, and why it moved there (None: it did not)."""
    msg = routed_decoder.decode(raw)
    if isinstance(msg, tuple):
        return msg[1], msg[0]
    return msg, None


chunk_decoder = msgspec.msgpack.Decoder(IngestChunk)
result_decoder = msgspec.msgpack.Decoder(ResultEnvelope)
bundle_decoder = msgspec.msgpack.Decoder(list[ResultRecord])


# How a request that ended without running is reported: reason -> (status, error code, message).
DROP_OUTCOMES: dict[str, tuple[str, str, str]] = {
    RequestStatus.CANCELLED: (
        RequestStatus.CANCELLED,
        "job_cancelled",
        "the job was cancelled before this request ran",
    ),
    RequestStatus.EXPIRED: (
        RequestStatus.EXPIRED,
        "job_expired",
        "the job's completion window ended before this request ran",
    ),
    "budget_exceeded": (
        RequestStatus.FAILED,
        "budget_exceeded",
        "a spend limit covering this request's model was reached before it ran, and no model of its "
        "fallback chain was free of one (GET /v1/models shows the limits)",
    ),
    "max_attempts_exceeded": (
        RequestStatus.FAILED,
        "max_attempts_exceeded",
        "every attempt to process this request failed; it is in the dead-letter stream",
    ),
}


class RequestNames(Protocol):
    """What a result line names of its request (an InferenceRequest, or what a result recorded)."""

    @property
    def custom_id(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def model(self) -> str: ...


def ended_line(req: RequestNames, code: str, message: str, status: str = RequestStatus.FAILED) -> ResultLine:
    """The result line of a request that ends without output: no tokens, no timings, the error."""
    return ResultLine(
        custom_id=req.custom_id,
        request_id=req.request_id,
        model=req.model,
        status=status,
        output=None,
        usage=Usage(),
        error=ErrorInfo(code=code, message=message),
        timings=Timings(queued_ms=0.0, inference_ms=0.0),
    )


def dropped_line(req: RequestNames, reason: str) -> ResultLine:
    status, code, message = DROP_OUTCOMES.get(reason, (RequestStatus.FAILED, reason, reason))
    return ended_line(req, code, message, status)
