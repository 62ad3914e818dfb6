"""Webhooks end to end: real services, a real HTTP receiver on loopback, signatures checked with
the `standardwebhooks` library, retries on a compressed schedule."""

from __future__ import annotations

import time

import httpx
import pytest
from standardwebhooks import Webhook

from inferq.localstack import LocalStack, free_port
from tests.support.webhook_receiver import Receiver

MODELS = """
[models.echo]
engine = "dummy"
max_inflight = 64
[models.echo.options]
latency_ms = 2
"""
ENV = {
    "INFERQ_WEBHOOK_ALLOW_PRIVATE": "1",
    "INFERQ_WEBHOOK_ALLOW_HTTP": "1",
    "INFERQ_WEBHOOK_RETRY_SCHEDULE": "0,0.3,0.3",
    "INFERQ_WEBHOOK_TIMEOUT_S": "2",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("webhooks") / "models.toml"
    path.write_text(MODELS)
    with LocalStack(path, workdir=path.parent / "stack", env=ENV) as running:
        yield running


@pytest.fixture
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def receiver():
    with Receiver() as rec:
        yield rec


def submit(api, n: int = 3, **extra) -> str:
    resp = api.post(
        "/v1/jobs", json={"requests": [{"model": "echo", "prompt": f"hello {i}"} for i in range(n)], **extra}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def register(api, url: str, events=None) -> dict:
    resp = api.post("/v1/webhooks", json={"url": url, **({"events": events} if events else {})})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["secret"].startswith("whsec_")
    return body


def deliveries(api, endpoint_id: str) -> list[dict]:
    resp = api.get(f"/v1/webhooks/{endpoint_id}/deliveries")
    assert resp.status_code == 200
    return resp.json()["data"]


def test_retried_until_accepted_with_one_webhook_id_and_valid_signatures(api, receiver):
    receiver.on("/flaky", 500, 500, 200)
    endpoint = register(api, receiver.url("/flaky"))
    try:
        job_id = submit(api)
        calls = wait_for(lambda: len(receiver.calls_to("/flaky")) >= 3 and receiver.calls_to("/flaky"))
        verifier = Webhook(endpoint["secret"])
        for call in calls:
            payload = verifier.verify(call.body, call.headers)  # raises unless the signature is valid
            assert payload["type"] == "job.completed" and payload["data"]["id"] == job_id
        assert len({c.headers["webhook-id"] for c in calls}) == 1
        assert calls[1].at - calls[0].at >= 0.25  # the retry schedule, not a tight loop
        data = calls[-1].json["data"]
        assert data["request_counts"]["succeeded"] == 3 and data["results_url"] == f"/v1/jobs/{job_id}/results"
        [delivery] = wait_for(lambda: [d for d in deliveries(api, endpoint["id"]) if d["status"] == "succeeded"])
        assert delivery["id"] == calls[0].headers["webhook-id"]
        assert (delivery["attempts"], delivery["last_status_code"]) == (3, 200)
        assert [a["status_code"] for a in delivery["history"]] == [500, 500, 200]
        time.sleep(0.8)
        assert len(receiver.calls_to("/flaky")) == 3  # nothing more once accepted
    finally:
        api.delete(f"/v1/webhooks/{endpoint['id']}")


def test_receiver_down_for_the_whole_schedule_is_dead_lettered_and_can_be_redelivered(api):
    port = free_port()  # nothing listens here yet
    endpoint = register(api, f"http://127.0.0.1:{port}/down")
    try:
        submit(api)
        [delivery] = wait_for(lambda: [d for d in deliveries(api, endpoint["id"]) if d["status"] == "dead_lettered"])
        assert (
            delivery["attempts"] == 3 and delivery["last_status_code"] is None and delivery["next_attempt_at"] is None
        )
        assert "ConnectError" in delivery["last_error"]
        dead = api.get("/v1/dead-letters").json()["data"]
        mine = [d for d in dead if d.get("delivery_id") == delivery["id"]]
        assert (
            len(mine) == 1
            and mine[0]["reason"] == "webhook_delivery_failed"
            and mine[0]["webhook_id"] == endpoint["id"]
        )
        with Receiver(port) as receiver:  # the receiver is back: redeliver by hand
            resp = api.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/redeliver")
            assert resp.status_code == 200 and resp.json()["status"] == "pending"
            [call] = wait_for(lambda: receiver.calls_to("/down"))
            assert call.headers["webhook-id"] == delivery["id"]
            Webhook(endpoint["secret"]).verify(call.body, call.headers)
            wait_for(lambda: [d for d in deliveries(api, endpoint["id"]) if d["status"] == "succeeded"])
    finally:
        api.delete(f"/v1/webhooks/{endpoint['id']}")


def test_gone_disables_the_endpoint(api, receiver):
    receiver.on("/gone", 410)
    endpoint = register(api, receiver.url("/gone"))
    try:
        submit(api)
        wait_for(lambda: api.get(f"/v1/webhooks/{endpoint['id']}").json()["status"] == "disabled")
        assert "410" in api.get(f"/v1/webhooks/{endpoint['id']}").json()["disabled_reason"]
        [delivery] = deliveries(api, endpoint["id"])
        assert delivery["status"] == "endpoint_disabled" and delivery["attempts"] == 1
        job_id = submit(api)
        wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] == "completed")
        time.sleep(0.8)
        assert len(receiver.calls_to("/gone")) == 1  # a disabled endpoint gets nothing more
    finally:
        api.delete(f"/v1/webhooks/{endpoint['id']}")


