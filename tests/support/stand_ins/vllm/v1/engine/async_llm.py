"""Stand-in AsyncLLM: echoes prompt words after a delay; a prompt containing `die_on` kills it."""

import asyncio
from dataclasses import dataclass, field
from typing import ClassVar

from vllm.v1.engine.exceptions import EngineDeadError


@dataclass
class CompletionOutput:
    text: str
    token_ids: list
    finish_reason: str | None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list
    outputs: list
    finished: bool


class _ModelConfig:
    def get_diff_sampling_param(self):
        return {}


class _Renderer:
    tokenizer = type("Tokenizer", (), {"chat_template": None})()

    def render_cmpl(self, prompts):
        return [{"type": "token", "prompt": p["prompt"]} for p in prompts]


@dataclass
class AsyncLLM:
    args: object
    delay_s: float = 0.05
    renderer: _Renderer = field(default_factory=_Renderer)
    model_config: _ModelConfig = field(default_factory=_ModelConfig)
    aborted: list = field(default_factory=list)
    errored: bool = False
    shut_down: bool = False
    die_on: str = ""  # a prompt containing this kills the engine

    last: ClassVar = None  # the most recent instance, for tests to inspect
    next_settings: ClassVar[dict] = {}  # fields for the next instance (tests set it before the engine starts)

    @classmethod
    def from_engine_args(cls, args, usage_context=None):
        cls.last = cls(args, **cls.next_settings)
        return cls.last

    async def generate(self, engine_input, sampling_params, request_id, priority=0):
        prompt = engine_input["prompt"]
        if self.errored or (self.die_on and self.die_on in prompt):
            self.errored = True
            raise EngineDeadError("EngineCore encountered an issue")
        await asyncio.sleep(self.delay_s)
        words = prompt.split()[: sampling_params.max_tokens]
        yield RequestOutput(
            request_id,
            list(range(len(words))),
            [CompletionOutput(" ".join(words), list(range(len(words))), "length")],
            True,
        )

    async def abort(self, request_id):
        self.aborted.append(request_id)

    def shutdown(self):
        self.shut_down = True
