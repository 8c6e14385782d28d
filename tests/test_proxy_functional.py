"""The proxy on real sockets: header hygiene, origin failures, streamed bodies, websockets."""

from __future__ import annotations

import asyncio
import io
import re
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.testing import loopback_session
from fakeedge.web_app import AccessLog, start

from .conftest import BOT_ID, BOT_SECRET, MakeEdge, MakeOrigin, Origin, RunningEdge, base_config, copy_test_key
from .test_access_functional import BOT

SPOOFED = {
    "Cf-Access-Jwt-Assertion": "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImV2aWxAeC50ZXN0In0.",
    "Cf-Access-Authenticated-User-Email": "ceo@acme.test",
    "CF-Access-Client-Id": "spoof.access",
    "CF-Connecting-IP": "203.0.113.66",
    "CF-Connecting-IPv6": "2001:db8::66",
    "CF-IPCountry": "KP",
    "CF-Ray": "0000000000000000-EVL",
    "CF-Visitor": '{"scheme":"https"}',
    "True-Client-IP": "203.0.113.66",
    "X-Real-IP": "203.0.113.66",
    "CDN-Loop": "evil",
    "X-Forwarded-For": "198.51.100.7",
    "X-Forwarded-Proto": "https",
}


async def test_spoofable_headers_are_stripped_on_unprotected_hosts(edge: RunningEdge, origin: Origin) -> None:
    resp = await edge.client.get(edge.url("public.acme.test"), headers=SPOOFED)
    assert resp.status == 200
    got = origin.last.headers
    assert "Cf-Access-Jwt-Assertion" not in got
    assert "Cf-Access-Authenticated-User-Email" not in got
    assert "CF-Access-Client-Id" not in got
    assert "CF-Connecting-IPv6" not in got
    assert "True-Client-IP" not in got and "X-Real-IP" not in got
    assert got["CF-Connecting-IP"] == "127.0.0.1"
    assert got["CF-IPCountry"] == "US"
    assert got["CF-Ray"] == resp.headers["CF-Ray"] != SPOOFED["CF-Ray"]
    assert got["CF-Visitor"] == '{"scheme":"http"}'
    assert got["CDN-Loop"] == "cloudflare"
    assert got["X-Forwarded-For"] == "198.51.100.7,127.0.0.1"  # appended, no space (spec §8)
    assert got["X-Forwarded-Proto"] == "http"


async def test_spoofed_identity_is_replaced_on_admitted_requests(edge: RunningEdge, origin: Origin) -> None:
    resp = await edge.client.get(
        edge.url("sentry.acme.test"),
        headers={
            **SPOOFED,
            "CF-Access-Client-Id": BOT_ID,
            "CF-Access-Client-Secret": BOT_SECRET,
            "Cookie": "CF_Binding=x; a=b",
        },
    )
    assert resp.status == 200
    got = origin.last.headers
    assert got["Cf-Access-Jwt-Assertion"] != SPOOFED["Cf-Access-Jwt-Assertion"]
    assert "Cf-Access-Authenticated-User-Email" not in got  # a service token has no email
    assert "CF-Access-Client-Secret" not in got
    assert got["Cookie"] == "a=b"  # CF_Binding never reaches the origin
    assert [k for k, _ in origin.last.header_items].count("Cf-Access-Jwt-Assertion") == 1


async def test_forged_assertion_without_session_is_redirected(edge: RunningEdge, origin: Origin) -> None:
    resp = await edge.client.get(edge.url("admin.acme.test"), headers=SPOOFED, allow_redirects=False)
    assert resp.status == 302
    assert origin.received == []


