"""Webhook attempts: each due attempt is made once, even with several dispatchers polling the due
set; at most the configured number are in flight to one endpoint; an attempt whose sender died is
made again after its lease, once, and both show in the history."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

from services.dispatcher.webhooks.attempts import WebhookAttempts
from shared.webhooks.records import DeliveryRecord, WebhookCreate
from shared.webhooks.store import WebhookStore
from tests.conftest import ROOT
from tests.support.webhook_senders import CountingReceiver, run_sender


async def _deliveries(r, keys, url: str, n: int) -> list[str]:
    store = WebhookStore(r, keys)
    endpoint = await store.create("default", WebhookCreate(url=url))
    ids = [f"msg_{i:026d}" for i in range(n)]
    records = [
        DeliveryRecord(
            id=i,
            endpoint_id=endpoint.id,
            event_type="job.completed",
            event_id=f"e{i}",
            payload="{}",
            created_at=0,
            next_attempt_at=0,
        )
        for i in ids
    ]
    await store.fan_out(keys.events_stream, "webhooks", [], records)
    return ids


async def _until(predicate, timeout: float = 30.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(every)


async def _ended(r, keys, ids) -> bool:
    store = WebhookStore(r, keys)
    records = [await store.get_delivery(i) for i in ids]
    return all(rec.status != "pending" for rec in records)


async def test_two_dispatchers_make_each_due_attempt_once(r, keys, redis_server):
    # every delivery fails once, then is accepted: two attempts each, both due while two
    # dispatchers poll the same due set
    with CountingReceiver(lambda _id, nth: (500 if nth == 1 else 200, 0.0)) as receiver:
        ids = await _deliveries(r, keys, receiver.url, 40)
        stop = asyncio.Event()
        senders = [
            asyncio.create_task(run_sender(redis_server.url, stop, lease_s=10, timeout_s=2, limit=100))
            for _ in range(2)
        ]
        await _until(lambda: _ended(r, keys, ids))
        await asyncio.sleep(0.5)  # a duplicate attempt would arrive now
        stop.set()
        await asyncio.gather(*senders)
    store = WebhookStore(r, keys)
    for i in ids:
        rec = await store.get_delivery(i)
        assert rec.status == "succeeded"
        assert [a.status_code for a in rec.attempts] == [500, 200]  # history complete, in order
        assert receiver.hits[i] == 2  # each due attempt sent exactly once
    assert await r.zcard(keys.webhook_due) == 0


async def test_attempts_in_flight_to_one_endpoint_stay_within_the_limit(r, keys, redis_server):
    with CountingReceiver(lambda _id, _nth: (200, 0.4)) as receiver:  # a slow receiver
        ids = await _deliveries(r, keys, receiver.url, 12)
        stop = asyncio.Event()
        senders = [
            asyncio.create_task(run_sender(redis_server.url, stop, lease_s=10, timeout_s=3, limit=3)) for _ in range(2)
        ]
        await _until(lambda: _ended(r, keys, ids))
        stop.set()
        await asyncio.gather(*senders)
    assert receiver.max_open == 3  # never more than the limit across both dispatchers, and it is used
    assert all(receiver.hits[i] == 1 for i in ids)


async def test_a_sender_killed_mid_attempt_is_retried_once_after_its_lease(r, keys, redis_server, tmp_path):
    lease_s = 3.0
    with CountingReceiver(lambda _id, nth: (200, 30.0 if nth == 1 else 0.0)) as receiver:  # the first call hangs
        [did] = await _deliveries(r, keys, receiver.url, 1)
        sender = subprocess.Popen(
            [sys.executable, "-m", "tests.support.webhook_senders", redis_server.url, str(lease_s), "2"],
            cwd=ROOT,
            stdout=open(tmp_path / "sender.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:

            async def called() -> bool:
                return receiver.hits[did] == 1

            await _until(called, timeout=20)
            sender.send_signal(signal.SIGKILL)  # mid-attempt: no outcome is ever recorded
            sender.wait(10)
            stop = asyncio.Event()
            survivor = asyncio.create_task(run_sender(redis_server.url, stop, lease_s=lease_s, timeout_s=2))
            await _until(lambda: _ended(r, keys, [did]), timeout=20)
            await asyncio.sleep(lease_s + 0.5)  # a second retry would have come by now
            stop.set()
            await survivor
        finally:
            sender.kill()
    rec = await WebhookStore(r, keys).get_delivery(did)
    assert receiver.hits[did] == 2 and rec.status == "succeeded"
    first_call, retry = receiver.times[did]
    assert retry - first_call >= lease_s - 0.5  # not before the lease ended
    lost, made = rec.attempts
    assert (lost.status_code, made.status_code) == (None, 200)
    assert lost.error.startswith("no outcome") and lost.duration_ms is None and lost.at <= made.at
    assert await r.zcard(keys.webhook_sending(rec.endpoint_id)) == 0  # its endpoint slot was freed


async def test_an_endpoint_slot_is_freed_when_its_attempt_ends_or_its_lease_does(r, keys):
    ids = await _deliveries(r, keys, "https://93.184.216.34/hook", 2)
    first, second = ids
    await r.zadd(keys.webhook_due, {first: 1000, second: 1001})
    attempts = WebhookAttempts(r, keys, lease_s=60, max_per_endpoint=1, defer_ms=250)
    [a] = await attempts.take_due(now_ms=5000)
    assert a.delivery_id == first and await r.zscore(keys.webhook_due, second) == 5250  # its endpoint is full
    assert await attempts.take_due(now_ms=6000) == []
    # the first attempt's sender never reports: when its lease ends, its slot is free again
    [b] = await attempts.take_due(now_ms=66_000)
    assert b.delivery_id == second and await r.zscore(keys.webhook_due, first) == 66_250
    # an attempt that records its outcome frees its slot at once
    assert await attempts.start(b) == ("ok", [])
    rec = await WebhookStore(r, keys).get_delivery(second)
    rec.status = "succeeded"
    assert await attempts.finish(b, rec, ttl_s=60)
    [again] = await attempts.take_due(now_ms=66_250)
    assert again.delivery_id == first and again.token > a.token
    assert await attempts.finish(a, rec, ttl_s=60) is False  # the first holder records nothing
