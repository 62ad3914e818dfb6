"""SSRF protection: webhook URLs that reach private networks are refused by default, at
registration and again at delivery time."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from services.dispatcher.webhooks.attempts import WebhookAttempts
from services.dispatcher.webhooks.delivery import deliver_webhook
from services.dispatcher.webhooks.http_client import WebhookHttp
from services.ingest.errors.client import MALFORMED
from shared.webhooks import url_guard
from shared.webhooks.records import DeliveryRecord, WebhookCreate
from shared.webhooks.store import WebhookStore
from shared.webhooks.url_guard import UnsafeURL, allowed, check_url, pin

GENERIC = "the URL resolves to an address inferq does not call"
REFUSED = [
    ("https://127.0.0.1/hook", GENERIC),
    ("https://169.254.169.254/latest/meta-data", GENERIC),
    ("https://localhost:8443/hook", GENERIC),  # a hostname that resolves to 127.0.0.1
    ("https://[::ffff:10.0.0.1]/hook", GENERIC),
    ("https://metadata.google.internal/computeMetadata", GENERIC),
    ("https://a..b/hook", GENERIC),  # does not resolve: the same answer as a private address
    ("http://93.184.216.34/hook", "https"),
    ("ftp://93.184.216.34/hook", "https"),
    ("https://user:pw@93.184.216.34/hook", "credentials"),
    ("https://example.com:99999/hook", "malformed"),
    ("https://[::1/hook", "malformed"),
    ("https://93.184.216.34:0/hook", "port 0"),
]

# (address, whether inferq may call it)
ADDRESSES = [
    ("93.184.216.34", True),
    ("1.1.1.1", True),
    ("2606:2800:220:1::1", True),
    ("127.0.0.1", False),  # loopback
    ("0.0.0.0", False),  # unspecified
    ("10.1.2.3", False),  # private
    ("172.16.0.1", False),
    ("192.168.0.10", False),
    ("169.254.169.254", False),  # link-local: cloud metadata
    ("100.64.1.1", False),  # shared (carrier-grade NAT)
    ("192.0.0.192", False),  # IETF protocol assignments
    ("192.0.2.1", False),  # documentation
    ("198.18.0.1", False),  # benchmarking
    ("192.88.99.1", False),  # deprecated 6to4 relay
    ("224.0.0.1", False),  # multicast
    ("240.0.0.1", False),  # reserved
    ("255.255.255.255", False),  # broadcast
    ("::1", False),
    ("::", False),
    ("fe80::1", False),
    ("fc00::1", False),  # unique local
    ("fec0::1", False),  # deprecated site-local
    ("ff02::1", False),  # multicast
    ("ff0e::1", False),  # global-scope multicast
    ("2001:db8::1", False),  # documentation
    ("::ffff:10.0.0.1", False),  # IPv4-mapped
    ("::ffff:169.254.169.254", False),
    ("::ffff:127.0.0.1", False),
    ("::ffff:93.184.216.34", True),  # IPv4-mapped public: that address is called
    ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
    ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
    ("2002:5db8:d822::1", True),  # 6to4 of 93.184.216.34
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo (public server and client)
    ("2001:0:a00:1::f5ff:fffe", False),  # Teredo, server and client 10.0.0.1
    ("2001:0:5db8:d822::3f57:fffe", False),  # Teredo, client 192.168.0.1
    ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
    ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
    ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34: reachable from IPv6-only networks
    ("64:ff9b:1::a9fe:a9fe", False),  # local-use NAT64
    ("::a9fe:a9fe", False),  # IPv4-compatible (deprecated)
    ("::5db8:d822", False),
]


@pytest.mark.parametrize("address,ok", ADDRESSES)
def test_only_global_addresses_may_be_called(address, ok):
    assert allowed(ipaddress.ip_address(address)) is ok


@pytest.mark.parametrize("address,ok", ADDRESSES)
async def test_literal_urls_by_address(address, ok):
    host = f"[{address}]" if ":" in address else address
    if ok:
        target = await check_url(f"https://{host}/hook", allow_private=False, allow_http=False)
        assert target.url == f"https://{host}/hook"
    else:
        with pytest.raises(UnsafeURL) as refused:
            await check_url(f"https://{host}/hook", allow_private=False, allow_http=False)
        assert str(refused.value) == GENERIC


@pytest.fixture
def dns(monkeypatch):
    """Names resolve to what the test says (the resolver is replaced at the guard's boundary)."""
    answers: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    monkeypatch.setattr(url_guard, "resolve", resolve)
    return answers


@pytest.mark.parametrize("address,ok", ADDRESSES)
async def test_names_by_what_they_resolve_to(dns, address, ok):
    dns["hooks.example.com"] = ["93.184.216.34", address]  # every answer must pass
    if ok:
        target = await check_url("https://hooks.example.com/hook", allow_private=False, allow_http=False)
        assert target == ("https://93.184.216.34/hook", "hooks.example.com", "hooks.example.com", "hooks.example.com")
    else:
        with pytest.raises(UnsafeURL) as refused:
            await check_url("https://hooks.example.com/hook", allow_private=False, allow_http=False)
        assert str(refused.value) == GENERIC and address not in str(refused.value)


@pytest.mark.parametrize("url,why", REFUSED)
async def test_refused_by_default(url, why):
    with pytest.raises(UnsafeURL, match=why):
        await check_url(url, allow_private=False, allow_http=False)


def test_a_checked_address_is_pinned_with_the_name_kept_for_host_and_tls():
    t = pin("https://hooks.example.com:8443/in?x=1", ipaddress.ip_address("93.184.216.34"))
    assert t == (
        "https://93.184.216.34:8443/in?x=1",
        "hooks.example.com",
        "hooks.example.com:8443",
        "hooks.example.com",
    )
    t = pin("https://hooks.example.com/in", ipaddress.ip_address("2606:2800:220:1::1"))
    assert t == ("https://[2606:2800:220:1::1]/in", "hooks.example.com", "hooks.example.com", "hooks.example.com")


async def test_public_https_literal_and_explicit_opt_ins_pass(dns):
    await check_url("https://93.184.216.34/hook", allow_private=False, allow_http=False)
    await check_url("https://127.0.0.1/hook", allow_private=True, allow_http=False)
    await check_url("http://127.0.0.1/hook", allow_private=True, allow_http=True)
    dns["hooks.test"] = ["127.0.0.1"]  # allowed private addresses are still pinned
    assert await check_url("https://hooks.test:8443/x", allow_private=True, allow_http=False) == (
        "https://127.0.0.1:8443/x",
        "hooks.test",
        "hooks.test:8443",
        "hooks.test",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/x", f"url: {GENERIC}"),
        ("https://10.0.0.7/x", f"url: {GENERIC}"),
        ("https://169.254.169.254/x", f"url: {GENERIC}"),
        ("https://localhost/x", f"url: {GENERIC}"),
        ("https://example.com:99999/x", f"url: {MALFORMED}"),
        ("https://[::1/x", f"url: {MALFORMED}"),
    ],
)
async def test_api_refuses_private_urls_with_the_field_named(api, url, message):
    resp = await api.post("/v1/webhooks", json={"url": url})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert (err["field"], err["message"]) == ("url", message)
    resp = await api.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "x"}], "webhook": {"url": url}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "webhook.url"
    assert (await api.get("/v1/webhooks")).json()["data"] == []


