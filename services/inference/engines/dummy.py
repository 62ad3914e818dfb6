"""The `dummy` engine: a simulator for pipeline tests and benchmarks, not a language model.

It echoes the prompt's words back (up to max_tokens, cut at a stop sequence) after a configurable
latency, and counts whitespace-separated words as tokens; `failure_rate` makes a reproducible share
of requests fail, `poison_text` makes matching requests always fail with a retryable error, and
`crash_text` makes the worker process exit on them, and `flaky_attempts` makes every request fail
(retryably) its first attempts; `runs_log` names a file where each run is recorded as it starts
(process and request), so tests can count how often each request ran. It exercises the whole pipeline, with
realistic timing when latency is set, at no compute cost.
"""

from __future__ import annotations

import asyncio
import os
import zlib

from services.inference.engines.base import EngineError, FinishReason, Generation
from shared.catalog.models import DummyOptions
from shared.wire.messages import InferenceRequest


class DummyEngine:
    def __init__(self, options: DummyOptions) -> None:
        self.options = options
        self._attempts: dict[str, int] = {}  # request id -> attempts so far (flaky_attempts)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def generate(self, request: InferenceRequest, lane: str = "batch", contract: object = None) -> Generation:
        """`contract` is never given: the dummy engine is not one that enforces contracts."""
        if request.messages is not None:
            prompt_words = [w for m in request.messages for w in m.content.split()]
            source = request.messages[-1].content.split()
        else:
            prompt_words = source = (request.prompt or "").split()
        limit = request.params.max_tokens
        words = source[:limit]
        finish: FinishReason = "length" if len(source) > limit else "stop"
        text = " ".join(words)
        for stop in request.params.stop or ():
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                words = text.split()
        everything = " ".join(prompt_words)
        if self.options.runs_log:
            with open(self.options.runs_log, "a") as log:  # one short append: whole lines across processes
                log.write(f"{os.getpid()} {request.request_id}\n")
        if self.options.crash_text and self.options.crash_text in everything:
            os._exit(86)  # simulate a GPU fault that takes the worker down mid-request
        delay = self.options.latency_ms + self.options.ms_per_token * len(words)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if self.options.flaky_attempts:
            seen = self._attempts[request.request_id] = self._attempts.get(request.request_id, 0) + 1
            if seen <= self.options.flaky_attempts:
                raise EngineError(
                    "simulated_unavailable", f"the dummy engine is flaky (attempt {seen})", retryable=True
                )
            del self._attempts[request.request_id]
        if self.options.poison_text and self.options.poison_text in everything:
            raise EngineError(
                "simulated_overload", "the dummy engine always fails this request (poison_text)", retryable=True
            )
        if self.options.failure_rate and zlib.crc32(request.request_id.encode()) < self.options.failure_rate * 2**32:
            raise EngineError(
                "simulated_failure", "the dummy engine failed this request on purpose (failure_rate)", retryable=False
            )
        return Generation(
            text=text, finish_reason=finish, prompt_tokens=len(prompt_words), completion_tokens=len(words)
        )
