"""The `vllm` engine: vLLM's AsyncLLM in the worker process, on the worker's GPU(s).

Every request is its own `generate()` call; the worker keeps up to `max_inflight` of them running
at once, and vLLM's continuous batching packs them onto the GPU. Chat messages are rendered with
the model's chat template. max_tokens is always set (vLLM's own default is 16). A cancelled request
(shutdown, or another worker took it over) is aborted inside vLLM so it stops using the GPU. An
engine that died makes the worker exit non-zero: the platform replaces it and another worker
reclaims what it held.
"""

from __future__ import annotations

import logging
import time

from services.inference.engines.base import EngineDead, EngineError, Generation
from services.inference.engines.prompts import render_prompt
from shared.messages import InferenceRequest
from shared.models_config import VllmOptions

log = logging.getLogger("inferq.engine.vllm")


class VllmEngine:
    def __init__(self, options: VllmOptions) -> None:
        self.options = options
        self.engine = None
        self.tokenizer = None
        self._vllm = None  # the imported package's names this engine uses

    async def start(self) -> None:
        # Imported here: only GPU workers install vLLM.
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.engine.exceptions import EngineDeadError

        self._vllm = (SamplingParams, RequestOutputKind, EngineDeadError)
        o = self.options
        args = AsyncEngineArgs(
            model=o.model, revision=o.revision, tokenizer=o.tokenizer, dtype=o.dtype, max_model_len=o.max_model_len,
            gpu_memory_utilization=o.gpu_memory_utilization, tensor_parallel_size=o.tensor_parallel_size,
            max_num_seqs=o.max_num_seqs, enable_prefix_caching=o.enable_prefix_caching, enforce_eager=o.enforce_eager,
            quantization=o.quantization, trust_remote_code=o.trust_remote_code,
        )
        started = time.monotonic()
        self.engine = AsyncLLM.from_engine_args(args)
        self.tokenizer = await _maybe_await(self.engine.get_tokenizer())
        log.info("model loaded", extra={"model_path": o.model, "load_s": round(time.monotonic() - started, 1)})

    async def stop(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def sampling_params(self, request: InferenceRequest):
        SamplingParams, RequestOutputKind, _ = self._vllm
        p = request.params
        kwargs = {"max_tokens": p.max_tokens, "n": 1, "output_kind": RequestOutputKind.FINAL_ONLY}
        for name in ("temperature", "top_p", "stop", "seed"):
            if (value := getattr(p, name)) is not None:
                kwargs[name] = value
        return SamplingParams(**kwargs)

    async def generate(self, request: InferenceRequest) -> Generation:
        _, _, EngineDeadError = self._vllm
        if getattr(self.engine, "errored", False):
            raise EngineDead("vLLM's engine has stopped")
        prompt = render_prompt(self.tokenizer, request)
        params = self.sampling_params(request)
        final = None
        finished = False
        try:
            async for output in self.engine.generate(prompt, params, request.request_id):
                final = output
            finished = final is not None and final.finished
        except EngineDeadError as exc:
            raise EngineDead(f"vLLM's engine died: {exc}") from None
        except ValueError as exc:  # vLLM's input validation: prompt too long, bad parameters
            raise EngineError("invalid_request", str(exc), retryable=False) from None
        finally:
            if not finished:  # cancelled, or failed mid-way: free its GPU slot
                try:
                    await _maybe_await(self.engine.abort(request.request_id))
                except Exception as exc:  # a dead engine has nothing left to abort
                    log.warning("abort of %s failed: %s", request.request_id, exc)
        out = final.outputs[0]
        return Generation(
            text=out.text,
            finish_reason="length" if out.finish_reason == "length" else "stop",
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(out.token_ids),
        )


async def _maybe_await(value):
    """vLLM has moved some calls between sync and async across releases; accept either."""
    if hasattr(value, "__await__"):
        return await value
    return value