async def test_bad_webhook_bodies_are_422_naming_the_field(api):
    resp = await api.post("/v1/webhooks", json={"url": "https://93.184.216.34/x", "events": ["job.exploded"]})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "events[0]"
    resp = await api.post("/v1/webhooks", json={"events": ["job.completed"]})
    assert resp.status_code == 422 and "url" in resp.json()["error"]["message"]
    resp = await api.get("/v1/webhooks/wh_00000000000000000000000000/deliveries")
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "webhook_id"


async def _delivery(store: WebhookStore, keys, url: str, did: str) -> str:
    """A delivery of one event to a new endpoint at `url`, due now; the endpoint's id."""
    endpoint = await store.create("default", WebhookCreate(url=url))
    record = DeliveryRecord(
        id=did,
        endpoint_id=endpoint.id,
        event_type="job.completed",
        event_id=f"e.{did}",
        payload="{}",
        created_at=0,
        next_attempt_at=0,
    )
    await store.fan_out(keys.events_stream, "webhooks", [], [record])
    return endpoint.id


def _ctx(r, keys, settings, http) -> dict:
    store = WebhookStore(r, keys)
    return {
        "webhooks": store,
        "attempts": WebhookAttempts(r, keys, lease_s=60, max_per_endpoint=4),
        "http": http,
        "settings": settings,
    }


async def _attempt(ctx: dict) -> str:
    """Take the one due attempt and make it, as the dispatcher's scheduler and arq job do."""
    [attempt] = await ctx["attempts"].take_due()
    return await deliver_webhook(ctx, *attempt)


async def test_delivery_rechecks_the_address(r, keys, settings):
    """An endpoint stored while private addresses were allowed (or whose name now resolves to
    one) is not called once they are not: the attempt fails as refused."""
    calls = []

    class NoNetwork:
        async def post(self, *a, **kw):
            calls.append(a)
            raise AssertionError("must not be called")

    ctx = _ctx(r, keys, msgspec.structs.replace(settings, webhook_retry_schedule="0"), NoNetwork())
    did = "msg_0123456789abcdef0123456789"
    await _delivery(ctx["webhooks"], keys, "https://localhost:9/hook", did)
    assert await _attempt(ctx) == "dead_lettered"
    rec = await ctx["webhooks"].get_delivery(did)
    assert calls == [] and rec.attempts[0].error == f"refused: {GENERIC}"


