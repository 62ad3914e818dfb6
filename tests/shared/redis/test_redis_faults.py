"""Redis that is briefly unable, for real: out of memory, read-only, primary down, not persisting,
busy with a script, loading, silent. Every such reply is one of TRANSIENT_REDIS_ERRORS whichever
call met it; the API answers 503 with Retry-After and writes nothing; readiness says so; an outage
is logged three times at most; a Redis older than 6.2 stops every service with exit 2."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.exceptions import BusyLoadingError, MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inferq.localstack import free_port
from services.inference.engines.dummy import DummyEngine
from services.inference.worker import InferenceWorker
from services.ingest.app import create_app
from shared.catalog.models import DummyOptions, parse_models
from shared.core.errors import TRANSIENT_REDIS_ERRORS, RedisBusyError, RedisMisconfError, RedisUnblockedError
from shared.core.settings import Settings
from shared.ops.server import serve as serve_ops
from shared.redis.client import check_server_at_start, connect, version_problem
from shared.redis.keys import WORKER_GROUP, Keys
from shared.redis.outage import RedisOutage
from tests.conftest import FAST_MODELS, ROOT
from tests.services.inference.test_worker import _count, _enqueue, _results
from tests.services.inference.test_worker import _until as _until_true
from tests.support.resp_stand_in import OK, RespStandIn, array, server_info

keys = Keys("inferq")
JOB = {"requests": [{"model": "alpha", "prompt": "hello"}]}


class Server:
    """A private redis-server (no persistence unless a test turns it on): tests put it in states
    that the session's shared server must never be in."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--dir", str(workdir), "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
            + ["--enable-protected-configs", "yes", *args],  # `dir`, for MISCONF
            stdout=open(workdir / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.admin = redis.Redis(port=self.port, socket_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    s = Server(tmp_path / "redis")
    yield s
    s.stop()


def raw_command(port: int, *args: str) -> bytes:
    """Send one command on a connection of its own; the first line of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(array(*args))
        return s.makefile("rb").readline()


# --- the states, each entered for real and left as it was -----------------------------------


def fill_memory(admin: redis.Redis) -> int:
    """maxmemory just above what Redis uses, then filler keys until it refuses one; then held there
    (maxmemory at most 1 MiB, and 1 MiB under what is used), so neither a client's buffers coming
    and going nor a stream trimmed meanwhile bring Redis back under it. The number of filler keys
    (`filler:<i>`)."""
    admin.config_set("maxmemory", admin.info("memory")["used_memory"] + 256 * 1024)
    filler = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        while True:
            admin.set(f"filler:{filler}", b"x" * 65536)
            filler += 1
    used = admin.info("memory")["used_memory"]
    admin.config_set("maxmemory", min(used - 1024 * 1024, 1024 * 1024))
    return filler


def free_memory(admin: redis.Redis, filler: int) -> None:
    admin.delete(*(f"filler:{i}" for i in range(filler)))
    admin.config_set("maxmemory", 0)


@contextlib.contextmanager
def out_of_memory(s: Server) -> Iterator[None]:
    filler = fill_memory(s.admin)
    try:
        yield
    finally:
        free_memory(s.admin, filler)


@contextlib.contextmanager
def read_only(s: Server, serve_stale: bool = True) -> Iterator[None]:
    """A replica of a primary that is not there (a closed port): nothing to sync, so the data stays."""
    s.admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    s.admin.config_set("replica-serve-stale-data", "yes" if serve_stale else "no")
    try:
        yield
    finally:
        s.admin.config_set("replica-serve-stale-data", "yes")
        s.admin.execute_command("REPLICAOF", "NO", "ONE")


@contextlib.contextmanager
def not_persisting(s: Server) -> Iterator[None]:
    """MISCONF: snapshots are configured and the last one failed (its directory vanished)."""
    gone = s.dir / "gone"
    gone.mkdir()
    s.admin.config_set("dir", str(gone))
    s.admin.config_set("save", "3600 1")
    gone.rmdir()
    s.admin.bgsave()
    _until(lambda: s.admin.info("persistence")["rdb_last_bgsave_status"] == "err")
    try:
        yield
    finally:
        s.admin.config_set("dir", str(s.dir))
        s.admin.bgsave()
        _until(lambda: s.admin.info("persistence")["rdb_last_bgsave_status"] == "ok")
        s.admin.config_set("save", "")


@contextlib.contextmanager
def busy(s: Server) -> Iterator[None]:
    """A script that never ends, in a connection of its own, past busy-reply-threshold."""
    s.admin.config_set("busy-reply-threshold", 50)
    looping = socket.create_connection(("127.0.0.1", s.port))
    looping.sendall(array("EVAL", "while true do end", "0"))

    def refused() -> bool:
        return raw_command(s.port, "GET", "x").startswith(b"-BUSY")

    _until(refused)
    try:
        yield
    finally:
        assert raw_command(s.port, "SCRIPT", "KILL") == OK
        # the script stops at its next check of the kill flag, which a loaded machine can delay
        _until(lambda: not refused())
        looping.close()


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server never reached the state"
        time.sleep(0.02)


STATES = {
    "OOM": (out_of_memory, OutOfMemoryError),
    "READONLY": (read_only, ReadOnlyError),
    "MASTERDOWN": (lambda s: read_only(s, serve_stale=False), MasterDownError),
    "MISCONF": (not_persisting, RedisMisconfError),
    "BUSY": (busy, RedisBusyError),
}


# --- every call meets a class of TRANSIENT_REDIS_ERRORS ---------------------------------------


@pytest.mark.parametrize("state", list(STATES))
async def test_every_kind_of_call_raises_the_transient_class(server, state):
    """Writes, except with MASTERDOWN, which reads meet (a write meets READONLY first)."""
    enter, expected = STATES[state]
    r = connect(server.url)
    write = r.register_script("redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], 'v') return 1")
    read = r.register_script("return redis.call('GET', KEYS[1])")
    await write(keys=["warm"])  # loaded: the script calls below are EVALSHA
    await read(keys=["warm"])
    if state == "MASTERDOWN":
        calls = {
            "command": lambda: r.get("k"),
            "pipeline": lambda: r.pipeline(transaction=False).get("k").get("j").execute(),
            "transaction": lambda: r.pipeline(transaction=True).get("k").execute(),
            "evalsha": lambda: read(keys=["k"]),
            "eval": lambda: r.eval("return redis.call('GET', KEYS[1])", 1, "k"),
        }
    else:
        calls = {
            "command": lambda: r.set("k", "v"),
            "pipeline": lambda: r.pipeline(transaction=False).get("k").set("k", "v").execute(),
            "transaction": lambda: r.pipeline(transaction=True).set("k", "v").execute(),
            "evalsha": lambda: write(keys=["k"]),
            "eval": lambda: r.eval("redis.call('SET', KEYS[1], 'v') return 1", 1, "k"),
        }
    try:
        with enter(server):
            for name, call in calls.items():
                with pytest.raises(expected) as caught:
                    await call()
                assert isinstance(caught.value, TRANSIENT_REDIS_ERRORS), (name, caught.value)
    finally:
        await r.aclose()


async def test_a_dataset_loading_is_transient(tmp_path):
    seed = Server(tmp_path / "seed")
    with seed.admin.pipeline(transaction=False) as pipe:
        for i in range(20_000):
            pipe.set(f"k{i}", i)
        pipe.execute()
    seed.admin.save()
    seed.stop()
    # 20,000 keys, 200 µs each: Redis answers LOADING for about 4 s
    loading = Server(
        tmp_path / "seed", "--dbfilename", "dump.rdb", "--key-load-delay", "200",
        "--loading-process-events-interval-bytes", "1024",
    )  # fmt: skip
    r = connect(loading.url)
    try:
        with pytest.raises(BusyLoadingError) as caught:
            await r.get("k1")
        assert isinstance(caught.value, TRANSIENT_REDIS_ERRORS)
    finally:
        await r.aclose()
        loading.stop()


async def test_a_blocking_read_cut_short_by_a_failover_is_transient(server):
    r = connect(server.url)
    await r.xgroup_create("s", "g", id="0", mkstream=True)
    read = asyncio.create_task(r.xreadgroup("g", "c", {"s": ">"}, count=1, block=20_000))
    deadline = time.monotonic() + 20
    while server.admin.info("clients")["blocked_clients"] != 1:
        assert time.monotonic() < deadline, "the read never blocked"
        await asyncio.sleep(0.01)
    try:
        with read_only(server):
            with pytest.raises(RedisUnblockedError) as caught:
                await read
            assert isinstance(caught.value, TRANSIENT_REDIS_ERRORS)
    finally:
        await r.aclose()


def _stand_in_answering(error: bytes):
    return lambda command: server_info("7.2.4") if command[0].upper() == b"INFO" else error


@pytest.mark.parametrize(
    "reply, expected",
    [
        (b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", TryAgainError),
        # Redis 6.2 reports an error met inside a script wrapped in ERR; the code inside decides
        (
            b"-ERR Error running script (call to f_0a9a): @user_script:41: @user_script: 41: "
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            OutOfMemoryError,
        ),
        (
            b"-ERR Error running script (call to f_0a9a): @user_script:3: @user_script: 3: "
            b"-READONLY You can't write against a read only replica.\r\n",
            ReadOnlyError,
        ),
    ],
)
async def test_replies_a_redis_7_server_cannot_send(reply, expected):
    with RespStandIn(_stand_in_answering(reply)) as stand_in:
        r = connect(stand_in.url)
        try:
            with pytest.raises(expected) as caught:
                await r.evalsha("0a9a", 1, "k")
            assert isinstance(caught.value, TRANSIENT_REDIS_ERRORS)
        finally:
            await r.aclose()


async def test_a_script_error_of_ours_stays_permanent(server):
    r = connect(server.url)
    try:
        await r.set("text", "abc")
        with pytest.raises(redis.exceptions.ResponseError) as caught:
            await r.eval("return redis.call('INCR', KEYS[1])", 1, "text")
        assert not isinstance(caught.value, TRANSIENT_REDIS_ERRORS)
    finally:
        await r.aclose()


def _silent() -> socket.socket:
    """A listener that accepts connections and never answers: a partition, as callers see it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


async def test_a_silent_server_times_out_instead_of_hanging():
    listener = _silent()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    r = connect(url, Settings(redis_url=url, redis_socket_timeout_s=0.5))
    try:
        async with asyncio.timeout(30):  # the guard: without a socket timeout this would hang
            with pytest.raises(RedisTimeoutError) as caught:
                await r.get("k")
        assert isinstance(caught.value, TRANSIENT_REDIS_ERRORS)
    finally:
        await r.aclose()
        listener.close()


async def test_a_unix_socket_connection_works_without_keepalive(tmp_path):
    sock = tmp_path / "redis.sock"
    s = Server(tmp_path / "unix", "--unixsocket", str(sock))
    r = connect(f"unix://{sock}")
    try:
        await r.set("k", "v")
        assert await r.get("k") == b"v"
    finally:
        await r.aclose()
        s.stop()


async def test_a_worker_resumes_requests_whose_read_reply_was_lost(r, keys, models, redis_server):
    """A partition can cut a connection after Redis delivered entries to a read and before the reply
    arrived: they are pending for the worker, which never saw them. Once its connection is back it
    takes them up, instead of leaving them for a reclaim after `reclaim_idle_s` (300 s here)."""
    await _enqueue(r, keys, "alpha", 20)
    stream = keys.model_stream("alpha", "batch")
    await r.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    assert len((await r.xreadgroup(WORKER_GROUP, "worker-lost", {stream: ">"}, count=100))[0][1]) == 20
    worker_r = connect(redis_server.url, client_name="worker-lost")
    worker = InferenceWorker(worker_r, keys, models.get("alpha"), DummyEngine(DummyOptions()), consumer="worker-lost")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await _until_true(lambda: _is_blocked(r, "worker-lost"))
        for client in await r.client_list():  # the worker's connections drop, as in a partition
            if client["name"] == "worker-lost":
                await r.client_kill_filter(_id=client["id"])
        await _until_true(lambda: _count(r, keys, 20))
    finally:
        stop.set()
        await task
        await worker_r.aclose()
    assert sorted(e.line.custom_id for e in await _results(r, keys)) == sorted(f"c{i}" for i in range(20))


async def _is_blocked(r, name: str) -> bool:
    return any(c["name"] == name and c["cmd"] == "xreadgroup" for c in await r.client_list())


# --- ingest: 503 with Retry-After, nothing written, readiness -----------------------------------


@contextlib.asynccontextmanager
async def _api(url: str, tmp_path: Path, **settings):
    models_file = tmp_path / "models.toml"
    models_file.write_text(FAST_MODELS)
    config = Settings(redis_url=url, models_path=str(models_file), auth="off", retry_after_s=7, **settings)
    app = create_app(config, parse_models(FAST_MODELS, str(models_file)))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client


def _assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "7"
    error = resp.json()["error"]
    assert error["type"] == "unavailable" and "Redis" in error["message"]


@pytest.mark.parametrize("state", list(STATES))
async def test_ingest_answers_503_and_writes_nothing(server, tmp_path, state):
    enter, expected = STATES[state]
    reads_refused = state in ("MASTERDOWN", "BUSY")  # the others refuse writes only
    async with _api(server.url, tmp_path) as api:
        job_id = (await api.post("/v1/jobs", json=JOB)).json()["id"]
        with enter(server):
            _assert_unavailable(await api.post("/v1/jobs", json=JOB))
            ready = await api.get("/readyz")
            assert ready.status_code == 503 and "redis unavailable" in ready.json()["detail"]
            for path in (f"/v1/jobs/{job_id}", "/v1/models", f"/v1/jobs/{job_id}/results"):
                resp = await api.get(path)
                if reads_refused:
                    _assert_unavailable(resp)
                else:
                    assert resp.status_code == 200, (path, resp.text)
        assert server.admin.zcard(keys.jobs_index) == 1, "the refused job left something behind"
        # the accepted job's one request, sent straight to its lane stream; the refused one left nothing
        assert server.admin.xlen(keys.ingest_stream) + server.admin.xlen(keys.model_stream("alpha", "batch")) == 1
        assert (await api.post("/v1/jobs", json=JOB)).status_code == 202
        assert (await api.get("/readyz")).status_code == 200


async def test_ingest_answers_503_while_redis_loads(tmp_path):
    seed = Server(tmp_path / "seed")
    with seed.admin.pipeline(transaction=False) as pipe:
        for i in range(20_000):
            pipe.set(f"k{i}", i)
        pipe.execute()
    seed.admin.save()
    seed.stop()
    loading = Server(
        tmp_path / "seed", "--dbfilename", "dump.rdb", "--key-load-delay", "200",
        "--loading-process-events-interval-bytes", "1024",
    )  # fmt: skip
    try:
        async with _api(loading.url, tmp_path) as api:
            _assert_unavailable(await api.post("/v1/jobs", json=JOB))
            _until(lambda: loading.admin.info("persistence")["loading"] == 0)
            assert (await api.post("/v1/jobs", json=JOB)).status_code == 202
    finally:
        loading.stop()


async def test_ingest_answers_503_for_a_reply_only_a_cluster_sends(tmp_path):
    with RespStandIn(lambda command: b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n") as stand_in:
        async with _api(stand_in.url, tmp_path) as api:
            _assert_unavailable(await api.post("/v1/jobs", json=JOB))


async def test_ingest_answers_503_when_redis_falls_silent(tmp_path):
    listener = _silent()
    try:
        async with _api(
            f"redis://127.0.0.1:{listener.getsockname()[1]}/0", tmp_path, redis_socket_timeout_s=0.5
        ) as api:
            async with asyncio.timeout(30):
                resp = await api.post("/v1/jobs", json=JOB)
            _assert_unavailable(resp)
            assert "may or may not" in resp.json()["error"]["message"]  # the script may have run
            assert (await api.get("/readyz")).status_code == 503
    finally:
        listener.close()


def test_ops_endpoint_readiness_follows_the_outage(monkeypatch):
    outage = RedisOutage()
    monkeypatch.setattr("shared.ops.server.OUTAGE", outage)
    port = free_port()
    serve_ops(port, host="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/readyz").status_code == 200
    outage.failed("router", OutOfMemoryError("command not allowed when used memory > 'maxmemory'."))
    resp = httpx.get(f"{base}/readyz")
    assert resp.status_code == 503
    assert "OutOfMemoryError" in resp.json()["detail"] and "router" in resp.json()["detail"]
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert b"inferq_" in httpx.get(f"{base}/metrics").content
    outage.recovered("router")
    assert httpx.get(f"{base}/readyz").status_code == 200


# --- the outage's log lines -------------------------------------------------------------------


def test_an_outage_is_logged_when_it_starts_once_when_it_lasts_and_when_it_ends(caplog):
    now = [100.0]
    outage = RedisOutage(clock=lambda: now[0], error_after_s=30)
    oom = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    caplog.set_level(logging.INFO, logger="inferq.redis")
    for second in range(0, 61):  # two loops retrying every second for a minute
        now[0] = 100.0 + second
        outage.failed("router", oom)
        outage.failed("collector", oom)
    assert outage.ongoing and "router" in outage.describe() and "OutOfMemoryError" in outage.describe()
    outage.recovered("router")
    assert outage.ongoing, "the collector still fails"
    now[0] = 175.5
    outage.recovered("collector")
    assert not outage.ongoing, "every loop works again: ready"
    now[0] = 176.0
    outage.failed("router", oom)  # a call that waited through the outage and timed out just after it
    now[0] = 176.1
    outage.recovered("router")
    now[0] = 177.0
    outage.recovered("collector")
    assert outage.open, "settling: no failure for a second yet"
    now[0] = 177.2
    outage.recovered("collector")
    assert not outage.open
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == ["WARNING", "ERROR", "INFO"], records
    assert "OutOfMemoryError" in records[0][1]
    assert "for 30s" in records[1][1]
    assert "after 76.1s" in records[2][1]
    outage.failed("router", oom)  # a new outage is news again
    assert [r.levelname for r in caplog.records][-1] == "WARNING"


# --- Redis version --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, refused",
    [("6.0.16", True), ("5.0.14", True), ("6.2.0", False), ("6.2.14", False), ("7.0.15", False), ("", True)],
)
def test_version_decision(version, refused):
    problem = version_problem({"redis_version": version} if version else {})
    assert (problem is not None) == refused
    if refused:
        assert "6.2" in problem and (version or "unknown") in problem


def test_the_real_server_is_accepted(server):
    assert version_problem(server.admin.info("server")) is None


def test_a_silent_or_unreachable_redis_is_waited_for_not_refused():
    listener = _silent()
    try:
        assert check_server_at_start(f"redis://127.0.0.1:{listener.getsockname()[1]}/0") is None
    finally:
        listener.close()
    assert check_server_at_start(f"redis://127.0.0.1:{free_port()}/0") is None


def test_a_redis_without_info_is_not_refused():
    def no_info(command: list[bytes]) -> bytes:
        if command[0].upper() == b"INFO":
            return b"-ERR unknown command 'INFO'\r\n"
        return array("maxmemory-policy", "noeviction") if command[0].upper() == b"CONFIG" else OK

    with RespStandIn(no_info) as stand_in:
        assert check_server_at_start(stand_in.url) is None


def _old_redis(command: list[bytes]) -> bytes:
    name = command[0].upper()
    if name == b"INFO":
        return server_info("6.0.16")
    if name == b"CONFIG":
        return array("maxmemory-policy", "noeviction")
    return OK


@pytest.mark.parametrize(
    "service", [["services.ingest"], ["services.dispatcher"], ["services.inference", "--model", "alpha"]]
)
def test_every_service_refuses_redis_older_than_6_2(tmp_path, service):
    models = tmp_path / "models.toml"
    models.write_text(FAST_MODELS)
    with RespStandIn(_old_redis) as stand_in:
        env = {**os.environ, "INFERQ_REDIS_URL": stand_in.url, "INFERQ_MODELS": str(models)}
        proc = subprocess.run(
            [sys.executable, "-m", *service], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Redis 6.0.16 found" in lines[0] and "needs Redis 6.2 or newer" in lines[0]
