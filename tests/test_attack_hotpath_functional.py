"""An attacker's look at the per-request hot path as issue 16 rewrote it, on raw sockets.

The verdict cache, the remembered host checks and app matches, aiohttp's low-level server, the
body forwarded as it arrives and the journal and access log written lazily: each is a shortcut
that must not change who gets through. Requests here go byte for byte over one or more keep-alive
connections to a real edge, in front of real aiohttp origins that record what reached them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web

from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.mint import mint
from fakeedge.policy import split_host
from fakeedge.testing import LoginRefused
from fakeedge.web_app import AccessLog, start

from .conftest import BOT_ID, BOT_SECRET, Origin, RunningEdge, base_config, copy_test_key, wait_for
from .raw_http import Answer, parse_head

ANSWER_TIMEOUT = 10.0  # generous on a shared machine: what these tests catch is a hang

MakeEdge = Callable[..., Awaitable[RunningEdge]]
MakeOrigin = Callable[..., Awaitable[Origin]]


class Conn:
    """One client connection, kept alive: requests written byte for byte, answers read one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, timeout: float = ANSWER_TIMEOUT) -> tuple[int, list[tuple[str, str]]]:
        async with asyncio.timeout(timeout):
            try:
                raw = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise AssertionError(f"the edge closed the connection without an answer: {exc.partial!r}") from None
        return parse_head(raw)

    async def answer(self, *, method: str = "GET", timeout: float = ANSWER_TIMEOUT) -> Answer:
        """The next final answer, its body read as framed (1xx answers before it collected)."""
        interim: list[int] = []
        async with asyncio.timeout(timeout):
            status, headers = await self.head(timeout)
            while 100 <= status < 200:
                interim.append(status)
                status, headers = await self.head(timeout)
            lower = {k.lower(): v for k, v in headers}
            if method == "HEAD" or status in (204, 304):
                body = b""
            elif "content-length" in lower:
                body = await self.reader.readexactly(int(lower["content-length"]))
            elif lower.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await self._trailers()
                        break
                    body += await self.reader.readexactly(size)
                    await self.reader.readexactly(2)
            else:
                body = await self.reader.read()
        return Answer(status, headers, body, interim)

    async def _trailers(self) -> None:
        while await self.reader.readuntil(b"\r\n") != b"\r\n":
            pass

    async def closed(self, timeout: float = ANSWER_TIMEOUT) -> bool:
        """Whether the edge closed the connection (nothing more to read) within ``timeout``."""
        async with asyncio.timeout(timeout):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # reset by the edge: closed either way
            await self.writer.wait_closed()


@pytest.fixture
async def conns() -> AsyncIterator[Callable[[int], Awaitable[Conn]]]:
    """Open raw connections to an edge; all closed at the end of the test."""
    opened: list[Conn] = []

    async def go(port: int) -> Conn:
        conn = await Conn.open(port)
        opened.append(conn)
        return conn

    yield go
    for conn in opened:
        await conn.close()


