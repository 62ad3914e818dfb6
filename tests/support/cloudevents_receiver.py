"""A CloudEvents HTTP receiver on loopback, as a team's own service would be: it parses every
request with the CloudEvents SDK (binary, structured and batched mode, told apart by content
type, as the HTTP binding says), records each event, and answers each path as the test scripts it
(a status, with headers, until a time or for good)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings.http import HTTPMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat

FORMAT = JSONFormat()


@dataclass
class Received:
    path: str
    mode: str  # binary | structured | batch
    id: str
    type: str
    subject: str
    data: object
    at: float


class CloudEventsReceiver:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.events: list[Received] = []
        self.requests: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.sizes: dict[str, list[int]] = {}  # path -> events per accepted request
        self.refuse_ids: dict[str, set[str]] = {}  # path -> events answered 400 (refused as malformed)
        self.content_types: dict[str, set[str]] = {}
        self.headers_seen: dict[str, dict[str, str]] = {}  # path -> the last accepted request's headers
        self._answers: dict[str, tuple[int, dict[str, str], float]] = {}  # path -> status, headers, until
        self._lock = threading.Lock()
        self.delay_s = delay_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status, headers = receiver._handle(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, status: int, *, for_s: float | None = None, headers: dict[str, str] | None = None):
        """Answer `path` with `status` (for `for_s` seconds, or until told otherwise)."""
        until = time.monotonic() + for_s if for_s is not None else float("inf")
        self._answers[path] = (status, headers or {}, until)

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
        status, extra, until = self._answers.get(path, (200, {}, 0.0))
        if status != 200 and time.monotonic() < until:
            with self._lock:
                self.refused[path] = self.refused.get(path, 0) + 1
            return status, extra
        lower = {k.lower(): v for k, v in headers.items()}
        ctype = lower.get("content-type", "")
        message = HTTPMessage(headers=lower, body=body)
        if ctype.startswith("application/cloudevents-batch+json"):
            parsed = [(FORMAT.read(None, json.dumps(doc)), "batch") for doc in json.loads(body)]
        elif ctype.startswith("application/cloudevents+json"):
            parsed = [(from_structured(message, FORMAT), "structured")]
        elif "ce-specversion" in lower:
            parsed = [(from_binary(message, FORMAT), "binary")]
        else:
            return 400, {}
        if path.endswith("-nobatch") and ctype.startswith("application/cloudevents-batch+json"):
            return 415, {}
        if any(event.get_id() in self.refuse_ids.get(path, ()) for event, _ in parsed):
            return 400, {}
        now = time.monotonic()
        with self._lock:
            self.sizes.setdefault(path, []).append(len(parsed))
            self.content_types.setdefault(path, set()).add(ctype)
            self.headers_seen[path] = lower
            for event, mode in parsed:
                self.events.append(
                    Received(
                        path, mode, event.get_id(), event.get_type(), event.get_subject() or "", event.get_data(), now
                    )
                )
        return 200, {}

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [e for e in self.events if e.path == path]

    def __enter__(self) -> CloudEventsReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
