"""The interface every engine implements; the worker loop drives all of them the same way."""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from shared.wire.contract import Contract
from shared.wire.messages import InferenceRequest

FinishReason = Literal["stop", "length", "repetition"]  # docs/results.md


class Generation(msgspec.Struct, kw_only=True):
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class EngineError(Exception):
    """An engine failure with a code the result reports. `retryable` says whether running the same
    request again may succeed (overload, lost connection) or never will (prompt too long)."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class EngineDead(Exception):
    """The engine cannot serve any more requests (its GPU process died, CUDA failed). The worker
    exits non-zero without acknowledging what it holds, so the platform replaces it and another
    worker reclaims the requests."""


class Engine(Protocol):
    async def start(self) -> None:
        """Load the model; called once before the first request."""

    async def generate(
        self, request: InferenceRequest, lane: str = "batch", contract: Contract | None = None
    ) -> Generation:
        """Run one request; many calls run concurrently (up to the model's max_inflight). `lane`
        is the stream it came from (`interactive` before `batch`), for engines that prioritise.
        `contract` (only of the kinds CONTRACT_KINDS gives the engine) is the shape the output must take: the
        engine constrains its decoding to it, or passes it on; the worker validates the result.

        Cancelling the calling task (shutdown, or another worker took the request over) must stop
        the work the request holds in the engine. Raises EngineError or EngineDead."""

    async def stop(self) -> None:
        """Release the model; called once after the last request."""
