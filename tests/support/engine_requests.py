"""One request as a worker hands it to an engine, for tests that drive an engine directly."""

from __future__ import annotations

from shared.wire.messages import InferenceRequest, SamplingParams


def engine_request(i: int, prompt: str | None = "the quick brown fox", messages=None, **params) -> InferenceRequest:
    """Request `i` for model `tiny`: greedy and 8 tokens unless `params` say otherwise."""
    return InferenceRequest(
        request_id=f"req_{i}",
        job_id="job_e",
        custom_id=f"c{i}",
        model="tiny",
        accepted_ms=0,
        prompt=None if messages else prompt,
        messages=messages,
        params=SamplingParams(**{"max_tokens": 8, "temperature": 0.0, **params}),
    )
