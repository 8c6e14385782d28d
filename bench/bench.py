"""fakeedge against a direct origin and a minimal aiohttp proxy, on loopback, with wrk.

    python bench/bench.py [--duration S] [--rounds N] [--connections C] [--quick]
    python bench/bench.py --apps 10,1000

Every server runs in its own process pinned to core 0; wrk (and this script) run on core 1.
Targets are measured round-robin, N rounds, so that drift on the machine hits all of them alike;
each figure is the median over the rounds. Nothing listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import http.client
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.client import HTTPMessage
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

HOST = "127.0.0.1"  # loopback only, always
SERVER_CORE = 0
LOAD_CORE = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 60.0  # seconds for a server process to report its port (1,000 apps included)
BODY = b"fakeedge bench origin: a small fixed body, about one hundred bytes long, served for GET /.\n"

APP_HOST = "app.bench.test"
PUBLIC_HOST = "public.bench.test"
EMAIL = "alice@bench.test"
CLIENT_ID = "0b1e2c3d4e5f60718293a4b5c6d7e8f9.access"
CLIENT_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
TARGET_RATIO = 1.5  # issue 16: fakeedge's guarded paths at 1.5x the minimal proxy (the Python floor) or better

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
     "transfer-encoding", "upgrade"}
)  # fmt: skip


class BenchError(Exception):
    """Something that makes the figures meaningless: a server did not start, a path did not answer 200."""


# --- the servers ---------------------------------------------------------------------------------


MIB = 1 << 20
BLOCK = b"\x5a" * (256 * 1024)  # what the origin streams, block after block


def origin_app() -> web.Application:
    """The origin every target ends at: ``GET /`` answers a fixed ~100-byte body.

    For ``--bodies``: ``GET /bytes/N`` streams N bytes, ``POST /sink`` reads the body as it comes
    and answers how many bytes it got.
    """

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    async def stream(request: web.Request) -> web.StreamResponse:
        left = int(request.match_info["n"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = left
        view = memoryview(BLOCK)
        try:
            await response.prepare(request)
            while left > 0:
                await response.write(view[: min(left, len(BLOCK))])
                left -= len(BLOCK)
            await response.write_eof()
        except ConnectionResetError:
            pass  # wrk hangs up mid-body when its run ends
        return response

    async def sink(request: web.Request) -> web.Response:
        got = 0
        async for chunk in request.content.iter_any():
            got += len(chunk)
        return web.Response(text=str(got))

    app = web.Application(client_max_size=1 << 40)
    app.router.add_get("/", handle)
    app.router.add_get("/bytes/{n:\\d+}", stream)
    app.router.add_post("/sink", sink)
    return app


# What any Access-checking edge must add for the origin (spec §2.6, §8), whatever its logic: the
# edge headers and an assertion of a real token's size. A proxy that adds only these separates
# the cost of the wire work the spec requires from the cost of fakeedge's own decisions.
WIRE_HEADERS = {
    "X-Forwarded-Proto": "http",
    "CF-Connecting-IP": "127.0.0.1",
    "CF-IPCountry": "US",
    "CF-Ray": "0123456789abcdef-DEV",
    "CF-Visitor": '{"scheme":"http"}',
    "CDN-Loop": "cloudflare",
    "Cf-Access-Jwt-Assertion": "e" * 820,
    "Cf-Access-Authenticated-User-Email": EMAIL,
}


def minimal_proxy_app(origin: str, extra_headers: dict[str, str] | None = None) -> web.Application:
    """The yardstick: the least a fair aiohttp reverse proxy does, with one shared ClientSession."""
    session_key = web.AppKey("session_key", aiohttp.ClientSession)

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)  # as fakeedge: no cap on upstream connections
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        ) as client:
            app[session_key] = client
            yield

    async def handle(request: web.Request) -> web.Response:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        if extra_headers:
            headers["X-Forwarded-For"] = "127.0.0.1"
            headers.update(extra_headers)
        body = await request.read() if request.body_exists else None
        async with request.app[session_key].request(
            request.method, origin + request.raw_path, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            data = await upstream.read()
            out = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}
            )
            return web.Response(status=upstream.status, reason=upstream.reason, headers=out, body=data)

    app = web.Application(client_max_size=1 << 40)  # reads bodies whole, as many small proxies do
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _start_plain(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0, backlog=1024).start()
    return runner, runner.addresses[0][1]


async def _serve(kind: str, arg: Any, conn: Connection, devnull: TextIO) -> None:
    """Start one server, send its port up the pipe, run until the pipe says stop or closes."""
    if kind == "origin":
        runner, port = await _start_plain(origin_app())
    elif kind == "proxy":
        runner, port = await _start_plain(minimal_proxy_app(arg))
    elif kind == "wire-proxy":
        runner, port = await _start_plain(minimal_proxy_app(arg, WIRE_HEADERS))
    else:
        from fakeedge.config import parse_config
        from fakeedge.edge import Edge
        from fakeedge.web_app import AccessLog, start

        config, sessions = (arg, 0) if kind == "fakeedge" else arg
        # the access log stays on, buffered, to /dev/null: making the line is part of the cost
        edge = Edge.create(parse_config(config, source="<bench>"))
        if sessions:
            _prefill_sessions(edge, sessions)
        runner, (_, port) = await start(edge, HOST, 0, access_log=AccessLog(devnull))
    conn.send(("ready", port))
    stop = asyncio.Event()
    # readable means "stop" was sent or the parent is gone (EOF): either way, leave
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), stop.set)
    await stop.wait()
    loop.remove_reader(conn.fileno())
    await runner.cleanup()


def _prefill_sessions(edge: Any, count: int) -> None:
    """``count`` signed-in sessions, each holding what a browser sign-in leaves: the session with
    its app token's times and key, and the token itself in the edge's bounded token cache.

    Signing 100,000 RSA tokens would take minutes, so one token is signed and the cache gets a
    fresh copy of that string per session: the same objects and bytes a real sign-in keeps.
    """
    from fakeedge.policy import Identity

    app = edge.config.apps[0]
    who = Identity.for_email(EMAIL, edge.config.user(EMAIL), default_country=edge.config.default_country)
    first = edge.login(who)
    jwt, exp = edge.app_jwt(first, app, None)
    times = first.app_tokens[app.aud]
    now = edge.clock.now()
    for _ in range(count - 1):
        session = edge.login(who)
        session.add_app_token(app.aud, times)
        edge._session_tokens.put((session.nonce, app.aud), "".join(jwt), exp, now)  # a new string, not a shared one


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a front runs on: ``asyncio``'s own or ``uvloop`` (the ``fast`` extra)."""
    if name == "asyncio":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _server_main(kind: str, arg: Any, conn: Connection, core: int | None, loop: str = "asyncio") -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        with open(os.devnull, "w") as devnull, asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            runner.run(_serve(kind, arg, conn, devnull))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


