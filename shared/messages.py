"""Messages carried by the internal streams (msgpack-encoded, one schema each)."""

from __future__ import annotations

import msgspec
from msgspec import Struct

from shared.api import ChatMessage, ResultLine


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


class IngestChunk(Struct, array_like=True):
    """One ingest-stream entry: up to a few hundred requests of one job, each already encoded for
    its model's stream, so the router forwards bytes without decoding prompts."""

    job_id: str
    items: list[tuple[str, str, bytes]]  # (model, lane, encoded InferenceRequest)


class ResultEnvelope(Struct, array_like=True):
    """One results-stream entry: the job it belongs to and the public result line."""

    job_id: str
    line: ResultLine


request_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(InferenceRequest)
chunk_decoder = msgspec.msgpack.Decoder(IngestChunk)
result_decoder = msgspec.msgpack.Decoder(ResultEnvelope)
