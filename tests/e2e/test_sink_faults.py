"""Event sinks under faults, on real processes: the dispatcher killed with -9 while it delivers, a
receiver answering 503 for 30 s, nats-server stopped and started, and a sink so far behind that
the events stream trimmed events before it read them. At the end no event is missing; duplicates
come only from the kill (one batch at most, with the same `id`), and JetStream stores each event
once; while one sink is down the others and webhooks keep going; lost events are counted."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import redis

from inferq.localstack import LocalStack
from tests.e2e.test_sinks import (
    MODEL,
    http_sink,
    in_order_per_job,
    nats_sink,
    sinks,
    stream_events,
    submit,
    wait_for,
)
from tests.support.cloudevents_receiver import CloudEventsReceiver
from tests.support.nats_server import NatsServer, stored
from tests.support.webhook_receiver import Receiver

WEBHOOKS = {"INFERQ_WEBHOOK_ALLOW_PRIVATE": "1", "INFERQ_WEBHOOK_ALLOW_HTTP": "1"}
BATCH = 100  # the sinks' batch_size: the most a kill can make a sink send twice


def _kill9(stack: LocalStack, name: str) -> None:
    proc = stack.procs.pop(name)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_outage_and_nats_restart_lose_nothing_and_hold_nothing_back(tmp_path):
    with (
        CloudEventsReceiver(delay_s=0.002) as receiver,
        NatsServer(tmp_path / "nats") as nats_server,
        Receiver() as hooks,
    ):
        models = tmp_path / "models.toml"
        models.write_text(
            MODEL.format(latency=2)
            + http_sink("flaky", receiver, "structured", retry_max_s=2)
            + http_sink("steady", receiver, "binary")
            + nats_sink("bus", nats_server, retry_max_s=1)
        )
        receiver.answer("/flaky", 503, headers={"Retry-After": "1"})  # until the test ends the outage
        outage_began = time.monotonic()
        with (
            LocalStack(models, workdir=tmp_path / "stack", env=WEBHOOKS) as stack,
            httpx.Client(base_url=stack.base_url, timeout=30) as api,
        ):
            rdb = redis.Redis.from_url(stack.redis_url)
            hook = api.post("/v1/webhooks", json={"url": hooks.url("/hook")})
            assert hook.status_code == 201, hook.text
            job = submit(api, 3000)

            # kill -9 the dispatcher while it is part-way through the steady sink's events
            at_kill = wait_for(
                lambda: (s := sinks(api)["steady"])["delivered"] >= 200 and s["lag"] > 0 and s, 60, "steady delivering"
            )
            _kill9(stack, "dispatcher-0")
            stack.spawn("dispatcher-1", "services.dispatcher")
            assert at_kill["lag"] > 0, "the dispatcher was killed holding undelivered events"

            # nats-server goes away while the new dispatcher publishes, and comes back
            wait_for(lambda: sinks(api)["bus"]["delivered"] > at_kill["delivered"], 60, "bus delivering again", stack)
            nats_server.stop()
            during = submit(api, 50)  # events that arrive while it is down
            down = wait_for(lambda: (b := sinks(api)["bus"])["last_error"] and b, 30, "bus failing", stack)
            nats_server.start()

            # the job, the steady sink, the bus and the webhook finish while /flaky still answers 503
            for j in (job, during):
                wait_for(lambda j=j: api.get(f"/v1/jobs/{j}").json()["status"] == "completed", 120, "job", stack)
            total = len(stream_events(rdb))
            assert total == 3000 + 1 + 50 + 1
            wait_for(
                lambda: all(sinks(api)[n]["lag"] == 0 for n in ("steady", "bus")) and hooks.calls_to("/hook"),
                60,
                "steady, bus and the webhook done",
                stack,
            )
            flaky = sinks(api)["flaky"]
            assert (
                flaky["delivered"] == 0
                and flaky["lag"] == total
                and flaky["last_error"] == "HTTP 503 from the receiver"
            )
            assert flaky["failing_since"] is not None

            # the outage ends after 30 s: the flaky sink catches up
            time.sleep(max(0.0, outage_began + 30 - time.monotonic()))
            receiver.answer("/flaky", 200)
            wait_for(lambda: sinks(api)["flaky"]["lag"] == 0, 90, "flaky caught up", stack)
            expected = stream_events(rdb)
            ids = {i for i, _ in expected}
            for name in ("flaky", "steady"):
                got = [(e.id, e.subject) for e in receiver.at(f"/{name}")]
                assert {i for i, _ in got} == ids, f"{name}: events missing"
                dupes = len(got) - len(ids)
                print(f"{name}: {len(got)} received, {dupes} twice")
                assert dupes <= (BATCH if name == "steady" else 0), f"{name}: {dupes} sent twice"
                in_order_per_job(expected, list(dict.fromkeys(got)))  # each event's first arrival
            on_bus = stored(nats_server.url, "INFERQ")
            assert sorted(m.msg_id for m in on_bus) == sorted(ids), "JetStream holds each event exactly once"
            in_order_per_job(expected, [(m.msg_id, json.loads(m.body)["subject"]) for m in on_bus])
            print("bus while nats-server was down:", down["last_error"])
            assert down["lag"] > 0 and down["last_error"].startswith("NATS unavailable: ")
            final = sinks(api)
            assert final["flaky"]["last_error"] is None and all(s["lost"] == 0 for s in final.values())
            assert final["flaky"]["delivered"] == total
            c = api.get(f"/v1/jobs/{job}").json()["request_counts"]
            assert (c["succeeded"], c["total"]) == (3000, 3000)
            assert receiver.refused["/flaky"] >= 10  # retried through the outage, about once a second
            assert "sink steady: delivering from this dispatcher" in stack.log_tail("dispatcher-1", 400)


def test_events_trimmed_before_a_sink_read_them_are_counted_as_lost(tmp_path):
    with CloudEventsReceiver() as receiver:
        models = tmp_path / "models.toml"
        models.write_text(MODEL.format(latency=0) + http_sink("late", receiver, "batch", retry_max_s=0.5))
        receiver.answer("/late", 503)
        env = {"INFERQ_EVENTS_MAXLEN": "1000"}
        with (
            LocalStack(models, workdir=tmp_path / "stack", env=env) as stack,
            httpx.Client(base_url=stack.base_url, timeout=30) as api,
        ):
            rdb = redis.Redis.from_url(stack.redis_url)
            job = submit(api, 2500)
            wait_for(lambda: api.get(f"/v1/jobs/{job}").json()["status"] == "completed", 120, "job", stack)
            kept = {i for i, _ in stream_events(rdb)}
            assert len(kept) < 2501, "the stream was trimmed"
            receiver.answer("/late", 200)
            late = wait_for(lambda: (s := sinks(api)["late"])["lag"] == 0 and s, 60, "late caught up", stack)
            got = {e.id for e in receiver.at("/late")}
            assert late["delivered"] + late["lost"] == 2501 and late["lost"] > 0
            assert late["delivered"] == len(got) and kept <= got
            assert "they are lost for this sink" in stack.log_tail("dispatcher-0", 200)
