"""The `vllm` engine: vLLM's AsyncLLM in the worker process, on the worker's GPU(s) (or CPU, with
the CPU build of vLLM).

Every request is its own `generate()` call; the worker keeps up to `max_inflight` of them running
at once, and vLLM's continuous batching packs them onto the device. Prompts go through vLLM's own
renderer, as its OpenAI server does: completions are tokenized with the model's special tokens,
chats are rendered with the model's chat template and tokenized without adding them again (a
template that writes BOS itself would otherwise start with two). max_tokens is always set (vLLM's
own default is 16).

Errors: vLLM reports a bad request (prompt longer than the context, an invalid sampling value) as a
`VLLMClientError`; that fails the request as `invalid_request`, never retried. A request that vLLM
itself aborted or failed is retried. A cancelled request (shutdown, or another worker took it over)
is aborted inside vLLM so it stops using the device. An engine that died makes the worker exit
non-zero: the platform replaces it and another worker reclaims what it held.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

from services.inference.engines.base import EngineDead, EngineError, FinishReason, Generation
from shared.catalog.models import ModelsFileError, VllmOptions
from shared.redis.keys import LANES
from shared.wire.contract import Contract
from shared.wire.messages import InferenceRequest

log = logging.getLogger("inferq.engine.vllm")

# vLLM's finish reasons (vllm.v1.engine.FINISH_REASON_STRINGS) as inferq reports them: `stop`
# (end of sequence or a stop string), `length` (max_tokens or the context), `repetition` (vLLM's
# repetition detection ended it); `abort` and `error` mean the request did not run to its end and
# are retried.
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "repetition": "repetition"}
_RETRYABLE_FINISH = {"abort": "engine_aborted", "error": "engine_error"}
SPECS_KEPT = 256  # contracts' constraint fields kept (vLLM caches the compiled grammars itself)
RENDER_CHUNK = 32  # requests rendered per turn of the event loop: ~2-4 ms on a 2-core host
# The sampling fields vLLM's OpenAI server fills from the model's generation_config when a request
# leaves them unset (then its neutral default); inferq's requests can set the first two.
_SERVER_DEFAULTED = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)


def engine_args(options: VllmOptions, known: set[str]) -> dict[str, Any]:
    """AsyncEngineArgs keyword arguments: the typed options plus every other `[options]` entry,
    passed through as is; names AsyncEngineArgs does not have are refused, listing the valid ones."""
    unknown = sorted(set(options.engine_args) - known)
    if unknown:
        raise ModelsFileError(f"vllm options {unknown} are not AsyncEngineArgs fields; valid names: {sorted(known)}")
    typed = {f: getattr(options, f) for f in VllmOptions.__struct_fields__ if f != "engine_args"}
    # vLLM's own request statistics cost the worker CPU per token and nothing reads them (the
    # worker reports its own metrics); `disable_log_stats = false` turns them back on.
    defaults = {"disable_log_stats": True} if "disable_log_stats" in known else {}
    return {**defaults, **{k: v for k, v in typed.items() if v is not None}, **options.engine_args}


class VllmEngine:
    def __init__(self, options: VllmOptions) -> None:
        self.options = options
        self.engine: Any = None  # vllm's AsyncLLM, once started
        self._vllm: dict[str, Any] = {}  # the imported package's names this engine uses
        self._has_chat_template = False
        self._to_render: list[tuple[InferenceRequest, asyncio.Future]] = []  # waiting to be rendered
        self._renderer: asyncio.Task | None = None
        # unset sampling fields take these (the model's generation_config), as vLLM's server does
        self.sampling_defaults: dict[str, Any] = {}
        # lanes become vLLM request priorities only where the engine schedules by priority
        # (`scheduling_policy = "priority"` in the options): elsewhere vLLM refuses a priority
        self.by_priority = options.engine_args.get("scheduling_policy") == "priority"
        self.sleep_for_snapshot = False  # set by a GPU-snapshot container before start()
        self.weights_loaded_at: float | None = None  # vLLM loads them inside its engine start
        # seconds from the first request's generate() to its first token (a start phase): that one
        # request is streamed cumulatively so the first token is seen; every other is final-only
        self.first_token_after_s: float | None = None
        self._watching_first = False
        self._specs: dict[str, dict[str, Any]] = {}  # contract id -> StructuredOutputsParams fields

    def preload(self) -> None:
        """Import vLLM (tens of seconds of a cold start): before a memory snapshot, so containers
        restored from it skip the imports. Only GPU (or vLLM-CPU) workers install vLLM."""
        if self._vllm:
            return
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.config import StructuredOutputsConfig
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.exceptions import VLLMClientError
        from vllm.renderers import ChatParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.engine.exceptions import EngineDeadError

        neutral = CompletionRequest._DEFAULT_SAMPLING_PARAMS
        self._vllm = {
            "AsyncEngineArgs": AsyncEngineArgs,
            "AsyncLLM": AsyncLLM,
            "UsageContext": UsageContext,
            "SamplingParams": SamplingParams,
            "StructuredOutputsParams": StructuredOutputsParams,
            "StructuredOutputsConfig": StructuredOutputsConfig,
            "FINAL_ONLY": RequestOutputKind.FINAL_ONLY,
            "CUMULATIVE": RequestOutputKind.CUMULATIVE,
            "EngineDeadError": EngineDeadError,
            "ClientError": VLLMClientError,
            # the template's assistant turn opener: what vLLM's chat endpoint adds by default
            "chat": ChatParams(chat_template_kwargs={"add_generation_prompt": True}),
            # the neutral value of each server-defaulted field (vLLM's own table)
            "neutral": dict(getattr(neutral, "default", neutral)),  # a pydantic private attribute
        }

    async def start(self) -> None:
        self.preload()
        v = self._vllm
        kwargs = engine_args(self.options, {f.name for f in dataclasses.fields(v["AsyncEngineArgs"])})
        # response_format: xgrammar, JSON without free whitespace (a grammar that allows any
        # whitespace lets a model spend its max_tokens on it); the models file may choose otherwise
        if "structured_outputs_config" in {f.name for f in dataclasses.fields(v["AsyncEngineArgs"])}:
            kwargs.setdefault(
                "structured_outputs_config",
                v["StructuredOutputsConfig"](backend="xgrammar", disable_any_whitespace=True),
            )
        if self.sleep_for_snapshot:
            kwargs["enable_sleep_mode"] = True  # the weights can leave the GPU memory before a snapshot
        started = time.monotonic()
        # A worker is a batch consumer: it takes the batch sizes vLLM picks for offline use (on
        # CPU twice the sequences and tokens per step of an engine embedded elsewhere); the models
        # file's max_num_seqs / max_num_batched_tokens still win.
        self.engine = v["AsyncLLM"].from_engine_args(
            v["AsyncEngineArgs"](**kwargs), usage_context=v["UsageContext"].LLM_CLASS
        )
        tokenizer = self.engine.renderer.tokenizer
        self._has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.sampling_defaults = self.engine.model_config.get_diff_sampling_param()
        log.info(
            "model loaded",
            extra={
                "model_path": self.options.model,
                "load_s": round(time.monotonic() - started, 1),
                "sampling_defaults": self.sampling_defaults,
            },
        )

    async def suspend(self) -> None:
        """Before a GPU snapshot: the KV cache dropped and the weights moved off the GPU (vLLM's
        sleep mode, level 1), so what Modal snapshots is small and consistent."""
        if self.engine is not None:
            await self.engine.reset_prefix_cache()
            await self.engine.sleep(level=1)

    async def resume(self) -> None:
        """After a restore: the weights back on the GPU, a fresh KV cache."""
        if self.engine is not None and await self.engine.is_sleeping():
            await self.engine.wake_up()

    async def stop(self) -> None:
        if self._renderer is not None:
            self._renderer.cancel()
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def sampling_params(self, request: InferenceRequest, contract: Contract | None = None):
        """vLLM's SamplingParams; it validates on construction (raises VLLMValidationError)."""
        p = request.params
        defaults, neutral = self.sampling_defaults, self._vllm["neutral"]
        # what vLLM's OpenAI server does: the request's value, else the model's default, else neutral
        kwargs: dict[str, Any] = {
            name: value if (value := getattr(p, name, None)) is not None else defaults.get(name, neutral[name])
            for name in _SERVER_DEFAULTED
        }
        kwargs.update(max_tokens=p.max_tokens, n=1, output_kind=self._vllm["FINAL_ONLY"], stop=p.stop, seed=p.seed)
        if contract is not None:
            kwargs["structured_outputs"] = self._structured(request.contract or "", contract)
        return self._vllm["SamplingParams"].from_optional(**kwargs)

    def _structured(self, contract_id: str, contract: Contract):
        """vLLM's constraint for a contract. A schema is passed as the same string every time, so
        vLLM's grammar compiler (its cache is keyed by that string) compiles it once per schema."""
        spec = self._specs.get(contract_id)
        if spec is None:
            if contract.kind == "json_schema":
                spec = {"json": json.dumps(contract.schema, separators=(",", ":"))}
            elif contract.kind == "json_object":
                spec = {"json_object": True}
            elif contract.kind == "regex":
                spec = {"regex": contract.pattern}
            else:
                spec = {"choice": list(contract.choices or ())}
            if len(self._specs) >= SPECS_KEPT:
                self._specs.pop(next(iter(self._specs)))
            self._specs[contract_id] = spec
        return self._vllm["StructuredOutputsParams"](**spec)

    def render_soon(self, request: InferenceRequest) -> asyncio.Future:
        """The request as vLLM's engine input (token ids), through the engine's renderer.

        Requests the worker starts together (one read of its stream) are rendered together on the
        event loop: vLLM's async rendering sends each prompt through a thread pool and a gather of
        its own, which cost this process more CPU than tokenizing itself, CPU that the engine core
        would otherwise have. They go RENDER_CHUNK at a time with the loop let go in between: a
        read of 2,048 chats is ~240 ms of rendering on a 2-core host (bench/render_cost.py), which
        in one call would hold back vLLM's outputs and the worker's heartbeat for that long."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._to_render.append((request, future))
        if self._renderer is None or self._renderer.done():
            self._renderer = loop.create_task(self._render_pending(), name="vllm-render")
        return future

    async def _render_pending(self) -> None:
        while self._to_render:
            batch, self._to_render = self._to_render[:RENDER_CHUNK], self._to_render[RENDER_CHUNK:]
            batch = [(request, future) for request, future in batch if not future.done()]  # cancelled
            try:
                inputs = self._render_many([request for request, _ in batch])
            except Exception:  # one bad prompt fails the whole call: render each alone to find it
                inputs = None
            for i, (request, future) in enumerate(batch):
                if future.done():
                    continue
                try:
                    future.set_result(inputs[i] if inputs is not None else self._render_many([request])[0])
                except Exception as exc:
                    future.set_exception(exc)
            await asyncio.sleep(0)  # let outputs, heartbeats and reads run between chunks

    def _render_many(self, requests: list[InferenceRequest]) -> list:
        renderer = self.engine.renderer
        texts: dict[int, str] = {}
        chats: dict[int, list[dict]] = {}
        for i, request in enumerate(requests):
            if request.messages is None:
                texts[i] = request.prompt or ""
                continue
            turns = [{"role": m.role, "content": m.content} for m in request.messages]
            if self._has_chat_template:
                chats[i] = turns
            else:  # a base model: a plain transcript, tokenized as a completion
                texts[i] = "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"
        out: list = [None] * len(requests)
        if texts:
            for i, engine_input in zip(texts, renderer.render_cmpl([{"prompt": t} for t in texts.values()])):
                out[i] = engine_input
        if chats:
            _, rendered = renderer.render_chat(list(chats.values()), self._vllm["chat"])
            for i, engine_input in zip(chats, rendered):
                out[i] = engine_input
        return out

    async def generate(
        self, request: InferenceRequest, lane: str = "batch", contract: Contract | None = None
    ) -> Generation:
        if self.engine is None or getattr(self.engine, "errored", False):
            raise EngineDead("vLLM's engine has stopped")
        final = None
        finished = False
        submitted = False
        began = time.monotonic()
        watch = self.first_token_after_s is None and not self._watching_first
        try:
            params = self.sampling_params(request, contract)
            if watch:  # each output then holds everything so far, so the last is the whole answer still
                self._watching_first = True
                params.output_kind = self._vllm["CUMULATIVE"]
            engine_input = await self.render_soon(request)
            submitted = True
            priority = {"priority": LANES.index(lane)} if self.by_priority else {}  # lower runs first
            async for output in self.engine.generate(engine_input, params, request.request_id, **priority):
                if watch and self.first_token_after_s is None and output.outputs and output.outputs[0].token_ids:
                    self.first_token_after_s = time.monotonic() - began
                final = output
            finished = final is not None and final.finished
        except self._vllm["EngineDeadError"] as exc:
            raise EngineDead(f"vLLM's engine died: {exc}") from None
        except self._vllm["ClientError"] as exc:  # prompt too long, invalid sampling values
            raise EngineError("invalid_request", str(exc), retryable=False) from None
        finally:
            if watch:
                self._watching_first = False  # measured, or the next request tries
            if submitted and not finished:  # cancelled, or failed mid-way: free its slot in vLLM
                try:
                    await self.engine.abort(request.request_id)
                except Exception as exc:  # a dead engine has nothing left to abort
                    log.warning("abort of %s failed: %s", request.request_id, exc)
        if final is None:
            raise EngineError("engine_error", "vLLM returned no output", retryable=True)
        out = final.outputs[0]
        reason = str(out.finish_reason) if out.finish_reason is not None else "stop"
        if reason in _RETRYABLE_FINISH:
            raise EngineError(
                _RETRYABLE_FINISH[reason], f"vLLM ended the request with finish_reason {reason!r}", retryable=True
            )
        if reason not in _FINISH:  # a reason newer than this adapter: said, and reported as its nearest
            log.warning("vLLM finish_reason %r is not known here; reported as stop", reason)
        return Generation(
            text=out.text,
            finish_reason=_FINISH.get(reason, "stop"),
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(out.token_ids),
        )
