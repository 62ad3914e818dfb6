"""A minimal HTTP/1.1 client for the latency test's load: keep-alive connections on asyncio
streams sending prepared POSTs. The load generator shares the 2 cores with the stack it measures;
httpx spent ~2 ms of CPU per job POST there (a fifth of the machine at 100 jobs/s), this ~0.1 ms,
so the figures are the stack's, not the client's."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


class LeanClient:
    def __init__(self, base_url: str, connections: int) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.connections = connections
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._opened = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._opened < self.connections:
            self._opened += 1
            return await asyncio.open_connection(self.host, self.port)
        return await self._idle.get()

    def prepare_post(self, path: str, body: bytes) -> bytes:
        """The bytes of a JSON POST, built once and sent as often as wanted."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, request: bytes) -> tuple[int, dict]:
        """(status, JSON body) of one prepared request."""
        reader, writer = await self._connection()
        try:
            writer.write(request)
            status_line = await reader.readline()
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            self._opened -= 1
            raise
        self._idle.put_nowait((reader, writer))
        return status, json.loads(body)

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()
        self._opened = 0
