"""Stopping a background task for sure.

On Python 3.11 a cancellation that lands just as a redis-py call completes can be swallowed
(redis-py waits with `asyncio.wait_for`), and the task then runs on. A single `cancel()` followed
by an unbounded wait can therefore hang a shutdown until the process is killed; this repeats the
cancellation until the task has ended."""

from __future__ import annotations

import asyncio

RETRY_S = 0.5


async def cancel_and_wait(task: asyncio.Task, retry_s: float = RETRY_S) -> None:
    """Cancel `task` and return once it has ended, cancelling it again every `retry_s` while it runs."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=retry_s)
