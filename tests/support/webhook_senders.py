"""Webhook senders for tests: the dispatcher's scheduler and attempt job, run as plain asyncio
tasks (no arq), in this process or as a process of their own (`python -m tests.support.webhook_senders
REDIS_URL LEASE_S TIMEOUT_S`), and a receiver that counts calls per webhook-id and how many are
open at once."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis.asyncio as aioredis

from services.dispatcher.webhooks.attempts import WebhookAttempts
from services.dispatcher.webhooks.delivery import deliver_webhook, schedule_deliveries
from services.dispatcher.webhooks.http_client import WebhookHttp
from shared.core.settings import Settings
from shared.redis.keys import Keys
from shared.webhooks.store import WebhookStore


async def run_sender(
    redis_url: str,
    stop: asyncio.Event,
    *,
    lease_s: float,
    timeout_s: float,
    limit: int = 4,
    schedule: str = "0,0.2,0.2",
) -> None:
    """One dispatcher's webhook scheduler and attempts, until `stop` (attempts in flight finish)."""
    r = aioredis.Redis.from_url(redis_url)
    keys = Keys("inferq")
    settings = Settings(
        redis_url=redis_url,
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_timeout_s=timeout_s,
        webhook_retry_schedule=schedule,
    )
    attempts = WebhookAttempts(r, keys, lease_s=lease_s, max_per_endpoint=limit)
    http = WebhookHttp(max_connections_per_host=100)
    ctx = {"webhooks": WebhookStore(r, keys), "attempts": attempts, "settings": settings, "http": http}
    running: set[asyncio.Task] = set()

    async def enqueue(attempt) -> None:
        task = asyncio.create_task(deliver_webhook(ctx, *attempt))
        running.add(task)
        task.add_done_callback(running.discard)

    await schedule_deliveries(attempts, enqueue, stop, poll_s=0.01)
    if running:
        await asyncio.wait(running)
    await http.aclose()
    await r.aclose()


class CountingReceiver:
    """HTTP on loopback: `answer(webhook_id, nth call for it)` gives (status, seconds to wait first)."""

    def __init__(self, answer: Callable[[str, int], tuple[int, float]]) -> None:
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}  # when each call for a webhook-id arrived
        self.open = 0
        self.max_open = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                webhook_id = self.headers["webhook-id"]
                with lock:
                    receiver.hits[webhook_id] += 1
                    nth = receiver.hits[webhook_id]
                    receiver.times.setdefault(webhook_id, []).append(time.monotonic())
                    receiver.open += 1
                    receiver.max_open = max(receiver.max_open, receiver.open)
                try:
                    status, wait_s = answer(webhook_id, nth)
                    time.sleep(wait_s)
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone
                finally:
                    with lock:
                        receiver.open -= 1

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    url, lease, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    asyncio.run(run_sender(url, asyncio.Event(), lease_s=lease, timeout_s=timeout))
