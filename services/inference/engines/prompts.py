"""Turning a request into the text a model sees, and cutting its output at stop sequences: the same
rules for every engine that tokenizes locally."""

from __future__ import annotations

from shared.wire.api import ChatMessage
from shared.wire.messages import InferenceRequest


def render_prompt(tokenizer, request: InferenceRequest) -> str:
    """The prompt as given, or the chat rendered with the model's own chat template (falling back
    to a plain transcript for base models that have none)."""
    if request.messages is None:
        return request.prompt or ""
    return render_chat(tokenizer, request.messages)


def render_chat(tokenizer, messages: list[ChatMessage]) -> str:
    turns = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"


def cut_at_stop(text: str, stops: list[str] | None) -> tuple[str, bool]:
    """The text before the earliest stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops or () if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
