"""The web dashboard at /ui: static files shipped in the package (services/ingest/ui/), served
as they are. The page calls the public API with the user's own key, so the server holds nothing
for it beyond the files; they need no key themselves (the app's auth covers /v1 only)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

UI_DIR = Path(__file__).resolve().parent / "ui"
# The page loads only its own files and talks only to this origin: an injected script or a
# framing site gets nowhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class _DashboardFiles(StaticFiles):
    route = SimpleNamespace(path="/ui")  # the label HttpMetrics counts every file under

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def mount(app: FastAPI) -> None:
    app.mount("/ui", _DashboardFiles(directory=UI_DIR, html=True), name="ui")
