"""`python -m services.dispatcher`: run the dispatcher's arq worker, and keep running it across
Redis outages.

arq's poll loop ends the worker on the first error of Redis (unreachable, out of memory,
read-only...). Exiting would leave recovery to a process supervisor that a local run does not
have, so the worker is stopped cleanly (router and collector included) and started again once
Redis accepts writes. Nothing is lost in between: every effect the dispatcher has is atomic with
the XACK of the entry that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import cast

from shared.catalog.models import load_models
from shared.core.backoff import Backoff
from shared.core.errors import TRANSIENT_REDIS_ERRORS, ModelsFileError, SettingsError
from shared.core.logs import configure_logging
from shared.core.settings import Settings
from shared.redis.client import check_server_at_start, connect
from shared.redis.keys import Keys
from shared.redis.outage import OUTAGE, probe_writes

log = logging.getLogger("inferq.dispatcher")
STOP_RETRY_S = 0.5  # how often a stop signal's cancellation is repeated until arq's loop ends


async def _wait_for_redis(settings: Settings) -> bool:
    """Probe with backoff until Redis accepts writes (True) or SIGTERM/SIGINT arrives (False). A
    PING is not enough: Redis out of memory, read-only or not persisting answers it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = connect(settings.redis_url, settings)
    probe_key = Keys(settings.key_prefix).write_probe
    backoff = Backoff(0.1, 2.0)
    try:
        while not stop.is_set():
            try:
                await probe_writes(client, probe_key)
                OUTAGE.recovered("dispatcher")
                return True
            except TRANSIENT_REDIS_ERRORS as exc:
                OUTAGE.failed("dispatcher", exc)
            try:
                await asyncio.wait_for(stop.wait(), backoff.next())
            except TimeoutError:
                pass
        return False
    finally:
        await client.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _stop_surely_on_signals(worker, loop: asyncio.AbstractEventLoop) -> None:
    """arq stops on SIGTERM/SIGINT by cancelling its poll loop once. On Python 3.11 a cancellation
    that lands as a Redis call completes can be swallowed (asyncio.wait_for, used by redis-py), and
    the worker then runs on until it is killed. So the cancellation is repeated until the loop ends."""

    def cancel_until_done() -> None:
        task = worker.main_task
        if task is not None and not task.done():
            task.cancel()
            loop.call_later(STOP_RETRY_S, cancel_until_done)

    def on_signal(sig: signal.Signals) -> None:
        worker.handle_sig(sig)
        loop.call_later(STOP_RETRY_S, cancel_until_done)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


def _run(settings: Settings, loop: asyncio.AbstractEventLoop) -> int:
    from arq.connections import ArqRedis
    from arq.worker import create_worker

    from services.dispatcher.arq_settings import WorkerSettings, shutdown

    while True:
        # arq's own pool has no socket timeout: give it one made like every other connection
        pool = cast(ArqRedis, connect(settings.redis_url, settings, client_class=ArqRedis))
        pool.default_queue_name = WorkerSettings.queue_name
        worker = create_worker(WorkerSettings, redis_pool=pool)
        _stop_surely_on_signals(worker, loop)
        try:
            worker.run()
            return 0  # stopped by SIGTERM/SIGINT
        except TRANSIENT_REDIS_ERRORS as exc:
            OUTAGE.failed("dispatcher", exc)
            log.info("stopping the consumers until Redis accepts writes again (%s)", exc)
        worker.ctx["restarting"] = True  # keep the worker processes it started: it comes back
        try:
            loop.run_until_complete(shutdown(worker.ctx))
        except TRANSIENT_REDIS_ERRORS:
            pass
        loop.run_until_complete(pool.aclose(close_connection_pool=True))
        if not loop.run_until_complete(_wait_for_redis(settings)):
            return 0
        log.info("restarting the dispatcher's consumers")


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