@dataclass
class Server:
    """A server in its own process; ``port`` is known once it has said it is listening."""

    name: str
    process: multiprocessing.process.BaseProcess
    conn: Connection
    port: int = 0

    @classmethod
    def start(cls, name: str, kind: str, arg: Any, core: int | None, loop: str = "asyncio") -> Server:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_server_main, args=(kind, arg, child, core, loop), name=name, daemon=True)
        process.start()
        child.close()
        server = cls(name, process, parent)
        if not parent.poll(READY_TIMEOUT):
            server.stop()
            raise BenchError(f"{name} did not report ready within {READY_TIMEOUT:g}s")
        try:
            status, value = parent.recv()
        except EOFError:
            process.join(5)
            raise BenchError(f"{name} exited before it was ready (exit code {process.exitcode})") from None
        if status != "ready":
            server.stop()
            raise BenchError(f"{name} failed to start:\n{value}")
        server.port = value
        return server

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # already gone
            self.conn.send(("stop", None))
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


# --- peers: caddy and nginx from Debian, when installed ---------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream origin {{ server {origin}; keepalive 64; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""

CADDYFILE = """
{{
    admin off
    auto_https off
    storage file_system {tmp}/caddy
}}
http://:{port} {{
    bind {host}
    reverse_proxy {origin}
}}
"""