def test_retry_after_is_honoured(api, receiver):
    receiver.on("/busy", (429, {"Retry-After": "1"}), 200)
    endpoint = register(api, receiver.url("/busy"))
    try:
        submit(api)
        calls = wait_for(lambda: len(receiver.calls_to("/busy")) >= 2 and receiver.calls_to("/busy"))
        assert calls[1].at - calls[0].at >= 0.95  # schedule says 0.3 s; the receiver asked for 1 s
    finally:
        api.delete(f"/v1/webhooks/{endpoint['id']}")


def test_job_webhook_with_request_events_and_secret_rotation(api, receiver):
    resp = api.post(
        "/v1/jobs",
        json={
            "requests": [{"model": "echo", "prompt": f"p {i}"} for i in range(5)],
            "webhook": {"url": receiver.url("/job"), "events": ["request.completed", "job.completed"]},
        },
    )
    assert resp.status_code == 202, resp.text
    job = resp.json()
    hook = job["webhook"]
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["request.completed", "job.completed"]
    assert "secret" not in api.get(f"/v1/jobs/{job['id']}").json()["webhook"]  # shown once
    calls = wait_for(lambda: len(receiver.calls_to("/job")) >= 6 and receiver.calls_to("/job"))
    verifier = Webhook(hook["secret"])
    payloads = [verifier.verify(c.body, c.headers) for c in calls]
    requests = [p for p in payloads if p["type"] == "request.completed"]
    assert sorted(p["data"]["custom_id"] for p in requests) == sorted(
        r["custom_id"]
        for r in (__import__("json").loads(l) for l in api.get(f"/v1/jobs/{job['id']}/results").text.splitlines())
    )
    assert all(p["data"]["status"] == "succeeded" and p["data"]["output"]["text"] for p in requests)
    assert [p["type"] for p in payloads if p["type"].startswith("job.")] == ["job.completed"]
    assert len({c.headers["webhook-id"] for c in calls}) == 6

    # rotation: for a while, both the old and the new secret verify
    endpoint = register(api, receiver.url("/rotated"))
    try:
        rotated = api.post(f"/v1/webhooks/{endpoint['id']}/rotate").json()
        assert rotated["secret"] != endpoint["secret"]
        submit(api)
        [call] = wait_for(lambda: receiver.calls_to("/rotated"))
        assert len(call.headers["webhook-signature"].split()) == 2
        Webhook(rotated["secret"]).verify(call.body, call.headers)
        Webhook(endpoint["secret"]).verify(call.body, call.headers)
    finally:
        api.delete(f"/v1/webhooks/{endpoint['id']}")


def test_endpoint_subscribed_to_request_events_gets_one_per_request(api, receiver):
    endpoint = register(api, receiver.url("/requests"), events=["request.completed"])
    try:
        job_id = submit(api, n=4)
        calls = wait_for(lambda: len(receiver.calls_to("/requests")) >= 4 and receiver.calls_to("/requests"))
        payloads = [Webhook(endpoint["secret"]).verify(c.body, c.headers) for c in calls]
        assert {p["type"] for p in payloads} == {"request.completed"}
        assert sorted(p["data"]["custom_id"] for p in payloads) == sorted(
            p["data"]["request_id"] for p in payloads
        )  # generated custom_ids are the request ids
        assert all(p["data"]["request_id"].startswith("req_" + job_id[4:]) for p in payloads)
    finally:
        api.delete(f"/v1/webhooks/{endpoint['id']}")
    job_id = submit(api, n=2)  # once deleted, request events stop
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] == "completed")
    time.sleep(0.5)
    assert len(receiver.calls_to("/requests")) == 4
