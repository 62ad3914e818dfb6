"""How long the `vllm` engine holds the worker's event loop to render one read's requests: the
prompts of one stream read go through vLLM's renderer on the loop (a chat through the chat
template, then tokenized), RENDER_CHUNK at a time. Prints, for completions and chats at read sizes
up to the engine's default max_inflight (2,048): the time one call for the whole read would take,
per request, and the longest the loop actually went without a turn while `render_soon` rendered
the read (what an output, a heartbeat or a read waits at most).

    .venv-vllm/bin/python bench/render_cost.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from inferq.tinymodel import build_tiny_llama  # noqa: E402
from services.inference.engines import create_engine  # noqa: E402
from shared.catalog.models import parse_models  # noqa: E402
from shared.wire.api import ChatMessage  # noqa: E402
from shared.wire.messages import InferenceRequest, SamplingParams  # noqa: E402

WORDS = "the quick brown fox jumps over the lazy dog while city rain falls on desert stars".split()


def request(i: int, chat: bool) -> InferenceRequest:
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(16))
    return InferenceRequest(
        request_id=f"r{i}",
        job_id="j",
        custom_id=f"c{i}",
        model="tiny",
        accepted_ms=0,
        prompt=None if chat else text,
        messages=[ChatMessage("system", "be brief"), ChatMessage("user", text)] if chat else None,
        params=SamplingParams(max_tokens=8),
    )


async def longest_stall(engine, batch: list[InferenceRequest]) -> float:
    """The longest gap between turns of a ticker on the loop while the read is rendered."""
    gaps, done = [0.0], False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await asyncio.gather(*(engine.render_soon(r) for r in batch))
    done = True
    await tick
    return max(gaps)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(Path(tmp) / "model")
        options = f'model = "{model}"\nmax_model_len = 256\nenforce_eager = true\ndtype = "bfloat16"\n'
        toml = f'[models.tiny]\nengine = "vllm"\n[models.tiny.options]\n{options}'
        engine = create_engine(parse_models(toml).get("tiny"))
        await engine.start()
        try:
            for chat in (False, True):
                for n in (32, 256, 2048):
                    batch = [request(i, chat) for i in range(n)]
                    times = []
                    for _ in range(5):
                        started = time.perf_counter()
                        engine._render_many(batch)
                        times.append(time.perf_counter() - started)
                    ms = statistics.median(times) * 1000
                    stalls = [await longest_stall(engine, batch) for _ in range(5)]
                    kind = "chat" if chat else "completion"
                    print(
                        f"{kind:10} read of {n:5}: {ms:8.2f} ms in one call, {ms * 1000 / n:6.1f} µs per request; "
                        f"longest loop stall {statistics.median(stalls) * 1000:6.2f} ms"
                    )
        finally:
            await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
