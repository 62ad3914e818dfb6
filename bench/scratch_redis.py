"""A Redis of its own for a benchmark script run by hand: started in a temporary directory, and
stopped and deleted with its data when the script is done."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inferq.localstack import RedisServer


@contextmanager
def scratch_redis(prefix: str = "inferq-bench-") -> Iterator[str]:
    """The URL of a fresh Redis, configured as inferq's local stack runs it."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server = RedisServer(work).start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