def request(method: str, target: str, host: str, *headers: tuple[str, str], body: bytes = b"") -> bytes:
    """A request as bytes: the head as given, ``Content-Length`` added for a body unless framed already."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers)
    if body and not framed:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def cookie(token: str) -> tuple[str, str]:
    return ("Cookie", f"CF_Authorization={token}")


Verify = Callable[[str, str], Awaitable[dict[str, Any]]]


def verifier(running: RunningEdge) -> Verify:
    """Verify an assertion as an origin does: RS256 against the served JWKS, for ``app``'s AUD.

    PyJWKClient fetches with urllib, blocking: from a worker thread, while the edge runs here.
    """
    jwks = jwt.PyJWKClient(f"{running.team}/cdn-cgi/access/certs", cache_jwk_set=True, lifespan=3600)

    async def verify(token: str, app: str) -> dict[str, Any]:
        key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=["RS256"], audience=running.aud(app), issuer=running.team
        )
        return claims

    return verify


# --- pipelining: each request on a kept-alive connection is judged on its own -------------------


async def test_pipelined_requests_are_each_judged_on_their_own_credential(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """Sent in one write: the verdict, the identity and the headers of one request never carry
    over to the next on the same connection (the cached verdict of the first included)."""
    port = edge.port
    host = f"admin.acme.test:{port}"
    alice = mint(edge.edge, app="Admin", email="alice@acme.test")
    bob = mint(edge.edge, app="Admin", email="bob@acme.test")
    mallory = mint(edge.edge, app="Admin", email="mallory@evil.test")
    grafana = mint(edge.edge, app="Grafana", email="alice@acme.test")
    verify = verifier(edge)
    conn = await conns(port)
    await conn.send(
        request("GET", "/1", host, cookie(alice))
        + request("GET", "/2", host)
        + request("GET", "/3", host, cookie(bob))
        + request("GET", "/4", host, cookie(mallory))
        + request("GET", "/5", host, cookie(grafana))  # another app's token: as if none
        + request("GET", "/6", f"public.acme.test:{port}", ("Cf-Access-Jwt-Assertion", alice))
        + request("GET", "/7", host, cookie(alice), ("Cf-Access-Authenticated-User-Email", "ceo@acme.test"))
        + request("GET", "/8", host, ("CF-Access-Client-Id", BOT_ID), ("CF-Access-Client-Secret", BOT_SECRET))
        + request("GET", "/9", host, ("CF-Access-Client-Id", BOT_ID), ("CF-Access-Client-Secret", "wrong"))
    )
    statuses = [(await conn.answer()).status for _ in range(9)]
    assert statuses == [200, 302, 200, 403, 302, 200, 200, 200, 302]
    seen = {r.path: r.headers for r in origin.received}
    assert sorted(seen) == ["/1", "/3", "/6", "/7", "/8"]
    for path, email in (("/1", "alice@acme.test"), ("/3", "bob@acme.test"), ("/7", "alice@acme.test")):
        claims = await verify(seen[path]["Cf-Access-Jwt-Assertion"], "Admin")
        assert (claims["email"], seen[path]["Cf-Access-Authenticated-User-Email"]) == (email, email), path
    assert (await verify(seen["/8"]["Cf-Access-Jwt-Assertion"], "Admin"))["common_name"] == BOT_ID
    assert "Cf-Access-Authenticated-User-Email" not in seen["/8"]
    assert not any(k.lower().startswith("cf-access-") for k in seen["/6"])


async def test_a_body_that_spells_a_request_is_never_a_request(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """A refused POST whose body is a request for the protected host: the edge frames it by its
    Content-Length (or chunks) and never answers, or forwards, what the body spells."""
    port = edge.port
    smuggled = f"GET /smuggled HTTP/1.1\r\nHost: admin.acme.test:{port}\r\nCf-Access-Jwt-Assertion: x\r\n\r\n"
    chunked = f"{len(smuggled):x}\r\n{smuggled}\r\n0\r\n\r\n".encode()
    conn = await conns(port)
    await conn.send(
        request("POST", "/a", f"admin.acme.test:{port}", body=smuggled.encode())
        + request("POST", "/b", f"admin.acme.test:{port}", ("Transfer-Encoding", "chunked"), body=chunked)
        + request("GET", "/after", f"public.acme.test:{port}")
    )
    assert [(await conn.answer()).status for _ in range(3)] == [302, 302, 200]
    assert [r.path for r in origin.received] == ["/after"]


# --- what aiohttp's parser refuses: the edge's one parser, no second opinion ----------------------

DESYNC = {
    "CL and TE": "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    "two Content-Lengths": "Content-Length: 4\r\nContent-Length: 40\r\n",
    "a signed Content-Length": "Content-Length: +4\r\n",
    "a space before the colon": "Transfer-Encoding : chunked\r\nContent-Length: 4\r\n",
    "obs-fold": "Content-Length: 4\r\nX-A: a\r\n  Cf-Access-Jwt-Assertion: x\r\n",
    "two Hosts": "Host: admin.acme.test\r\nContent-Length: 4\r\n",
}


@pytest.mark.parametrize("extra", DESYNC.values(), ids=DESYNC.keys())
async def test_ambiguous_framing_is_refused_before_anything_is_judged(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]], extra: str
) -> None:
    """RFC 9112 §6.3: a message whose length is in doubt is refused and the connection closed,
    with a valid credential too: nothing reaches the origin, nothing is left to be read as a
    second request."""
    port = edge.port
    alice = mint(edge.edge, app="Admin", email="alice@acme.test")
    head = f"POST / HTTP/1.1\r\nHost: public.acme.test:{port}\r\nCookie: CF_Authorization={alice}\r\n{extra}\r\n"
    follow = f"GET /after HTTP/1.1\r\nHost: admin.acme.test:{port}\r\nCookie: CF_Authorization={alice}\r\n\r\n"
    conn = await conns(port)
    await conn.send(head.encode() + b"0\r\n\r\n" + follow.encode())
    answer = await conn.answer()
    assert answer.status == 400
    assert await conn.closed()
    assert origin.received == []


RAW_TARGETS = {
    "bare LF": b"GET / HTTP/1.1\nHost: admin.acme.test\n\n",
    "absolute-form": b"GET http://admin.acme.test/ HTTP/1.1\r\nHost: public.acme.test\r\n\r\n",
    "absolute-form, the same host": b"GET http://public.acme.test/ HTTP/1.1\r\nHost: public.acme.test\r\n\r\n",
    "authority-form": b"CONNECT admin.acme.test:80 HTTP/1.1\r\nHost: admin.acme.test\r\n\r\n",
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\nHost: public.acme.test\r\n\r\n",
    "no Host": b"GET / HTTP/1.1\r\n\r\n",
    "an empty Host": b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
    "an IPv6 zone": b"GET / HTTP/1.1\r\nHost: [::1%25admin.acme.test]\r\n\r\n",
    "an IPv6 zone, raw": b'GET / HTTP/1.1\r\nHost: [::1%" app=Admin decision=allow x]\r\n\r\n',
    "a Host with a space": b"GET / HTTP/1.1\r\nHost: public.acme.test admin.acme.test\r\n\r\n",
}


@pytest.mark.parametrize("raw", RAW_TARGETS.values(), ids=RAW_TARGETS.keys())
async def test_a_target_or_host_that_is_not_one_host_and_path_reaches_no_origin(
    make_edge: MakeEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]], raw: bytes
) -> None:
    """Whatever the spelling, a request either names one host and one path, judged as such, or
    gets a 400; with a catch-all ingress rule, even an unknown host would reach the origin."""
    cfg = base_config(origin.url)
    cfg["ingress"][-1] = {"service": origin.url}  # every host routed: only Access stands in the way
    running = await make_edge(cfg)
    conn = await conns(running.port)
    await conn.send(raw)
    answer = await conn.answer()
    assert answer.status == 400, answer
    assert origin.received == []


def test_split_host_takes_no_ipv6_zone() -> None:
    """A zone id (RFC 6874) may hold any character but "%" and "/": "[::1%x y]" is no host for a
    URL the edge builds, nor a word on a log line."""
    assert split_host("[::1]:8080") == ("[::1]", "8080")
    assert split_host("[FE80::1]") == ("[fe80::1]", "")
    for host in ("[::1%eth0]", "[fe80::1%25eth0]:80", '[::1%" x=y]', "[::1%\x85]", "[::1%]"):
        assert split_host(host) is None, host


def test_split_host_takes_one_trailing_dot() -> None:
    """The root's empty label may end a name, once: "admin.acme.test.." is no name, and an origin
    would not take it for admin.acme.test (nginx answers 400)."""
    assert split_host("Admin.Acme.Test.:8080") == ("admin.acme.test", "8080")
    for host in ("admin.acme.test..", "admin.acme.test...:80", ".", ".."):
        assert split_host(host) is None, host


async def test_http_1_0_is_judged_like_http_1_1(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    port = edge.port
    alice = mint(edge.edge, app="Admin", email="alice@acme.test")
    for headers, status in (([], 302), ([cookie(alice)], 200)):
        conn = await conns(port)
        lines = ["GET /ten HTTP/1.0", f"Host: admin.acme.test:{port}", *(f"{k}: {v}" for k, v in headers)]
        await conn.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert (await conn.answer()).status == status
        assert await conn.closed()  # HTTP/1.0 without keep-alive: one request per connection
    assert [r.headers["Cf-Access-Authenticated-User-Email"] for r in origin.received] == ["alice@acme.test"]


@pytest.mark.parametrize("line", ["GET /ten HTTP/2.0", "GET /ten HTTP/0.9", "GET /ten", "GET /ten HTTP/1.2"])
async def test_a_request_line_in_another_http_version_is_refused_in_http_1_1(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]], line: str
) -> None:
    """Only HTTP/1.0 and 1.1: aiohttp's C parser passed 0.9 (a bare ``GET /`` too) and 2.0, its
    pure-Python one any 1.x; they were judged, forwarded as HTTP/1.1 and answered as ``HTTP/2.0 200``.

    A version the parser itself refuses is its 400; one it passes is the edge's 505. Either way the
    answer speaks HTTP/1.1 (or 1.0, aiohttp's own 400), nothing reaches the origin, and the
    connection closes: what such a client sends next is no HTTP/1.1 request.
    """
    port = edge.port
    alice = mint(edge.edge, app="Admin", email="alice@acme.test")
    for host in ("admin.acme.test", "public.acme.test"):
        conn = await conns(port)
        await conn.send(f"{line}\r\nHost: {host}:{port}\r\n{cookie(alice)[0]}: {cookie(alice)[1]}\r\n\r\n".encode())
        async with asyncio.timeout(ANSWER_TIMEOUT):
            raw = await conn.reader.read()  # to the close
        status_line = raw.split(b"\r\n", 1)[0]
        assert status_line.startswith((b"HTTP/1.1 505 ", b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), (host, raw[:200])
    assert origin.received == []


# --- Expect: 100-continue: the body asked for only once Access has admitted the request ----------


async def test_expect_continue_is_answered_only_after_access_admits(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """A client that waits for 100 Continue before its body (RFC 9110 §10.1.1) gets it once the
    edge has admitted the request, and the body then reaches the origin; a refused one gets its
    final answer without a 100, so its body is never even asked for."""
    port = edge.port
    alice = mint(edge.edge, app="Admin", email="alice@acme.test")
    body = b"x" * 5000
    expect = ("Expect", "100-continue")
    length = ("Content-Length", str(len(body)))

    refused = await conns(port)
    await refused.send(request("POST", "/refused", f"admin.acme.test:{port}", expect, length))
    answer = await refused.answer()
    assert (answer.status, answer.interim) == (302, [])

    for host, headers in (
        (f"admin.acme.test:{port}", [cookie(alice)]),
        (f"sentry.acme.test:{port}", [("CF-Access-Client-Id", BOT_ID), ("CF-Access-Client-Secret", BOT_SECRET)]),
        (f"public.acme.test:{port}", []),
    ):
        conn = await conns(port)
        await conn.send(request("POST", "/upload", host, *headers, expect, length))
        status, _ = await conn.head(timeout=5.0)  # no body is sent until this comes: a hang otherwise
        assert status == 100, host
        await conn.send(body)
        answer = await conn.answer()
        assert answer.status == 200, host
        assert origin.last.body_size == len(body)
    assert [r.path for r in origin.received] == ["/upload"] * 3


# --- bodies: chunked with trailers, a client that gives up ---------------------------------------


async def test_chunked_trailers_never_reach_the_origin_as_headers(
    make_edge: MakeEdge, make_origin: MakeOrigin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """Trailer fields are the client's too: an identity header there must not reach the origin as
    a header, nor as a trailer it might merge (RFC 9110 §6.5.1)."""
    seen: list[tuple[bytes, dict[str, str]]] = []

    async def upload(request: web.Request) -> web.Response:
        data = await request.read()
        seen.append((data, dict(request.headers)))
        return web.Response(text="ok")

    upstream = await make_origin(lambda app: app.router.add_post("/up", upload))
    running = await make_edge(base_config(upstream.url))
    port = running.port
    alice = mint(running.edge, app="Admin", email="alice@acme.test")
    trailer = "Cf-Access-Jwt-Assertion: forged\r\nCf-Access-Authenticated-User-Email: ceo@acme.test\r\n"
    conn = await conns(port)
    await conn.send(
        request("POST", "/up", f"admin.acme.test:{port}", cookie(alice), ("Transfer-Encoding", "chunked"))
        + f"5\r\nhello\r\n6\r\n world\r\n0\r\n{trailer}\r\n".encode()
    )
    assert (await conn.answer()).status == 200
    assert len(seen) == 1
    data, headers = seen[0]
    assert data == b"hello world"
    assert headers["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"
    assert "forged" not in headers.values()


# --- the access log and the edge's log: one line per request, no field a client wrote -------------

# an access-log line, field by field (web_app._line); a reason's quotes are turned into "'"
LOG_LINE = re.compile(
    r"[A-Z]+ \S+ [1-5][0-9]{2} app=\S+ policy=\S+ decision=[a-z-]+(?: reason=\"[^\"]*\")? [0-9]+\.[0-9]ms"
    r" ray=[0-9a-f]{16}-DEV"
)
HOSTILE_HOSTS = [
    "public.acme.test app=Admin policy=staff decision=allow",  # fields of its own
    'public.acme.test" reason="allowed',
    "public.acme.test\xc2\x85GET admin.acme.test/ 200 app=Admin",  # NEL: a line break to str.splitlines
    "public.acme.test\xe2\x80\xa8x",  # U+2028, likewise
    "\xc2\x9b2J",  # C1 CSI, an escape sequence to a terminal that takes 8-bit controls
    "[::1%\xc2\x9b31m]",
]


async def test_a_hostile_host_writes_one_plain_access_log_line(origin: Origin, tmp_path: Path) -> None:
    """The Host of a refused request is on its line as the client sent it, whatever it holds:
    percent-encoded where it could forge a field, a line or a terminal escape."""
    cfg = base_config(origin.url)
    cfg["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    edge = Edge.create(parse_config(cfg, source="test.yml"))
    stream = io.StringIO()
    runner, (_, port) = await start(edge, "127.0.0.1", 0, access_log=AccessLog(stream))
    try:
        for host in HOSTILE_HOSTS:
            conn = await Conn.open(port)
            try:
                await conn.send(f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
                assert (await conn.answer()).status == 400, host
            finally:
                await conn.close()
    finally:
        await runner.cleanup()  # flushes the log
    lines = stream.getvalue().split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert len(lines) == len(HOSTILE_HOSTS)
    for line in lines:
        assert LOG_LINE.fullmatch(line), line
        assert line.isascii() and line.isprintable(), line
    assert lines[0].startswith("GET public.acme.test%20app%3DAdmin%20policy%3Dstaff%20decision%3Dallow/x 400 app=- ")
    assert lines[4].startswith("GET %C2%9B2J/x 400 ")


async def test_a_sign_in_email_with_control_characters_is_refused(
    make_edge: MakeEdge, origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    """The sign-in form takes any address by default (allow_any_email), and the edge logs who
    signed in to what: an escape sequence in the address would reach the terminal of whoever
    runs ``fakeedge serve``."""
    running = await make_edge(base_config(origin.url))
    for email in ("eve\x1b]0;owned\x07@acme.test", "eve\x9b2J@acme.test", "eve\x7f@acme.test", "eve\x00@acme.test"):
        with pytest.raises(LoginRefused) as refused:
            await running.fake.login(email, app="Admin")
        assert str(refused.value) == (
            f"the team domain refused {email}: Enter an email address such as you@example.com."
        )
    assert not [r for r in caplog.records if any(c in r.getMessage() for c in "\x1b\x9b\x7f\x00")]
    assert origin.received == []


# --- uploads forwarded as they arrive: a client that gives up, a client that stalls ---------------


async def _upload_origin(make_origin: MakeOrigin, outcomes: list[str], started: asyncio.Event) -> Origin:
    """An origin whose /up reads the whole body and notes how that ended."""

    async def upload(request: web.Request) -> web.Response:
        started.set()
        try:
            data = await request.read()
        except Exception as exc:  # what a handler sees of a client that went away mid-body
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append(f"complete {len(data)}")
        return web.Response(text="ok")

    return await make_origin(lambda app: app.router.add_post("/up", upload))


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_client_that_leaves_mid_upload_ends_the_origin_request_unfinished(
    make_edge: MakeEdge, make_origin: MakeOrigin, framing: str
) -> None:
    """The body goes on as it arrives (iter_any); when the client goes away halfway, the origin
    sees its request end unfinished (never a complete, shorter body), and the edge records a 499
    and is done with the request at once."""
    outcomes: list[str] = []
    started = asyncio.Event()
    upstream = await _upload_origin(make_origin, outcomes, started)
    running = await make_edge(base_config(upstream.url))
    port = running.port
    alice = mint(running.edge, app="Admin", email="alice@acme.test")
    if framing == "length":
        head = request("POST", "/up", f"admin.acme.test:{port}", cookie(alice), ("Content-Length", "100000"))
        part = b"x" * 30000
    else:
        head = request("POST", "/up", f"admin.acme.test:{port}", cookie(alice), ("Transfer-Encoding", "chunked"))
        part = b"7530\r\n" + b"x" * 30000 + b"\r\n" + b"7530\r\n" + b"x" * 1000  # the second chunk cut short
    conn = await Conn.open(port)
    await conn.send(head + part)
    async with asyncio.timeout(ANSWER_TIMEOUT):
        await started.wait()
    conn.writer.transport.abort()  # gone, without a word
    await wait_for(lambda: bool(outcomes) and running.edge.handling == 0, ANSWER_TIMEOUT)
    assert not outcomes[0].startswith("complete"), outcomes
    await wait_for(lambda: any(r.status == 499 for r in running.fake.requests.all()), ANSWER_TIMEOUT)
    departed = [r for r in running.fake.requests.all() if r.path == "/up"]
    assert [(r.status, r.kind, r.app) for r in departed] == [(499, "client-closed", "Admin")]


async def test_a_stalled_upload_holds_only_its_own_request(
    make_edge: MakeEdge, make_origin: MakeOrigin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """A client that stops sending halfway and keeps its connection open waits on its own: the
    edge answers everyone else meanwhile, and the origin's read timeout does not cut an upload for
    what is the client's slowness, not the origin's (the deadline is paused while the client is
    waited for)."""
    outcomes: list[str] = []
    started = asyncio.Event()
    upstream = await _upload_origin(make_origin, outcomes, started)
    cfg = base_config(upstream.url)
    cfg["origin_timeout"] = "300ms"
    running = await make_edge(cfg)
    port = running.port
    alice = mint(running.edge, app="Admin", email="alice@acme.test")
    stalled = await conns(port)
    head = request("POST", "/up", f"admin.acme.test:{port}", cookie(alice), ("Content-Length", "20000"))
    await stalled.send(head + b"x" * 10000)
    async with asyncio.timeout(ANSWER_TIMEOUT):
        await started.wait()
    for i in range(5):  # others are answered at once, with their own identity
        other = await conns(port)
        await other.send(request("GET", f"/other{i}", f"public.acme.test:{port}", ("Connection", "close")))
        assert (await other.answer()).status == 200
    await asyncio.sleep(0.9)  # three origin timeouts: the client's slowness is no origin timeout
    assert outcomes == []
    await stalled.send(b"y" * 10000)
    answer = await stalled.answer()
    assert (answer.status, outcomes) == (200, ["complete 20000"])


# --- a service token that stops working takes its JWT with it -------------------------------------

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize("how", ["disabled", "expired"])
async def test_a_disabled_or_expired_service_token_s_jwt_stops_working_too(
    make_edge: MakeEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]], how: str
) -> None:
    """Spec §14.3: a disabled or expired token authenticates nothing. Its headers are refused from
    then on, and so must be the CF_Authorization JWT it got (legacy mode) while it was good: that
    cookie, kept by the client, would otherwise stand in for it for the app's whole session."""
    from fakeedge.clock import Clock

    clock = Clock()
    clock.freeze(NOW)
    cfg = base_config(origin.url)
    cfg["service_tokens"][0]["expires_at"] = "2027-01-15T08:30:00Z"
    running = await make_edge(cfg, clock=clock)
    port = running.port
    host = f"admin.acme.test:{port}"
    bot = (("CF-Access-Client-Id", BOT_ID), ("CF-Access-Client-Secret", BOT_SECRET))
    conn = await conns(port)
    await conn.send(request("GET", "/headers", host, *bot))
    answer = await conn.answer()
    assert answer.status == 200
    jwt_cookie = answer.header("Set-Cookie")[0].split(";")[0].partition("=")[2]
    await conn.send(request("GET", "/cookie", host, cookie(jwt_cookie)))
    assert (await conn.answer()).status == 200
    if how == "disabled":
        core = running.edge
        tokens = tuple(
            dataclasses.replace(t, disabled=True) if t.client_id == BOT_ID else t for t in core.config.service_tokens
        )
        core.reconfigure(dataclasses.replace(core.config, service_tokens=tokens))
    else:
        clock.advance(45 * 60)  # past the token's expiry, within its JWT's hour (Admin's session_duration)
    await conn.send(
        request("GET", "/headers-after", host, *bot) + request("GET", "/cookie-after", host, cookie(jwt_cookie))
    )
    assert [(await conn.answer()).status for _ in range(2)] == [302, 302]
    assert [r.path for r in origin.received] == ["/headers", "/cookie"]


# --- many at once: no shared state carries one request's identity into another -------------------


async def test_concurrent_requests_of_different_users_keep_their_own_identity(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """Requests of four users (and a service token, and nobody) at once on one app, over kept-alive
    connections: each that reaches the origin carries its own user's assertion and email, and the
    journal names the same identity for it."""
    port = edge.port
    host = f"admin.acme.test:{port}"
    users = ["alice@acme.test", "bob@acme.test", "octo@github.test", "mallory@evil.test"]
    tokens = {email: mint(edge.edge, app="Admin", email=email) for email in users}
    bot = (("CF-Access-Client-Id", BOT_ID), ("CF-Access-Client-Secret", BOT_SECRET))
    verify = verifier(edge)

    async def client(n: int) -> list[int]:
        conn = await conns(port)
        statuses = []
        for i in range(6):
            who = (n + i) % 6
            if who < 4:
                await conn.send(request("GET", f"/u/{who}/{n}/{i}", host, cookie(tokens[users[who]])))
            elif who == 4:
                await conn.send(request("GET", f"/u/{who}/{n}/{i}", host, *bot))
            else:
                await conn.send(request("GET", f"/u/{who}/{n}/{i}", host))
            statuses.append((await conn.answer()).status)
        return statuses

    results = await asyncio.gather(*(client(n) for n in range(12)))
    assert sorted(s for statuses in results for s in statuses) == sorted([200] * 48 + [302] * 12 + [403] * 12)
    assert len(origin.received) == 48
    for received in origin.received:
        who = int(received.path.split("/")[2])
        claims = await verify(received.headers["Cf-Access-Jwt-Assertion"], "Admin")
        if who == 4:
            assert claims["common_name"] == BOT_ID and "Cf-Access-Authenticated-User-Email" not in received.headers
        else:
            assert claims["email"] == received.headers["Cf-Access-Authenticated-User-Email"] == users[who]
    journaled = {r.path: r.identity for r in edge.fake.requests.all() if r.forwarded}
    assert len(journaled) == 48
    for path, identity in journaled.items():
        who = int(path.split("/")[2])
        assert identity == ("service token ci-deploy-bot" if who == 4 else users[who]), path


async def test_the_control_api_s_clock_and_sign_out_beat_a_cached_verdict(
    edge: RunningEdge, origin: Origin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """A verdict is cached per session and kept for a day, read without the clock: moving the
    clock past the token's expiry through the control API, or signing out, must still refuse
    the very next request on the same connection."""
    port = edge.port
    host = f"admin.acme.test:{port}"
    alice = mint(edge.edge, app="Admin", email="alice@acme.test")  # Admin: 1 h sessions
    bob = mint(edge.edge, app="Admin", email="bob@acme.test")
    conn = await conns(port)
    await conn.send(request("GET", "/1", host, cookie(alice)) + request("GET", "/2", host, cookie(bob)))
    assert [(await conn.answer()).status for _ in range(2)] == [200, 200]
    async with edge.client.post(f"{edge.team}/cdn-cgi/fakeedge/clock", json={"advance": "61m"}) as resp:
        assert resp.status == 200
    await conn.send(request("GET", "/3", host, cookie(alice)))
    assert (await conn.answer()).status == 302
    async with edge.client.post(f"{edge.team}/cdn-cgi/fakeedge/clock", json={"reset": True}) as resp:
        assert resp.status == 200
    await conn.send(request("GET", "/4", host, cookie(bob)))
    assert (await conn.answer()).status == 200
    await conn.send(request("GET", "/cdn-cgi/access/logout", host, cookie(bob)))
    assert (await conn.answer()).status == 200
    await conn.send(request("GET", "/5", host, cookie(bob)))
    assert (await conn.answer()).status == 302
    assert [r.path for r in origin.received] == ["/1", "/2", "/4"]


async def test_an_origin_that_answers_before_the_body_ends_leaves_no_request_behind(
    make_edge: MakeEdge, make_origin: MakeOrigin, conns: Callable[[int], Awaitable[Conn]]
) -> None:
    """An origin may refuse an upload at once (413, 403) without reading it. The client gets that
    answer while still sending; the rest of its body, which here spells requests for the protected
    host, is never taken for a request, and what comes after it is judged on its own."""

    async def early(request: web.Request) -> web.Response:
        return web.Response(status=413, text="too large")

    upstream = await make_origin(lambda app: app.router.add_post("/early", early))
    running = await make_edge(base_config(upstream.url))
    port = running.port
    alice = mint(running.edge, app="Admin", email="alice@acme.test")
    smuggled = f"GET /smuggled HTTP/1.1\r\nHost: admin.acme.test:{port}\r\nCookie: CF_Authorization={alice}\r\n\r\n"
    body = (smuggled * (200_000 // len(smuggled) + 1)).encode()[:200_000]
    conn = await conns(port)
    head = request("POST", "/early", f"admin.acme.test:{port}", cookie(alice), ("Content-Length", str(len(body))))
    await conn.send(head + body[:50_000])
    answer = await conn.answer()
    assert answer.status == 413
    await conn.send(body[50_000:] + request("GET", "/after", f"public.acme.test:{port}"))
    try:
        follow = await conn.answer()
    except (AssertionError, ConnectionResetError):
        pass  # the edge closed the connection instead of reading the rest: as good
    else:
        assert follow.status == 200
        assert upstream.last.path == "/after"
    assert all(r.path != "/smuggled" for r in upstream.received), [r.path for r in upstream.received]
