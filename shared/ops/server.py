"""The operations endpoint of the dispatcher and the workers (INFERQ_METRICS_PORT): /metrics for
Prometheus, /healthz (the process answers) and /readyz (it can use Redis: 503 with the outage of
shared/redis/outage.py while it cannot). Ingest serves the same paths from its own API."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from shared.ops.metrics import REGISTRY
from shared.redis.outage import OUTAGE

_metrics_app = make_wsgi_app(REGISTRY)


def _app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path not in ("/healthz", "/readyz"):
        return _metrics_app(environ, start_response)
    if path == "/readyz" and OUTAGE.ongoing:
        status, body = "503 Service Unavailable", {"status": "unavailable", "detail": OUTAGE.describe()}
    else:
        status, body = "200 OK", {"status": "ok"}
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # scrapes and probes are not news
        pass


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Serve in a daemon thread, so it answers while the event loop waits on Redis."""
    server = make_server(host, port, _app, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="ops-server", daemon=True).start()
