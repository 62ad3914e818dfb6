"""`python -m services.dispatcher`: run the dispatcher's arq worker, and keep running it across
Redis outages.

arq's poll loop ends the worker on the first connection error. Exiting would leave recovery to a
process supervisor that a local run does not have, so the worker is stopped cleanly (router and
collector included) and started again once Redis answers. Nothing is lost in between: every
effect the dispatcher has is atomic with the XACK of the entry that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from shared.backoff import Backoff
from shared.errors import TRANSIENT_REDIS_ERRORS, ModelsFileError, SettingsError
from shared.logs import configure_logging
from shared.models_config import load_models
from shared.redis_client import check_server_at_start, connect
from shared.settings import Settings

log = logging.getLogger("inferq.dispatcher")


async def _wait_for_redis(url: str) -> bool:
    """Ping with backoff until Redis answers (True) or SIGTERM/SIGINT arrives (False)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = connect(url, socket_connect_timeout=2, socket_timeout=2)
    backoff = Backoff(0.1, 2.0)
    try:
        while not stop.is_set():
            try:
                await client.ping()
                return True
            except TRANSIENT_REDIS_ERRORS:
                pass
            try:
                await asyncio.wait_for(stop.wait(), backoff.next())
            except TimeoutError:
                pass
        return False
    finally:
        await client.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _run(settings: Settings, loop: asyncio.AbstractEventLoop) -> int:
    from arq.worker import create_worker

    from services.dispatcher.worker import WorkerSettings, shutdown

    while True:
        worker = create_worker(WorkerSettings)
        try:
            worker.run()
            return 0  # stopped by SIGTERM/SIGINT
        except TRANSIENT_REDIS_ERRORS as exc:
            log.warning("lost Redis (%s); stopping the consumers and waiting for it", exc)
        worker.ctx["restarting"] = True  # keep the worker processes it started: it comes back
        try:
            loop.run_until_complete(shutdown(worker.ctx))
        except TRANSIENT_REDIS_ERRORS:
            pass
        if worker._pool is not None:
            loop.run_until_complete(worker._pool.aclose(close_connection_pool=True))
        if not loop.run_until_complete(_wait_for_redis(settings.redis_url)):
            return 0
        log.info("Redis is back; restarting the dispatcher")


def main() -> int:
    try:
        settings = Settings.from_env()
        load_models(settings.models_path)  # fail at start, with the entry named, not inside arq
    except (SettingsError, ModelsFileError) as exc:
        print(f"inferq dispatcher: {exc}", file=sys.stderr)
        return 2
    if problem := check_server_at_start(settings.redis_url):
        print(f"inferq dispatcher: {problem}", file=sys.stderr)
        return 2
    configure_logging("dispatcher", settings.log_level)
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return _run(settings, loop)


if __name__ == "__main__":
    sys.exit(main())
