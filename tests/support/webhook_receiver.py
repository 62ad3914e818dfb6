"""A real HTTP receiver on loopback for webhook tests: records every call and answers each path
with a scripted sequence of responses (the last one repeats)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Call:
    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path, self.headers, self.body, self.at = path, headers, body, time.monotonic()

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.calls: list[Call] = []
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.calls.append(Call(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                steps = receiver.script.get(self.path) or [(200, {})]
                status, headers = steps.pop(0) if len(steps) > 1 else steps[0]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, *steps: int | tuple[int, dict[str, str]]) -> None:
        self.script[path] = [s if isinstance(s, tuple) else (s, {}) for s in steps]

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
