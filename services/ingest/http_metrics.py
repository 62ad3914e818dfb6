"""Counts and times every HTTP request by route template (not raw path, so ids do not explode
the label space). Plain ASGI, so streamed responses (SSE, result downloads) pass untouched."""

from __future__ import annotations

import time

from shared.ops.metrics import HTTP_DURATION, HTTP_REQUESTS


class HttpMetrics:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], route, str(status[0])).inc()
            HTTP_DURATION.labels(scope["method"], route).observe(time.perf_counter() - start)
