"""A bad day for the edge: clients that leave, slow uploads, stalled origins, shutdown, descriptors."""

from __future__ import annotations

import asyncio
import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from aiohttp import web

from fakeedge import web_proxy
from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.testing import browser_login, loopback_session
from fakeedge.web_app import AccessLog, start

from .conftest import MakeEdge, MakeOrigin, Origin, base_config, copy_test_key
from .origins import verify


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Thinker:
    """An origin whose requests wait until released, and what became of each of them."""

    url: str
    started: int = 0
    cancelled: int = 0
    answered: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def thinker() -> AsyncIterator[Thinker]:
    """An aiohttp origin that cancels a handler whose client goes (``handler_cancellation``)."""
    state = Thinker("")

    async def think(request: web.Request) -> web.Response:
        state.started += 1
        try:
            await asyncio.wait_for(state.release.wait(), 30)
        except asyncio.CancelledError:
            state.cancelled += 1  # the edge closed the connection: the origin's work stops
            raise
        state.answered += 1
        return web.Response(text="thought")

    app = web.Application()
    app.router.add_get("/think", think)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    state.release.set()
    await runner.cleanup()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition, bounded in time (file descriptors have no event to await)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture(params=["pooled", "client"])
def forwarder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both forwarding paths: the pooled one (plain http origins) and aiohttp's client (https origins).

    The client path is reached by declaring no origin plain-http, as it is for an https origin.
    """
    if request.param == "client":
        monkeypatch.setattr(web_proxy, "_plain_origin", lambda service: None)
    return str(request.param)


async def test_a_client_that_leaves_closes_the_origin_connection(make_edge: MakeEdge, thinker: Thinker, forwarder: str) -> None:
    cfg = base_config(thinker.url)
    cfg["origin_timeout"] = "30s"
    running = await make_edge(cfg)
    before = open_fds()
    clients = 10
    for i in range(1, clients + 1):
        _, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(f"GET /think HTTP/1.1\r\nHost: public.acme.test:{running.port}\r\n\r\n".encode())
        await writer.drain()
        await wait_until(lambda: thinker.started == i)  # noqa: B023 - called before the loop moves on
        writer.close()  # the client gives up while the origin is still thinking
        await writer.wait_closed()
    # the origin is told (its handler cancelled), and no descriptor is left behind
    await wait_until(lambda: thinker.cancelled == clients)
    await wait_until(lambda: open_fds() <= before + 1)
    assert thinker.answered == 0
    # the edge still serves
    thinker.release.set()
    resp = await running.client.get(running.url("public.acme.test", "/think"))
    assert (resp.status, await resp.text()) == (200, "thought")


async def test_a_client_that_leaves_is_logged_499(tmp_path: Path, thinker: Thinker) -> None:
    raw = base_config(thinker.url)
    raw["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    edge = Edge.create(parse_config(raw, source="test.yml", base_dir=tmp_path))
    stream = io.StringIO()
    runner, (_, port) = await start(edge, "127.0.0.1", 0, access_log=AccessLog(stream))
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /think?q=1 HTTP/1.1\r\nHost: public.acme.test:{port}\r\n\r\n".encode())
        await writer.drain()
        await wait_until(lambda: thinker.started == 1)
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: thinker.cancelled == 1)
    finally:
        await runner.cleanup()  # flushes the access log
    (line,) = stream.getvalue().splitlines()
    assert re.fullmatch(
        rf"GET public\.acme\.test:{port}/think\?q=1 499 app=- policy=- decision=client-closed [0-9.]+ms ray=[0-9a-f]{{16}}-DEV",
        line,
    ), line
    # the journal (the inspector) has it too, under the same Ray ID
    assert edge.recorder is not None
    (record,) = edge.recorder.all()
    assert (record.status, record.kind, record.host, record.path, record.forwarded) == (
        499,
        "client-closed",
        "public.acme.test",
        "/think?q=1",
        True,
    )
    assert record.reason == "the client closed the connection before the answer was complete"
    assert line.endswith(f"ray={record.ray}")


UPLOAD_CHUNK = 50 * 1024
UPLOAD_CHUNKS = 25  # 1.25 MiB over about 1.5 s: three origin timeouts of steady upload


async def slow_upload() -> AsyncIterator[bytes]:
    for _ in range(UPLOAD_CHUNKS):
        await asyncio.sleep(0.06)
        yield b"u" * UPLOAD_CHUNK


@dataclass
class Stalling:
    url: str
    received: list[int] = field(default_factory=list)  # body sizes read whole
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def stalling() -> AsyncIterator[Stalling]:
    """An origin that reads the whole body, then answers ``/echo`` at once and ``/stall`` never;
    ``/deaf`` never reads the body."""
    state = Stalling("")

    async def handle(request: web.Request) -> web.Response:
        size = 0
        if request.path == "/deaf":  # never reads the body: the edge's writes back up
            await asyncio.wait_for(state.release.wait(), 30)
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
        state.received.append(size)
        if request.path == "/stall":
            await asyncio.wait_for(state.release.wait(), 30)
        return web.Response(text=str(size))

    app = web.Application(client_max_size=0)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    state.release.set()
    await runner.cleanup()


async def test_a_slow_steady_upload_is_not_an_origin_timeout(make_edge: MakeEdge, stalling: Stalling, forwarder: str) -> None:
    # origin_timeout is the wait for the origin (spec §12 choice), not for the client's upload
    cfg = base_config(stalling.url)
    cfg["origin_timeout"] = "500ms"
    running = await make_edge(cfg)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await running.client.post(running.url("public.acme.test", "/echo"), data=slow_upload())
    assert (resp.status, await resp.text()) == (200, str(UPLOAD_CHUNK * UPLOAD_CHUNKS))
    assert loop.time() - started > 1.0  # the upload did take longer than the origin timeout


async def test_an_origin_that_stalls_after_the_body_gets_the_504_page(make_edge: MakeEdge, stalling: Stalling, forwarder: str) -> None:
    cfg = base_config(stalling.url)
    cfg["origin_timeout"] = "500ms"
    running = await make_edge(cfg)
    resp = await running.client.post(running.url("public.acme.test", "/stall"), data=slow_upload())
    assert resp.status == 504
    assert "Gateway time-out" in await resp.text()
    assert "The origin did not answer within 0.5s." in await resp.text()
    # the whole body reached the origin first: the timeout ran from there
    assert stalling.received == [UPLOAD_CHUNK * UPLOAD_CHUNKS]


async def test_an_origin_that_stops_reading_the_body_gets_the_504_page(make_edge: MakeEdge, stalling: Stalling, forwarder: str) -> None:
    # writing to the origin is waiting for the origin: the timeout runs while the edge's writes back up
    cfg = base_config(stalling.url)
    cfg["origin_timeout"] = "500ms"
    running = await make_edge(cfg)

    async def fast_upload() -> AsyncIterator[bytes]:
        for _ in range(64):  # far more than the socket buffers between edge and origin hold
            yield b"f" * (1 << 20)

    async with asyncio.timeout(20):
        resp = await running.client.post(running.url("public.acme.test", "/deaf"), data=fast_upload())
        assert resp.status == 504
        assert "The origin did not answer within 0.5s." in await resp.text()
    assert stalling.received == []


class Served:
    """``fakeedge serve`` in a subprocess, its stderr collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.port = 0
        self._listening = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode().rstrip("\n")
            self.lines.append(text)
            found = re.match(r"fakeedge: listening on http://127\.0\.0\.1:(\d+) ", text)
            if found:
                self.port = int(found.group(1))
                self._listening.set()

    async def listening(self) -> int:
        waiter = asyncio.ensure_future(self._listening.wait())
        try:  # the banner, or the end of stderr (it failed to start)
            await asyncio.wait([waiter, self._reader], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        assert self._listening.is_set(), "fakeedge serve did not start:\n" + "\n".join(self.lines)
        return self.port

    async def exited(self, timeout: float) -> int:
        """The exit status, within ``timeout`` seconds, once stderr is read to the end."""
        async with asyncio.timeout(timeout):
            await self._reader
            return await self.proc.wait()


async def serve(tmp_path: Path, origin_url: str, *command: str, **kwargs: Any) -> Served:
    raw = base_config(origin_url)
    raw["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    (tmp_path / "fakeedge.yml").write_text(yaml.safe_dump(raw))
    proc = await asyncio.create_subprocess_exec(
        *command,
        sys.executable,
        "-m",
        "fakeedge.cli",
        "serve",
        "--config",
        str(tmp_path / "fakeedge.yml"),
        "--listen",
        "127.0.0.1:0",
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        **kwargs,
    )
    return Served(proc)


@pytest.fixture
async def slow_origin(make_origin: MakeOrigin) -> AsyncIterator[tuple[str, asyncio.Event, list[str]]]:
    """An origin whose ``/slow`` waits until released; ``/fast`` answers at once."""
    release = asyncio.Event()
    started: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        started.append(request.path)
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(text="slow and done")

    origin = await make_origin(lambda app: app.router.add_get("/slow", slow))
    yield origin.url, release, started
    release.set()


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):  # reset: queued as the listener closed
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_sigterm_finishes_requests_in_flight_flushes_the_log_and_exits_0(tmp_path: Path, slow_origin: tuple[str, asyncio.Event, list[str]]) -> None:
    origin_url, release, started = slow_origin
    served = await serve(tmp_path, origin_url)
    try:
        port = await served.listening()
        async with loopback_session() as client:
            for i in range(50):  # answered before the signal, their log lines still in the buffer
                resp = await client.get(f"http://public.acme.test:{port}/fast?n={i}")
                assert resp.status == 200
                await resp.read()
            in_flight = asyncio.create_task(client.get(f"http://public.acme.test:{port}/slow"))
            await wait_until(lambda: started == ["/slow"])
            served.proc.send_signal(signal.SIGTERM)
            # it stops accepting at once, and keeps serving the request in flight
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not await refused(port):
                assert loop.time() < deadline, "still accepting connections after SIGTERM"
                await asyncio.sleep(0.05)
            assert not in_flight.done()
            release.set()
            resp = await asyncio.wait_for(in_flight, 10)
            assert (resp.status, await resp.text()) == (200, "slow and done")
        assert await served.exited(timeout=15) == 0
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
            await served.exited(timeout=10)
    log = [line for line in served.lines if line.startswith("GET public.acme.test:")]
    assert [line.split()[1] for line in log] == [f"public.acme.test:{port}/fast?n={i}" for i in range(50)] + [
        f"public.acme.test:{port}/slow"
    ]
    assert all(line.split()[2] == "200" for line in log)
    assert "fakeedge: SIGTERM: stopping; requests in flight may take up to 8s (a second signal stops at once)" in served.lines
    assert served.lines[-1] == "fakeedge: stopped"


async def test_a_second_signal_stops_at_once(tmp_path: Path, slow_origin: tuple[str, asyncio.Event, list[str]]) -> None:
    origin_url, _release, started = slow_origin
    served = await serve(tmp_path, origin_url)
    try:
        port = await served.listening()
        async with loopback_session() as client:
            resp = await client.get(f"http://public.acme.test:{port}/fast")
            assert resp.status == 200
            in_flight = asyncio.create_task(client.get(f"http://public.acme.test:{port}/slow"))
            await wait_until(lambda: started == ["/slow"])
            served.proc.send_signal(signal.SIGINT)
            await wait_until(lambda: any("SIGINT: stopping" in line for line in served.lines))
            served.proc.send_signal(signal.SIGINT)
            assert await served.exited(timeout=10) == 1
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(in_flight, 10)  # cut, never answered
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
            await served.exited(timeout=10)
    assert served.lines[-1] == "fakeedge: stopped at once (second signal); requests in flight were cut"
    assert any(line.startswith(f"GET public.acme.test:{port}/fast 200 ") for line in served.lines)


def _can_unshare_pid() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


async def test_sigterm_stops_it_as_pid_1(tmp_path: Path, slow_origin: tuple[str, asyncio.Event, list[str]]) -> None:
    # a container's entrypoint is PID 1, for which the kernel drops signals that have no handler
    if not _can_unshare_pid():
        pytest.skip("needs `unshare --pid --fork` (util-linux, and the right to make a PID namespace)")
    origin_url, release, started = slow_origin
    # --kill-child: fakeedge goes with unshare, whatever the test's outcome
    served = await serve(tmp_path, origin_url, "unshare", "--pid", "--fork", "--kill-child")
    pid = None
    try:
        port = await served.listening()
        children = Path(f"/proc/{served.proc.pid}/task/{served.proc.pid}/children").read_text().split()
        assert len(children) == 1, children  # fakeedge, PID 1 of its namespace
        pid = int(children[0])
        assert re.search(r"^NSpid:\s+\d+\s+1$", Path(f"/proc/{pid}/status").read_text(), re.M)
        async with loopback_session() as client:
            in_flight = asyncio.create_task(client.get(f"http://public.acme.test:{port}/slow"))
            await wait_until(lambda: started == ["/slow"])
            os.kill(pid, signal.SIGTERM)
            await wait_until(lambda: any("SIGTERM: stopping" in line for line in served.lines))
            release.set()
            resp = await asyncio.wait_for(in_flight, 10)
            assert (resp.status, await resp.text()) == (200, "slow and done")
        assert await served.exited(timeout=10) == 0
    finally:
        if served.proc.returncode is None:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            served.proc.kill()
            await served.proc.wait()
            await served.exited(timeout=10)
    assert served.lines[-1] == "fakeedge: stopped"


async def test_a_running_edge_takes_up_keys_rotated_by_another_process(make_edge: MakeEdge, origin: Origin) -> None:
    running = await make_edge(base_config(origin.url))
    certs_url = f"{running.team}/cdn-cgi/access/certs"

    async def kids() -> list[str]:
        resp = await running.client.get(certs_url)
        return [k["kid"] for k in (await resp.json())["keys"]]

    (_standby, first) = await kids()  # §14.7: two keys, the standby one first
    rotate = "import sys, time; from pathlib import Path; from fakeedge.keys import KeyStore; "
    rotate += "print(KeyStore(Path(sys.argv[1]), time.time()).rotate(time.time(), 3600).kid)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", rotate, str(running.config.keys_dir), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    second = out.decode().strip()
    assert await kids() == [first, second]  # spec §3: previous first
    # and the edge signs with it: an origin verifies the assertion with PyJWKClient
    await browser_login(running.client, running.url("admin.acme.test"), "alice@acme.test")
    assertion = origin.last.headers["Cf-Access-Jwt-Assertion"]
    assert jwt.get_unverified_header(assertion)["kid"] == second
    claims = await verify(certs_url, assertion, audience=running.aud("Admin"), issuer=running.team)
    assert claims["email"] == "alice@acme.test"


def _soft_limit_256() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


async def test_serve_raises_the_open_files_limit_and_says_how_many_connections_fit(tmp_path: Path, slow_origin: tuple[str, asyncio.Event, list[str]]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1024 or hard == resource.RLIM_INFINITY:
        pytest.skip(f"needs a finite hard limit on open files of 1024 or more (is {hard})")
    origin_url, release, started = slow_origin
    served = await serve(tmp_path, origin_url, preexec_fn=_soft_limit_256)  # the usual soft limit, lowered
    try:
        port = await served.listening()
        limits = Path(f"/proc/{served.proc.pid}/limits").read_text()
        assert re.search(rf"^Max open files\s+{hard}\s+{hard}\s", limits, re.M), limits
        await wait_until(lambda: any(line.startswith("fakeedge: open files limit") for line in served.lines))
        assert (
            f"fakeedge: open files limit {hard}: up to {(hard - 32) // 2} concurrent proxied connections "
            "(two descriptors each)"
        ) in served.lines
        # more connections in flight than 256 descriptors could carry (two each)
        clients = 150
        streams = []
        for _ in range(clients):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /slow HTTP/1.1\r\nHost: public.acme.test:{port}\r\nConnection: close\r\n\r\n".encode())
            streams.append((reader, writer))
        await wait_until(lambda: len(started) == clients, timeout=30)
        release.set()
        for reader, writer in streams:
            answer = await asyncio.wait_for(reader.read(), 30)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            writer.close()
        served.proc.send_signal(signal.SIGTERM)
        assert await served.exited(timeout=15) == 0
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
            await served.exited(timeout=10)