async def test_http_host_header_rewrite(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["ingress"][3]["originRequest"] = {"httpHostHeader": "internal.svc", "connectTimeout": "2s", "noTLSVerify": True}
    running = await make_edge(cfg)
    assert running.config.not_emulated == ("ingress[3].originRequest.noTLSVerify",)
    await running.client.get(running.url("public.acme.test"))
    assert origin.last.headers["Host"] == "internal.svc"
    assert origin.last.headers["X-Forwarded-Host"] == f"public.acme.test:{running.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_origin_gets_a_502_page(make_edge: MakeEdge) -> None:
    running = await make_edge(base_config(f"http://127.0.0.1:{_free_port()}"))
    resp = await running.client.get(running.url("public.acme.test"))
    assert resp.status == 502
    assert resp.headers["Server"] == "cloudflare"
    text = await resp.text()
    assert "Error 502" in text and "Bad gateway" in text and resp.headers["CF-Ray"] in text


async def _raw_origin(answer: bytes) -> asyncio.Server:
    """An origin on a raw socket that reads the request head, sends ``answer`` (maybe nothing) and closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_502_pages_and_log_lines_say_why_in_words(tmp_path: Path) -> None:
    silent, garbage = await _raw_origin(b""), await _raw_origin(b"HELLO\r\n\r\n")
    refused = f"http://127.0.0.1:{_free_port()}"
    cfg = base_config(refused)
    cfg["ingress"][:0] = [
        {"hostname": "silent.acme.test", "service": f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"},
        {"hostname": "garbage.acme.test", "service": f"http://127.0.0.1:{garbage.sockets[0].getsockname()[1]}"},
    ]
    cfg["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    edge = Edge.create(parse_config(cfg, source="test.yml"))
    stream = io.StringIO()
    log = AccessLog(stream)
    runner, (_, port) = await start(edge, "127.0.0.1", 0, access_log=log)
    reasons = {
        "public": "connection refused",
        "silent": "the origin closed the connection without an answer",
        "garbage": "the origin sent an invalid HTTP response",
    }
    try:
        async with loopback_session() as client:
            for name, reason in reasons.items():
                resp = await client.get(f"http://{name}.acme.test:{port}/")
                assert resp.status == 502
                service = next(r.service for r in edge.config.ingress if r.hostname == f"{name}.acme.test")
                detail = f"<p class=muted>The origin {service} could not be reached ({reason}).</p>"
                text = await resp.text()
                assert detail in text, text[-400:]
    finally:
        await runner.cleanup()  # flushes the access log
        for server in (silent, garbage):
            server.close()
            await server.wait_closed()
    lines = stream.getvalue().splitlines()
    assert [(line.split(" ")[2], re.findall(r' reason="([^"]*)" ', line)) for line in lines] == [
        ("502", [f"origin failed: {reason}"]) for reason in reasons.values()
    ]


async def _misbehaving(make_origin: Callable[..., Awaitable[Origin]]) -> Origin:
    async def reset(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    def setup(app: web.Application) -> None:
        app.router.add_get("/reset", reset)
        app.router.add_get("/slow", slow)

    return await make_origin(setup)


async def test_reset_and_timed_out_origins(make_edge: MakeEdge, make_origin: MakeOrigin) -> None:
    bad = await _misbehaving(make_origin)
    cfg = base_config(bad.url)
    cfg["origin_timeout"] = "300ms"
    running = await make_edge(cfg)
    resp = await running.client.get(running.url("public.acme.test", "/reset"))
    assert resp.status == 502
    resp = await running.client.get(running.url("public.acme.test", "/slow"))
    assert resp.status == 504
    assert "Gateway time-out" in await resp.text()


async def test_large_bodies_stream_both_ways_in_bounded_memory(make_edge: MakeEdge, make_origin: MakeOrigin) -> None:
    size = 512 * 1024 * 1024
    chunk = b"x" * (1 << 20)

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(size)})
        await resp.prepare(request)
        for _ in range(size // len(chunk)):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    def setup(app: web.Application) -> None:
        app.router.add_get("/download", download)

    origin = await make_origin(setup)
    running = await make_edge(base_config(origin.url))

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    resp = await running.client.post(running.url("public.acme.test", "/upload"), data=upload())
    assert resp.status == 200
    assert (await resp.json())["size"] == size
    assert origin.last.body_size == size

    resp = await running.client.get(running.url("public.acme.test", "/download"))
    received = 0
    async for part in resp.content.iter_chunked(1 << 20):
        received += len(part)
    assert received == size
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB for 2 x 512 MiB through the edge"


async def test_websocket_passes_through_with_the_assertion(make_edge: MakeEdge, make_origin: MakeOrigin) -> None:
    seen: dict[str, str] = {}

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        seen.update(request.headers)
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    def setup(app: web.Application) -> None:
        app.router.add_get("/ws", ws_echo)

    origin = await make_origin(setup)
    running = await make_edge(base_config(origin.url))
    # refused without credentials: the upgrade gets the login redirect
    resp = await running.client.get(
        running.url("admin.acme.test", "/ws"),
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        allow_redirects=False,
    )
    assert resp.status == 302
    async with running.client.ws_connect(running.url("admin.acme.test", "/ws"), headers=BOT, protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert await asyncio.wait_for(ws.receive_str(), 5) == "echo:hello"
        await ws.send_bytes(b"abc")
        assert await asyncio.wait_for(ws.receive_bytes(), 5) == b"cba"
    assert seen["Cf-Access-Jwt-Assertion"].count(".") == 2
    assert "CF-Access-Client-Secret" not in seen


async def test_origin_connections_are_pooled_and_closed_ones_are_not_reused(make_edge: MakeEdge, make_origin: MakeOrigin) -> None:
    peers: list[int] = []

    async def peer(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        close = request.query.get("close") == "1"
        return web.Response(text="ok", headers={"Connection": "close"} if close else {})

    def setup(app: web.Application) -> None:
        app.router.add_get("/peer", peer)

    origin = await make_origin(setup)
    running = await make_edge(base_config(origin.url))
    for query in ("", "", "?close=1", ""):
        resp = await running.client.get(running.url("public.acme.test", "/peer" + query))
        assert resp.status == 200 and await resp.text() == "ok"
    # one kept-alive connection for the first three requests; the origin closed it after the third
    assert peers[0] == peers[1] == peers[2] != peers[3]


async def test_chunked_and_close_delimited_origin_bodies(make_edge: MakeEdge) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"GET /chunked" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 100_000)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        running = await make_edge(base_config(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))
        resp = await running.client.get(running.url("public.acme.test", "/chunked"))
        assert resp.status == 200 and await resp.read() == b"hello world"
        resp = await running.client.get(running.url("public.acme.test", "/eof"))
        assert resp.status == 200 and await resp.read() == b"z" * 100_000
    finally:
        server.close()
        await server.wait_closed()
