"""Prompt tokens of a job, counted with the model's own tokenizer when this process can load it.

A model served by the `transformers` or `vllm` engine names its tokenizer (a local directory,
or a hub id already in the local cache: nothing is downloaded here). It is loaded once, off the
event loop, the first time a quote needs it; a model whose tokenizer cannot be loaded (another
engine, not on this machine, `transformers` not installed) is counted from characters instead
(shared/planning/plan.py), and never tried again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.catalog.models import ModelConfig, TransformersOptions, VllmOptions

log = logging.getLogger("inferq.ingest.tokens")
_MISSING = object()


class TokenCounter:
    def __init__(self) -> None:
        self._tokenizers: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def count(self, model: ModelConfig, texts: list[str]) -> int | None:
        """The tokens of `texts` with the model's tokenizer, or None when it has none here."""
        tok = await self._tokenizer(model)
        if tok is None or not texts:
            return None if tok is None else 0
        return await asyncio.to_thread(_count, tok, texts)

    async def _tokenizer(self, model: ModelConfig):
        found = self._tokenizers.get(model.name, _MISSING)
        if found is not _MISSING:
            return found
        async with self._lock:
            found = self._tokenizers.get(model.name, _MISSING)
            if found is _MISSING:
                found = await asyncio.to_thread(_load, model)
                self._tokenizers[model.name] = found
        return found


def _source(model: ModelConfig) -> tuple[str, str | None] | None:
    opts = model.engine_options()
    if isinstance(opts, TransformersOptions):
        return opts.model, opts.revision
    if isinstance(opts, VllmOptions):
        return opts.tokenizer or opts.model, opts.revision
    return None


def _load(model: ModelConfig):
    source = _source(model)
    if source is None:
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source[0], revision=source[1], local_files_only=True)
    except Exception as exc:  # not here, or not a tokenizer: counted from characters
        log.info("model %s: no tokenizer here (%s); quotes count its prompts from characters", model.name, exc)
        return None
    log.info("model %s: quotes count its prompts with its tokenizer", model.name)
    return tok


def _count(tok, texts: list[str]) -> int:
    total = 0
    for i in range(0, len(texts), 1000):
        total += sum(len(ids) for ids in tok(texts[i : i + 1000])["input_ids"])
    return total
