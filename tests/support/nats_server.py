"""A real `nats-server -js` (Debian's package) on a free loopback port, with its JetStream store
in a directory that survives a stop and restart; and a reader of what a JetStream stream holds."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from inferq.localstack import free_port

BINARY = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer:
    def __init__(self, workdir: Path, config: str = "") -> None:
        self.workdir = workdir
        self.config = config  # nats-server configuration file text (e.g. `max_payload: 2048`)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "nats.log", "ab")
        extra = []
        if self.config:
            (self.workdir / "nats.conf").write_text(self.config)
            extra = ["-c", str(self.workdir / "nats.conf")]
        self.proc = subprocess.Popen(
            [BINARY, *extra, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.workdir / "store")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"nats-server exited: {(self.workdir / 'nats.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Stored:
    seq: int
    subject: str
    msg_id: str
    content_type: str
    body: bytes


async def _stored(url: str, stream: str) -> list[Stored]:
    """Read as a team's consumer would: an ephemeral pull consumer from the stream's first message."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("", stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        out: list[Stored] = []
        while len(out) < total:
            for msg in await sub.fetch(min(500, total - len(out)), timeout=10):
                headers = msg.headers or {}
                out.append(
                    Stored(
                        msg.metadata.sequence.stream,
                        msg.subject,
                        headers.get("Nats-Msg-Id", ""),
                        headers.get("content-type", ""),
                        msg.data or b"",
                    )
                )
                await msg.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def stored(url: str, stream: str) -> list[Stored]:
    """Every message of `stream`, in the order JetStream stored them."""
    return asyncio.run(_stored(url, stream))
