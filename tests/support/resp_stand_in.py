"""A stand-in Redis for what a real redis-server 7 cannot be made to do: be an older version, or
send a reply only Redis Cluster or Redis 6.2 sends. It speaks just enough RESP2: it reads command
arrays and answers each with whatever `answer(command)` returns (raw RESP bytes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.support.threaded_server import ThreadedServer

OK = b"+OK\r\n"


def bulk(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: str | bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def server_info(version: str) -> bytes:
    """The reply to INFO: a server of `version` that evicts nothing."""
    return bulk(f"# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")


class RespStandIn(ThreadedServer):
    """Answers each command with `answer(command)`; every command received is kept in `commands`."""

    def __init__(self, answer: Callable[[list[bytes]], bytes]) -> None:
        super().__init__()
        self.answer = answer
        self.commands: list[list[bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readline()
                if not header.startswith(b"*"):
                    return
                command = []
                for _ in range(int(header[1:])):
                    size = int((await reader.readline())[1:])
                    command.append((await reader.readexactly(size + 2))[:-2])
                self.commands.append(command)
                writer.write(self.answer(command))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
