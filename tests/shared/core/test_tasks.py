"""A task that swallows a cancellation (as a redis-py call on Python 3.11 can) is still stopped."""

from __future__ import annotations

import asyncio

from shared.core.tasks import cancel_and_wait


async def test_a_task_that_swallows_the_first_cancellation_is_still_stopped():
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # the first cancellation is lost, as it can be inside a Redis call

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, retry_s=0.05), timeout=5)
    assert task.cancelled() and swallowed == 1


async def test_a_finished_task_is_left_as_it_ended():
    task = asyncio.create_task(asyncio.sleep(0, result="done"))
    await task
    await cancel_and_wait(task)
    assert task.result() == "done"
