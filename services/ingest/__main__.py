"""`python -m services.ingest`: serve the HTTP API with uvicorn."""

from __future__ import annotations

import signal
import sys

import uvicorn

from services.ingest.app import create_app
from shared.catalog.models import ModelsFileError
from shared.core.logs import configure_logging
from shared.core.settings import Settings, SettingsError
from shared.redis.client import check_server_at_start


def main() -> int:
    try:
        settings = Settings.from_env()
        configure_logging("ingest", settings.log_level)
        app = create_app(settings)
    except (SettingsError, ModelsFileError) as exc:
        print(f"inferq ingest: {exc}", file=sys.stderr)
        return 2
    if problem := check_server_at_start(settings.redis_url):
        print(f"inferq ingest: {problem}", file=sys.stderr)
        return 2
    # uvicorn re-raises the signal that stopped it once its graceful shutdown is done; by then
    # every accepted job is written, so that signal means a clean exit (status 0).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
