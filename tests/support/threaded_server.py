"""A TCP server on 127.0.0.1 running on its own thread and event loop, so synchronous tests and
subprocess-based stacks can talk to it. Subclasses say what to do with each connection (`handle`)
and may prepare loop-bound state first (`prepare`); `url` points a Redis client at it."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from inferq.localstack import free_port


class ThreadedServer:
    join_timeout_s = 5.0

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self):
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._closing.set)
        self._thread.join(self.join_timeout_s)

    def call_in_loop(self, fn, *args) -> None:
        """Run `fn(*args)` on the server's loop (its asyncio objects belong there)."""
        self._loop.call_soon_threadsafe(fn, *args)

    def prepare(self) -> None:
        """Runs on the server's loop before it accepts connections."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._closing = asyncio.Event()
        self.prepare()
        server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self._ready.set()
        await self._closing.wait()
        server.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