@dataclass
class Peer:
    """caddy or nginx as a reverse proxy in front of the origin, in its own process on core 0."""

    name: str
    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, name: str, program: str, binary: str, origin: Server, tmp: Path, core: int | None) -> Peer:
        port = _free_port()
        where = tmp / program
        where.mkdir()
        origin_hp = f"{HOST}:{origin.port}"
        if program == "nginx":
            conf = where / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=where, origin=origin_hp, host=HOST, port=port))
            cmd = [binary, "-c", str(conf), "-p", str(where), "-e", str(where / "nginx-error.log")]
        else:
            conf = where / "Caddyfile"
            conf.write_text(CADDYFILE.format(tmp=where, origin=origin_hp, host=HOST, port=port))
            cmd = [binary, "run", "--config", str(conf), "--adapter", "caddyfile"]
        env = {**os.environ, "HOME": str(where), "XDG_DATA_HOME": str(where), "XDG_CONFIG_HOME": str(where)}
        if core is not None:
            env["GOMAXPROCS"] = "1"  # caddy: one core, as every other front here
        log = open(where / "output.log", "wb")  # noqa: SIM115 (kept open for the process's life)
        process = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if core is not None else None,
        )
        peer = cls(name, process, port)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                _get(port, "GET", "/", f"{HOST}:{port}")
                return peer
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    peer.stop()
                    raise BenchError(
                        f"{name} did not start: {(where / 'output.log').read_text(errors='replace')[-500:]}"
                    ) from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_peers(origin: Server, tmp: Path, core: int | None, started: list[Server | Peer]) -> list[Peer]:
    """caddy's reverse_proxy and nginx's proxy_pass where installed (apt-get install caddy nginx-light)."""
    peers = []
    for name, program in (("caddy reverse_proxy", "caddy"), ("nginx proxy_pass", "nginx")):
        binary = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
        if binary is None:
            print(f"bench: {program} is not installed (apt-get install {program}): left out of the table")
            continue
        peer = Peer.start(name, program, binary, origin, tmp, core)
        started.append(peer)
        peers.append(peer)
    return peers


# --- fakeedge's configuration and credentials ----------------------------------------------------


