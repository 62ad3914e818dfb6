"""A small OpenAI-protocol server on loopback for the `openai` engine's tests, with scripted
failures chosen by the prompt text: `RATE-LIMIT` → one 429 with Retry-After, then success;
`BAD` → 400 with an OpenAI-style error; `DOWN` → 503 every time. It records what it received."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from inferq.localstack import free_port


class OpenAIStub:
    def __init__(self, retry_after: str = "1") -> None:
        self.port = free_port()
        self.retry_after = retry_after
        self.calls: list[dict] = []  # {"path", "body", "headers", "at"}
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self._rate_limited: set[str] = set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            text = " ".join(m["content"] for m in body["messages"])
            return await self._answer(request, body, text, chat=True)

        @app.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            return await self._answer(request, body, body["prompt"], chat=False)

        return app

    async def _answer(self, request: Request, body: dict, text: str, *, chat: bool):
        self.calls.append(
            {"path": request.url.path, "body": body, "headers": dict(request.headers), "at": time.monotonic()}
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if "BAD" in text:
            return JSONResponse(
                {
                    "error": {
                        "message": "This model's maximum context length is 8 tokens",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        if "DOWN" in text:
            return JSONResponse({"error": {"message": "upstream is down"}}, 503)
        if "RATE-LIMIT" in text and text not in self._rate_limited:
            self._rate_limited.add(text)
            return JSONResponse(
                {"error": {"message": "Rate limit reached"}}, 429, headers={"Retry-After": self.retry_after}
            )
        words = text.split()[: body["max_tokens"]]
        finish = "length" if len(text.split()) > body["max_tokens"] else "stop"
        usage = {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(words),
            "total_tokens": len(text.split()) + len(words),
        }
        answer = " ".join(reversed(words))
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": answer, "finish_reason": finish}
        )
        return {
            "id": "cmpl-1",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        }

    def __enter__(self) -> OpenAIStub:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the stub server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(5)
