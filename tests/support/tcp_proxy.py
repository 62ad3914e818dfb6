"""A TCP proxy between the services and Redis that can be told to stop forwarding, the way a
network partition looks from both ends: sockets stay open, nothing is reset, bytes just stop
arriving. What was sent meanwhile is held, and delivered once it forwards again (as TCP would
retransmit it); new connections are accepted but not connected through until then."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.threaded_server import ThreadedServer


class PartitionProxy(ThreadedServer):
    join_timeout_s = 10.0

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port

    def stop_forwarding(self) -> None:
        self.call_in_loop(self._flowing.clear)

    def forward(self) -> None:
        self.call_in_loop(self._flowing.set)

    def prepare(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, upstream_w), self._pipe(upstream_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # read just as the partition began: held, not delivered
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