def edge_config(origin: str, keys_dir: Path, app_hosts: list[str], ingress: list[dict[str, str]]) -> dict[str, Any]:
    """One protected app per host: Allow for the email domain, Service Auth for the bench token."""
    apps = [
        {
            "name": f"bench {host}",
            "domain": host,
            "policies": [
                {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "bench.test"}}]},
                {"name": "bots", "decision": "non_identity", "include": [{"service_token": {"token_id": "bench"}}]},
            ],
        }
        for host in app_hosts
    ]
    return {
        "team": "bench",
        "keys_dir": str(keys_dir),
        "service_tokens": [{"name": "bench", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
        "apps": apps,
        "ingress": [*ingress, {"service": "http_status:404"}],
    }


def _get(
    port: int, method: str, target: str, host: str, headers: dict[str, str] | None = None, body: str | None = None
) -> tuple[int, HTTPMessage, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, target, body=body, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _cookies(headers: HTTPMessage) -> dict[str, str]:
    out = {}
    for line in headers.get_all("Set-Cookie") or ():
        name, _, value = line.split(";", 1)[0].partition("=")
        out[name.strip()] = value.strip()
    return out


def _expect(what: str, status: int, wanted: int, headers: HTTPMessage) -> None:
    if status != wanted:
        raise BenchError(f"{what}: expected {wanted}, got {status} (Location: {headers.get('Location')})")


def sign_in(port: int, app_host: str, email: str = EMAIL) -> str:
    """A ``CF_Authorization`` app cookie, got through the real browser flow (spec §1.2-§1.5)."""
    app_hp = f"{app_host}:{port}"
    status, headers, _ = _get(port, "GET", "/", app_hp)
    _expect(f"GET http://{app_hp}/", status, 302, headers)
    app_session = _cookies(headers)["CF_AppSession"]
    login = urlsplit(headers["Location"])
    if (login.hostname, login.port) != (HOST, port):
        raise BenchError(f"the login URL {headers['Location']} is not on this edge")
    login_target = f"{login.path}?{login.query}"

    status, headers, page = _get(port, "GET", login_target, login.netloc)
    _expect("GET the login page", status, 200, headers)
    found = re.search(r'name="csrf" value="([^"]*)"', page.decode())
    if found is None:
        raise BenchError("no csrf field on the login page")
    csrf, cf_session = html.unescape(found.group(1)), _cookies(headers)["CF_Session"]

    form = urlencode({"email": email, "csrf": csrf})
    status, headers, _ = _get(
        port,
        "POST",
        login_target,
        login.netloc,
        {"Cookie": f"CF_Session={cf_session}", "Content-Type": "application/x-www-form-urlencoded"},
        form,
    )
    _expect("POST the login form", status, 302, headers)
    callback = urlsplit(headers["Location"])
    if callback.netloc != app_hp or callback.path != "/cdn-cgi/access/authorized":
        raise BenchError(f"the login did not come back to the app: {headers['Location']}")

    status, headers, _ = _get(
        port, "GET", f"{callback.path}?{callback.query}", app_hp, {"Cookie": f"CF_AppSession={app_session}"}
    )
    _expect("GET /cdn-cgi/access/authorized", status, 302, headers)
    token = _cookies(headers).get("CF_Authorization")
    if not token:
        raise BenchError("/cdn-cgi/access/authorized set no CF_Authorization cookie")
    return token


# --- targets and measurements --------------------------------------------------------------------


@dataclass
class Sample:
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int
    bad: int  # non-2xx/3xx responses and socket errors
    front_cpu: float  # CPU microseconds per request in the process wrk talks to
    origin_cpu: float | None  # ... and in the origin behind it
    preempted: float  # times per request the front process lost core 0 without waiting (to the origin)


@dataclass
class Target:
    name: str
    front: Server | Peer  # the server wrk talks to
    origin: Server | None  # the origin behind it, if not the front itself
    host: str | None = None  # Host header; None: 127.0.0.1:port
    headers: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    path: str = "/"
    script: Path | None = None  # a wrk Lua script (--bodies: the upload's method and body)

    @property
    def port(self) -> int:
        return self.front.port

    def all_headers(self) -> dict[str, str]:
        return {**({"Host": self.host} if self.host else {}), **self.headers}

    def check(self) -> None:
        """One request by hand: the figures mean nothing unless this path really reaches the origin."""
        headers = self.all_headers()
        status, _, body = _get(self.port, "GET", "/", headers.pop("Host", f"{HOST}:{self.port}"), headers)
        if status != 200 or body != BODY:
            raise BenchError(f"{self.name}: GET / answered {status} {body[:80]!r}, not the origin's 200")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def cpu_seconds(server: Server | Peer) -> float:
    """User + system CPU time a server process has used so far."""
    stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (proc(5) fields 14, 15)


def preemptions(server: Server | Peer) -> int:
    """How often the process was switched out while it still had work: here, each time the origin woke."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            return int(line.split(":")[1])
    return 0


def run_wrk(target: Target, duration: float, connections: int) -> Sample:
    """One wrk run, 1 thread, on the load core (inherited from this process)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    for name, value in target.all_headers().items():
        cmd += ["-H", f"{name}: {value}"]
    if target.script is not None:
        cmd += ["-s", str(target.script)]
    cmd.append(f"http://{HOST}:{target.port}{target.path}")
    front_before, preempted_before = cpu_seconds(target.front), preemptions(target.front)
    origin_before = cpu_seconds(target.origin) if target.origin else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    front_used = cpu_seconds(target.front) - front_before
    preempted = preemptions(target.front) - preempted_before
    origin_used = cpu_seconds(target.origin) - origin_before if target.origin else None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise BenchError(f"cannot read wrk's output:\n{out}")
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        bad += sum(int(n) for n in socket_errors.groups())
    requests = max(int(total.group(1)), 1)
    return Sample(
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        requests,
        bad,
        front_used / requests * 1e6,
        origin_used / requests * 1e6 if origin_used is not None else None,
        preempted / requests,
    )


def measure(targets: list[Target], *, duration: float, rounds: int, connections: int, warmup: float) -> None:
    """Warm every target up once, then ``rounds`` round-robin passes, rotating who goes first."""
    for target in targets:
        run_wrk(target, warmup, connections)
    for r in range(rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for target in order:
            sample = run_wrk(target, duration, connections)
            target.samples.append(sample)
            flag = f"  {sample.bad} BAD RESPONSES" if sample.bad else ""
            print(f"  round {r + 1}/{rounds}  {target.name:<34} {sample.rps:>8.0f} req/s  "
                  f"p50 {sample.p50:6.2f} ms  p99 {sample.p99:6.2f} ms  "
                  f"cpu {sample.front_cpu:5.0f} us/req{flag}", flush=True)  # fmt: skip


def ratio(target: Target, reference: Target) -> float:
    """The median over rounds of target/reference req/s, each pair measured in the same round."""
    return statistics.median(t.rps / r.rps for t, r in zip(target.samples, reference.samples, strict=True))


def report(targets: list[Target], proxy: Target | None, direct: Target | None) -> None:
    """The table: medians over rounds.

    ``cpu us/req`` is the CPU time per request of the process wrk talks to, ``origin us`` the
    origin's behind it, ``preempt`` how many times per request the front was switched out for
    the origin (they share core 0): the more CPU a front burns, the more often the origin wakes
    for one request instead of a batch, and the dearer both get.
    """
    print()
    print(f"{'target':<34} {'req/s':>7} {'(min-max)':>13} {'p50 ms':>7} {'p99 ms':>7} {'x proxy':>7} "
          f"{'x direct':>8} {'cpu us/req':>10} {'origin us':>9} {'preempt':>7}")  # fmt: skip
    for t in targets:
        rps = [s.rps for s in t.samples]
        origin_cpu = [s.origin_cpu for s in t.samples if s.origin_cpu is not None]
        print(
            f"{t.name:<34} {statistics.median(rps):>7.0f} {f'({min(rps):.0f}-{max(rps):.0f})':>13} "
            f"{statistics.median(s.p50 for s in t.samples):>7.2f} {statistics.median(s.p99 for s in t.samples):>7.2f} "
            f"{f'{ratio(t, proxy):.2f}' if proxy else '-':>7} {f'{ratio(t, direct):.2f}' if direct else '-':>8} "
            f"{statistics.median(s.front_cpu for s in t.samples):>10.0f} "
            f"{f'{statistics.median(origin_cpu):.0f}' if origin_cpu else '-':>9} "
            f"{statistics.median(s.preempted for s in t.samples):>7.2f}"
        )
    bad = sum(s.bad for t in targets for s in t.samples)
    if bad:
        print(f"\nWARNING: {bad} non-2xx responses or socket errors: these figures are not valid")


# --- the two modes -------------------------------------------------------------------------------


def main_mode(args: argparse.Namespace, tmp: Path, core: int | None, started: list[Server | Peer]) -> None:
    origin = _start(started, "direct origin", "origin", None, core)
    proxy = _start(started, "minimal proxy", "proxy", origin.url, core)
    wire = _start(started, "proxy + Access wire work", "wire-proxy", origin.url, core)
    peers = start_peers(origin, tmp, core, started)
    ingress = [{"hostname": APP_HOST, "service": origin.url}, {"hostname": PUBLIC_HOST, "service": origin.url}]
    edge = _start(started, "fakeedge", "fakeedge", edge_config(origin.url, tmp / "keys", [APP_HOST], ingress), core)
    cookie = sign_in(edge.port, APP_HOST)
    app_hp = f"{APP_HOST}:{edge.port}"
    targets = [
        Target("direct origin", origin, None),
        Target("minimal proxy", proxy, origin),
        Target("proxy + Access wire work", wire, origin),
        Target("fakeedge unprotected host", edge, origin, f"{PUBLIC_HOST}:{edge.port}"),
        Target("fakeedge cookie path", edge, origin, app_hp, {"Cookie": f"CF_Authorization={cookie}"}),
        Target(
            "fakeedge service-token path",
            edge,
            origin,
            app_hp,
            {"CF-Access-Client-Id": CLIENT_ID, "CF-Access-Client-Secret": CLIENT_SECRET},
        ),
    ]
    if _has_uvloop():
        # the same config on uvloop (the fast extra), which `fakeedge serve` uses when installed
        fast = _start(
            started,
            "fakeedge on uvloop",
            "fakeedge",
            edge_config(origin.url, tmp / "keys", [APP_HOST], ingress),
            core,
            "uvloop",
        )
        fast_hp = f"{APP_HOST}:{fast.port}"
        targets += [
            Target(
                "fakeedge cookie path, uvloop",
                fast,
                origin,
                fast_hp,
                {"Cookie": f"CF_Authorization={sign_in(fast.port, APP_HOST)}"},
            ),
            Target(
                "fakeedge service-token, uvloop",
                fast,
                origin,
                fast_hp,
                {"CF-Access-Client-Id": CLIENT_ID, "CF-Access-Client-Secret": CLIENT_SECRET},
            ),
        ]
    else:
        print("bench: uvloop is not installed (pip install -e '.[fast]'): fakeedge measured on asyncio's loop only")
    targets += [Target(peer.name, peer, origin) for peer in peers]
    _run(args, targets, targets[1], targets[0])
    for t in targets[4:]:
        if isinstance(t.front, Peer):
            continue
        r = ratio(t, targets[1])
        print(
            f"{t.name}: {r:.2f}x the minimal proxy: {'meets' if r >= TARGET_RATIO else 'MISSES'} the {TARGET_RATIO}x target; "
            f"{ratio(t, targets[2]):.2f}x a proxy doing the same required wire work"
        )


def apps_mode(args: argparse.Namespace, tmp: Path, core: int | None, started: list[Server | Peer]) -> None:
    origin = _start(started, "direct origin", "origin", None, core)
    proxy = _start(started, "minimal proxy", "proxy", origin.url, core)
    targets = [Target("minimal proxy", proxy, origin)]
    for n in args.apps:
        hosts = [f"app{i}.bench.test" for i in range(n)]
        measured = hosts[n // 2]
        # by default one wildcard ingress rule, so that only Access's app lookup changes with n;
        # --ingress per-app gives each app its own rule, which Edge.route() scans in order
        ingress = (
            [{"hostname": host, "service": origin.url} for host in hosts]
            if args.ingress == "per-app"
            else [{"hostname": "*.bench.test", "service": origin.url}]
        )
        config = edge_config(origin.url, tmp / f"keys-{n}", hosts, ingress)
        edge = _start(started, f"fakeedge {n} apps", "fakeedge", config, core)
        cookie = sign_in(edge.port, measured)
        targets.append(
            Target(
                f"fakeedge cookie path, {n} apps",
                edge,
                origin,
                f"{measured}:{edge.port}",
                {"Cookie": f"CF_Authorization={cookie}"},
            )
        )
    _run(args, targets, targets[0], None)


def rss_kib(pid: int) -> tuple[int, int]:
    """Resident memory now and at its peak (VmRSS, VmHWM), KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def sessions_mode(args: argparse.Namespace, tmp: Path, core: int | None, started: list[Server | Peer]) -> None:
    """Sign-ins per second (the real browser flow) and the edge's memory with N sessions held.

    Each count gets a fresh edge holding that many signed-in sessions; sign-ins are then timed for
    ``--duration`` seconds, one after another. The edge's clock is then moved past the sessions'
    24 h (control API), one more sign-in drops the expired ones, and the memory is read again.
    """
    origin = _start(started, "direct origin", "origin", None, core)
    ingress = [{"hostname": APP_HOST, "service": origin.url}]
    print(f"\n{'sessions':>9} {'sign-ins/s':>10} {'rss MiB':>8} {'peak MiB':>8} {'after expiry MiB':>16}")
    for n in args.sessions:
        config = edge_config(origin.url, tmp / f"keys-{n}", [APP_HOST], ingress)
        edge = _start(started, f"fakeedge {n} sessions", "fakeedge-sessions", (config, n), core)
        sign_in(edge.port, APP_HOST)  # warm-up
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < args.duration:
            sign_in(edge.port, APP_HOST)
            done += 1
        rate = done / (time.perf_counter() - began)
        rss, peak = rss_kib(edge.process.pid)
        status, _, body = _get(
            edge.port, "POST", "/cdn-cgi/fakeedge/clock", f"{HOST}:{edge.port}", {"Content-Type": "application/json"},
            '{"advance": "25h"}',
        )  # fmt: skip
        if status != 200:
            raise BenchError(f"the control API did not move the clock: {status} {body[:200]!r}")
        sign_in(edge.port, APP_HOST)  # a write: drops every expired session
        after, _ = rss_kib(edge.process.pid)
        print(f"{n:>9,} {rate:>10.0f} {rss / 1024:>8.1f} {peak / 1024:>8.1f} {after / 1024:>16.1f}", flush=True)
        edge.stop()
        started.remove(edge)


UPLOAD_LUA = """wrk.method = "POST"
wrk.body = string.rep("Z", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""
BODY_TARGET = 0.9  # issue 16: 1 MiB bodies both ways at 0.9x the minimal proxy's MiB/s or better
RSS_TARGET_MIB = 80  # ... and the edge's peak RSS at 80 MiB or less whatever the body size


def reset_peak(pid: int) -> bool:
    """Start VmHWM over from the present RSS (proc(5): clear_refs, 5); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def big_transfer(port: int, host: str, headers: dict[str, str], upload: bool, size: int) -> float:
    """One ``size``-byte body streamed through a front, either way; MiB/s. Checks every byte arrived."""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    began = time.perf_counter()
    try:
        if upload:
            blocks = (BLOCK for _ in range(size // len(BLOCK)))
            conn.request("POST", "/sink", body=blocks, headers={
                "Host": host, "Content-Length": str(size), "Content-Type": "application/octet-stream", **headers,
            })  # fmt: skip
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200 or answer != str(size).encode():
                raise BenchError(f"upload of {size} bytes: {response.status} {answer[:200]!r}")
        else:
            conn.request("GET", f"/bytes/{size}", headers={"Host": host, **headers})
            response = conn.getresponse()
            buf, got = bytearray(MIB), 0
            while n := response.readinto(buf):
                got += n
            if response.status != 200 or got != size:
                raise BenchError(f"download of {size} bytes: {response.status}, {got} bytes")
    finally:
        conn.close()
    return size / MIB / (time.perf_counter() - began)


def bodies_mode(args: argparse.Namespace, tmp: Path, core: int | None, started: list[Server | Peer]) -> None:
    """MiB/s for 1 MiB bodies each way (wrk, interleaved rounds), then one big body each way
    streamed through each front, with the front's peak RSS (VmHWM) while it passed."""
    origin = _start(started, "direct origin", "origin", None, core)
    proxy = _start(started, "minimal proxy", "proxy", origin.url, core)
    ingress = [{"hostname": APP_HOST, "service": origin.url}, {"hostname": PUBLIC_HOST, "service": origin.url}]
    edge = _start(started, "fakeedge", "fakeedge", edge_config(origin.url, tmp / "keys", [APP_HOST], ingress), core)
    cookie = {"Cookie": f"CF_Authorization={sign_in(edge.port, APP_HOST)}"}
    fronts: list[tuple[str, Server, Server | None, str | None, dict[str, str]]] = [
        ("direct origin", origin, None, None, {}),
        ("minimal proxy", proxy, origin, None, {}),
        ("fakeedge unprotected host", edge, origin, f"{PUBLIC_HOST}:{edge.port}", {}),
        ("fakeedge cookie path", edge, origin, f"{APP_HOST}:{edge.port}", cookie),
    ]
    size = args.body_mib * MIB
    script = tmp / "upload.lua"
    script.write_text(UPLOAD_LUA.format(size=size))
    targets = []
    for way in ("download", "upload"):
        for name, front, behind, host, headers in fronts:
            path, lua = (f"/bytes/{size}", None) if way == "download" else ("/sink", script)
            targets.append(Target(f"{name}, {way}", front, behind, host, headers, path=path, script=lua))
    for target in targets:
        target.check()
    print(f"\n{args.body_mib} MiB bodies, wrk -c{args.connections}, {args.rounds} x {args.duration:g} s per target:")
    measure(targets, duration=args.duration, rounds=args.rounds, connections=args.connections, warmup=args.warmup)
    print(f"\n{'target':<36} {'MiB/s':>7} {'(min-max)':>13} {'x proxy':>7} {'x direct':>8} {'cpu ms/MiB':>10}")
    for i, t in enumerate(targets):
        rates = [sample.rps * args.body_mib for sample in t.samples]
        first = i - i % len(fronts)  # the direct origin and the proxy the same way
        print(
            f"{t.name:<36} {statistics.median(rates):>7.0f} {f'({min(rates):.0f}-{max(rates):.0f})':>13} "
            f"{ratio(t, targets[first + 1]):>7.2f} {ratio(t, targets[first]):>8.2f} "
            f"{statistics.median(sample.front_cpu for sample in t.samples) / 1000 / args.body_mib:>10.2f}"
        )
    bad = sum(sample.bad for t in targets for sample in t.samples)
    if bad:
        print(f"\nWARNING: {bad} non-2xx responses or socket errors: these figures are not valid")
    for t in targets:
        if t.name.startswith("fakeedge"):
            r = ratio(t, targets[targets.index(t) - targets.index(t) % len(fronts) + 1])
            print(
                f"{t.name}: {r:.2f}x the minimal proxy: {'meets' if r >= BODY_TARGET else 'MISSES'} the {BODY_TARGET}x target"
            )

    _, edge_peak = rss_kib(edge.process.pid)  # since it started: the 1 MiB runs included
    big = args.big_mib * MIB
    print(f"\none {args.big_mib} MiB body each way, streamed (the minimal proxy reads bodies whole: left out):")
    print(f"{'front':<28} {'way':<9} {'MiB/s':>7} {'peak RSS MiB':>12} {'RSS before MiB':>14}")
    for name, front, _, host, headers in fronts:
        if front is proxy:
            continue
        for upload in (False, True):
            before, _ = rss_kib(front.process.pid)
            exact = reset_peak(front.process.pid)
            rate = big_transfer(front.port, host or f"{HOST}:{front.port}", headers, upload, big)
            _, peak = rss_kib(front.process.pid)
            if front is edge:
                edge_peak = max(edge_peak, peak)
            mark = "" if exact else " (since start)"
            print(
                f"{name:<28} {'upload' if upload else 'download':<9} {rate:>7.0f} {peak / 1024:>12.1f}{mark} {before / 1024:>14.1f}"
            )
    verdict = "meets" if edge_peak / 1024 <= RSS_TARGET_MIB else "MISSES"
    print(
        f"fakeedge peak RSS over the whole run: {edge_peak / 1024:.1f} MiB: {verdict} the {RSS_TARGET_MIB} MiB target"
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _start(
    started: list[Server | Peer], name: str, kind: str, arg: Any, core: int | None, loop: str = "asyncio"
) -> Server:
    server = Server.start(name, kind, arg, core, loop)
    started.append(server)
    return server


def _run(args: argparse.Namespace, targets: list[Target], proxy: Target, direct: Target | None) -> None:
    for target in targets:
        target.check()
    measure(targets, duration=args.duration, rounds=args.rounds, connections=args.connections, warmup=args.warmup)
    report(targets, proxy, direct)


def _app_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected app counts such as 10,1000, got {text!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin passes over the targets (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unrecorded load per target first")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s, 1 round, 1 s warm-up")
    parser.add_argument(
        "--apps", type=_app_counts, metavar="N,M", help="instead: the cookie path with N and M apps configured"
    )
    parser.add_argument(
        "--ingress",
        choices=("wildcard", "per-app"),
        default="wildcard",
        help="with --apps: one *.bench.test ingress rule (default) or one rule per app",
    )
    parser.add_argument(
        "--sessions",
        type=_app_counts,
        metavar="N,M",
        help="instead: sign-ins per second and the edge's memory with N, M, ... sessions held (e.g. 10,10000,100000)",
    )
    parser.add_argument(
        "--bodies",
        action="store_true",
        help="instead: MiB/s of --body-mib bodies each way (wrk) and the fronts' peak RSS with a --big-mib body",
    )
    parser.add_argument("--body-mib", type=int, default=1, help="with --bodies: the body wrk sends or fetches (MiB)")
    parser.add_argument("--big-mib", type=int, default=256, help="with --bodies: the one big body streamed each way")
    args = parser.parse_args(argv)
    if args.bodies and "--connections" not in (argv if argv is not None else sys.argv):
        args.connections = 4  # a few 1 MiB bodies in flight keep every front busy; 64 would only queue
    if args.quick:
        args.duration, args.rounds, args.warmup = 3.0, 1, 1.0
    if args.duration <= 0 or args.rounds < 1 or args.connections < 1:
        parser.error("--duration, --rounds and --connections must be positive")
    return args


def _pin() -> int | None:
    """Put this process (and so wrk) on the load core; the servers' core, or None if there is no second core."""
    if not hasattr(os, "sched_setaffinity") or not {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        print("WARNING: cannot pin to cores 0 and 1: servers and wrk share the CPUs", file=sys.stderr)
        return None
    os.sched_setaffinity(0, {LOAD_CORE})
    return SERVER_CORE


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    core = _pin()
    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, {os.cpu_count()} cpus; "
        f"servers on core {core}, wrk on core {LOAD_CORE if core is not None else '-'}; "
        f"wrk -t1 -c{args.connections}, {args.rounds} x {args.duration:g} s per target",
        flush=True,
    )
    mode: Callable[[argparse.Namespace, Path, int | None, list[Server | Peer]], None] = (
        apps_mode if args.apps else sessions_mode if args.sessions else bodies_mode if args.bodies else main_mode
    )
    started: list[Server | Peer] = []
    try:
        with tempfile.TemporaryDirectory(prefix="fakeedge-bench-") as tmp:
            try:
                mode(args, Path(tmp), core, started)
            finally:
                for server in reversed(started):
                    server.stop()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
