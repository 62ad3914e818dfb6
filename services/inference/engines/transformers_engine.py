"""The `transformers` engine: a Hugging Face causal LM in the worker process, on CPU or GPU.

The local default engine. Concurrent generate() calls are gathered into batches (up to
`max_batch_size`, waiting at most `batch_wait_ms` for company) and run as one left-padded
`model.generate` call in a thread, so the event loop keeps serving Redis while the model computes.
Requests in one batch share their sampling settings (temperature, top_p); each keeps its own
max_tokens and stop sequences, applied to its own row. A sampled request with a seed runs in a batch
of its own, so its seed reproduces its text. Requests held to a response_format batch with those of
the same contract: xgrammar's logits processor for transformers masks, at every step, the tokens
its grammar (compiled once per contract) does not allow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from services.inference.engines.base import EngineDead, EngineError, FinishReason, Generation
from services.inference.engines.prompts import cut_at_stop, render_prompt
from shared.catalog.models import TransformersOptions
from shared.wire.contract import Contract
from shared.wire.messages import InferenceRequest

log = logging.getLogger("inferq.engine.transformers")
GRAMMARS_KEPT = 256  # compiled grammars kept, oldest dropped first


@dataclass(eq=False)
class _Pending:
    request: InferenceRequest
    future: asyncio.Future
    prompt_ids: list[int] = field(default_factory=list)
    contract: Contract | None = None

    @property
    def batch_key(self) -> tuple:
        """Requests run in one generate() call only with equal keys: sampling, and contract."""
        return (*self.sampling_key, self.request.contract if self.contract is not None else None)

    @property
    def sampling_key(self) -> tuple:
        p = self.request.params
        temperature = p.temperature if p.temperature is not None else 1.0  # OpenAI's default: sample
        if temperature > 0 and p.seed is not None:
            # one random stream per generate() call: a seeded request runs alone, so the same seed
            # gives the same text whatever else is queued
            return (True, self.request.request_id)
        return (temperature > 0, round(temperature, 4), p.top_p)


class TransformersEngine:
    def __init__(self, options: TransformersOptions) -> None:
        self.options = options
        # transformers' model and tokenizer classes (loaded in start())
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = "cpu"
        self.context_length = 0
        self.batch_sizes: list[int] = []  # size of every generate() call, newest last (bounded)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._batcher: asyncio.Task | None = None
        self._dead: BaseException | None = None
        self.weights_loaded_at: float | None = None  # monotonic time the weights were in memory
        self._grammars: dict[str, Any] = {}  # contract id -> xgrammar's compiled grammar
        self._compiler: Any = None  # xgrammar's GrammarCompiler for this tokenizer, on first use

    def preload(self) -> None:
        """Import torch and transformers (most of a CPU worker's start); before a memory snapshot."""
        import torch  # noqa: F401
        import transformers  # noqa: F401

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._batcher = asyncio.create_task(self._batch_loop(), name="transformers-batcher")

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # progress bars are not log lines
        o = self.options
        if o.threads:
            torch.set_num_threads(o.threads)
        device = o.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(o.dtype)
        if dtype is None:  # auto: half precision where it is fast
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
        common = {
            "revision": o.revision,
            "local_files_only": o.local_files_only,
            "trust_remote_code": o.trust_remote_code,
        }
        started = time.monotonic()
        tokenizer = AutoTokenizer.from_pretrained(o.model, padding_side="left", **common)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        # transformers types `to` as taking the model itself (its decorator's signature)
        model = AutoModelForCausalLM.from_pretrained(o.model, dtype=dtype, **common).to(device)  # type: ignore[arg-type]
        self.weights_loaded_at = time.monotonic()
        model.eval()
        cfg = model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", 0) or getattr(cfg, "n_positions", 0) or 0)
        self.model, self.tokenizer, self.device = model, tokenizer, device
        log.info(
            "model loaded",
            extra={
                "model_path": o.model,
                "device": device,
                "dtype": str(dtype).removeprefix("torch."),
                "load_s": round(time.monotonic() - started, 2),
            },
        )

    async def stop(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
        self.model = None

    async def generate(
        self, request: InferenceRequest, lane: str = "batch", contract: Contract | None = None
    ) -> Generation:
        if self._dead is not None:
            raise EngineDead(f"the transformers engine stopped: {self._dead}")
        prompt = render_prompt(self.tokenizer, request)
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if self.context_length and len(ids) + 1 > self.context_length:
            raise EngineError(
                "context_length_exceeded",
                f"the prompt has {len(ids)} tokens; the model's context is {self.context_length}",
                retryable=False,
            )
        pending = _Pending(request, asyncio.get_running_loop().create_future(), ids, contract)
        await self._queue.put(pending)
        return await pending.future  # cancelling this leaves the future cancelled: the batcher skips it

    async def _batch_loop(self) -> None:
        try:
            while True:
                first = await self._queue.get()
                batch = [first]
                deadline = time.monotonic() + self.options.batch_wait_ms / 1000
                while len(batch) < self.options.max_batch_size:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0 and self._queue.empty():
                        break
                    try:
                        batch.append(
                            await asyncio.wait_for(self._queue.get(), max(timeout, 0))
                            if timeout > 0
                            else self._queue.get_nowait()
                        )
                    except (TimeoutError, asyncio.QueueEmpty):
                        break
                live = [p for p in batch if not p.future.done()]
                groups: dict[tuple, list[_Pending]] = {}
                for p in live:
                    groups.setdefault(p.batch_key, []).append(p)
                for group in groups.values():
                    await self._run_group(group)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            self._dead = exc
            log.exception("the batcher died")
            while not self._queue.empty():
                p = self._queue.get_nowait()
                if not p.future.done():
                    p.future.set_exception(EngineDead(str(exc)))

    async def _run_group(self, group: list[_Pending]) -> None:
        self.batch_sizes = [*self.batch_sizes[-999:], len(group)]
        log.debug("generate", extra={"batch_size": len(group)})
        try:
            results = await asyncio.to_thread(self._generate_batch, group)
        except Exception as exc:
            error = _classify(exc)
            if isinstance(error, EngineDead):
                self._dead = error
            for p in group:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        for p, gen in zip(group, results):
            if not p.future.done():
                p.future.set_result(gen)

    def _generate_batch(self, group: list[_Pending]) -> list[Generation]:
        import torch

        tok = self.tokenizer
        limits = []
        for p in group:
            limit = p.request.params.max_tokens
            if self.context_length:
                limit = min(limit, self.context_length - len(p.prompt_ids))
            limits.append(limit)
        padded = tok.pad({"input_ids": [p.prompt_ids for p in group]}, padding=True, return_tensors="pt")
        input_ids = padded["input_ids"].to(self.device)
        attention = padded["attention_mask"].to(self.device)
        params = group[0].request.params
        sample = group[0].sampling_key[0]
        kwargs = {"max_new_tokens": max(limits), "pad_token_id": tok.pad_token_id, "do_sample": sample}
        if sample:
            kwargs["temperature"] = params.temperature if params.temperature is not None else 1.0
            kwargs["top_p"] = params.top_p if params.top_p is not None else 1.0
            if params.seed is not None:
                torch.manual_seed(params.seed)
        first = group[0]
        if first.contract is not None:
            kwargs["logits_processor"] = [self._constraint(first.request.contract or "", first.contract)]
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        eos = _eos_ids(self.model, tok)
        width = input_ids.shape[1]
        results = []
        for row, p, limit in zip(out[:, width:].tolist(), group, limits):
            tokens = row[:limit]
            finish: FinishReason = "length"
            for i, t in enumerate(tokens):
                if t in eos:
                    tokens, finish = tokens[:i], "stop"
                    break
            text = tok.decode(tokens, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, p.request.params.stop)
            if stopped:
                finish = "stop"
                tokens = tok(text, add_special_tokens=False)["input_ids"]
            results.append(
                Generation(
                    text=text, finish_reason=finish, prompt_tokens=len(p.prompt_ids), completion_tokens=len(tokens)
                )
            )
        return results

    def _constraint(self, contract_id: str, contract: Contract) -> Any:
        """A fresh logits processor (one per generate() call) over the contract's compiled grammar."""
        import xgrammar as xgr

        grammar = self._grammars.get(contract_id)
        if grammar is None:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
                self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)  # _grammars is the cache
            grammar = compile_contract(self._compiler, contract)
            if len(self._grammars) >= GRAMMARS_KEPT:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[contract_id] = grammar
        return xgr.contrib.hf.LogitsProcessor(grammar)


def compile_contract(compiler: Any, contract: Contract) -> Any:
    """xgrammar's compiled grammar for a contract; JSON without free whitespace (a schema's compact,
    as the vllm engine writes it)."""
    if contract.kind == "json_schema":
        return compiler.compile_json_schema(
            json.dumps(contract.schema), any_whitespace=False, separators=(",", ":"), strict_mode=True
        )
    if contract.kind == "json_object":
        # an object (the builtin JSON grammar takes any value), one space after `,` and `:` and no
        # other: xgrammar 0.2.8 does not apply compact separators to the values of properties a
        # schema does not list, so `{"a":1,"b":2}` would be refused
        return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
    if contract.kind == "regex":
        return compiler.compile_regex(contract.pattern or "")
    alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in contract.choices or ())
    return compiler.compile_grammar(f"root ::= {alternatives}")


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def _classify(exc: Exception) -> EngineError | EngineDead:
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower():
        return EngineError("engine_overloaded", text, retryable=True)
    if "CUDA error" in str(exc) or "device-side assert" in str(exc):
        return EngineDead(text)
    return EngineError("engine_error", text, retryable=False)
