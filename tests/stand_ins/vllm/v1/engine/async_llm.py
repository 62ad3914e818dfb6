"""Stand-in AsyncLLM: echoes prompt words after a delay, with controls and records for tests."""

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
    prompt: str
    prompt_token_ids: list
    outputs: list
    finished: bool


class _Tokenizer:
    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


@dataclass
class AsyncLLM:
    args: object
    delay_s: float = 0.05
    calls: list = field(default_factory=list)  # (prompt, sampling params, request id)
    aborted: list = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    errored: bool = False
    shut_down: bool = False
    die_on: str = ""  # a prompt containing this kills the engine

    last: ClassVar = None  # the most recent instance, for tests to inspect
    next_settings: ClassVar[dict] = {}  # fields for the next instance (tests set it before the engine starts)

    @classmethod
    def from_engine_args(cls, args):
        cls.last = cls(args, **cls.next_settings)
        return cls.last

    async def get_tokenizer(self):
        return _Tokenizer()

    async def generate(self, prompt, sampling_params, request_id):
        self.calls.append((prompt, sampling_params, request_id))
        if self.errored or (self.die_on and self.die_on in prompt):
            self.errored = True
            raise EngineDeadError("EngineCore encountered an issue")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        words = prompt.split()
        out = words[: sampling_params.max_tokens]
        reason = "length" if len(words) > sampling_params.max_tokens else "stop"
        yield RequestOutput(request_id, prompt, list(range(len(words))),
                            [CompletionOutput(" ".join(out), list(range(len(out))), reason)], True)

    async def abort(self, request_id):
        self.aborted.append(request_id)

    def shutdown(self):
        self.shut_down = True