async def test_an_unexpected_failure_is_a_failed_attempt_not_a_stalled_delivery(r, keys, settings):
    from shared.core.errors import DeliveryPending

    class Broken:
        async def post(self, *a, **kw):
            raise OverflowError("port out of range")

    ctx = _ctx(r, keys, msgspec.structs.replace(settings, webhook_retry_schedule="0,30"), Broken())
    store = ctx["webhooks"]
    did = "msg_abcdef0123456789abcdef0123"
    endpoint_id = await _delivery(store, keys, "https://93.184.216.34/hook", did)
    assert await _attempt(ctx) == "pending"
    rec = await store.get_delivery(did)
    assert rec.attempts[0].error == "OverflowError: port out of range" and rec.next_attempt_at is not None
    assert await r.zscore(keys.webhook_due, did) == rec.next_attempt_at  # scheduled again
    with pytest.raises(DeliveryPending):  # a pending delivery is not redelivered on top of itself
        await store.redeliver(endpoint_id, did)


async def test_a_taken_delivery_falls_due_again_only_when_its_lease_ends(r, keys):
    store = WebhookStore(r, keys)
    await _delivery(store, keys, "https://93.184.216.34/hook", "msg_x")
    await r.zadd(keys.webhook_due, {"msg_x": 1000})
    attempts = WebhookAttempts(r, keys, lease_s=60, max_per_endpoint=4)
    [first] = await attempts.take_due(now_ms=5000)
    assert await attempts.take_due(now_ms=5000) == []  # held while its attempt runs
    [second] = await attempts.take_due(now_ms=66_000)  # its sender never reported: due again
    assert second.token != first.token
    assert await attempts.start(first) == ("not_holder", [])  # the first holder may not send any more
    assert await attempts.start(second) == ("ok", [])


def _certificate(tmp_path, *names: str) -> tuple[str, str]:
    """A self-signed certificate for `names` (the receiver's, and the CA bundle that trusts it)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={names[0]}",
            "-addext",
            "subjectAltName=" + ",".join(f"DNS:{n}" for n in names),
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


class TLSReceiver:
    """HTTPS with keep-alive on loopback; records each request's Host, TLS server name and connection."""

    def __init__(self, cert: str, key: str) -> None:
        self.requests: list[tuple[str, str | None, int]] = []  # (Host, SNI, client port)
        receiver = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        names: dict[int, str | None] = {}

        def sni(sock, name, _ctx) -> None:
            names[id(sock)] = name

        context.sni_callback = sni

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append((self.headers["host"], names.get(id(self.connection)), self.client_address[1]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                return context.wrap_socket(sock, server_side=True), addr

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_receiver(tmp_path):
    cert, key = _certificate(tmp_path, "hooks.test", "other.test")
    receiver = TLSReceiver(cert, key)
    receiver.ca_bundle = cert
    yield receiver
    receiver.close()


async def test_pinned_https_verifies_the_name_and_pools_connections_by_name(r, keys, settings, dns, tls_receiver):
    """Two names on one address: each name is verified against the certificate and sent as SNI
    and Host, and a connection opened for one name is never reused for the other."""
    dns["hooks.test"] = dns["other.test"] = ["127.0.0.1"]
    http = WebhookHttp(max_connections_per_host=4, ca_bundle=tls_receiver.ca_bundle)
    ctx = _ctx(r, keys, msgspec.structs.replace(settings, webhook_allow_private=True), http)
    port = tls_receiver.port
    try:
        for n, host in enumerate(["hooks.test", "hooks.test", "other.test"]):
            await _delivery(ctx["webhooks"], keys, f"https://{host}:{port}/in", f"msg_{n:026d}")
            assert await _attempt(ctx) == "succeeded"
    finally:
        await http.aclose()
    (h1, sni1, conn1), (h2, sni2, conn2), (h3, sni3, conn3) = tls_receiver.requests
    assert (h1, h2, h3) == (f"hooks.test:{port}", f"hooks.test:{port}", f"other.test:{port}")
    assert (sni1, sni2, sni3) == ("hooks.test", "hooks.test", "other.test")
    assert conn1 == conn2  # one name: its pooled connection is reused
    assert conn3 != conn1  # another name on the same address: a connection of its own


async def test_pinned_https_refuses_a_certificate_for_another_name(r, keys, settings, dns, tls_receiver):
    dns["elsewhere.test"] = ["127.0.0.1"]
    http = WebhookHttp(max_connections_per_host=4, ca_bundle=tls_receiver.ca_bundle)
    ctx = _ctx(r, keys, msgspec.structs.replace(settings, webhook_allow_private=True), http)
    try:
        await _delivery(ctx["webhooks"], keys, f"https://elsewhere.test:{tls_receiver.port}/in", "msg_" + "0" * 26)
        assert await _attempt(ctx) == "pending"
    finally:
        await http.aclose()
    rec = await ctx["webhooks"].get_delivery("msg_" + "0" * 26)
    assert "CERTIFICATE_VERIFY_FAILED" in rec.attempts[0].error and tls_receiver.requests == []
