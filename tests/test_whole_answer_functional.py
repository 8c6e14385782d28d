"""An origin's answer read whole goes back as one write (web_aiohttp.WholeAnswer, issue 16): the same bytes.

The oracle is aiohttp's own ``web.Response``, which answered before: each origin answer below,
asked for over HTTP/1.1 and 1.0, kept alive or not, reaches a raw-socket client with the same
status line, the same headers (the Date aside, which is the clock's) and the same body, and the
connection is kept or closed the same way, whichever of the two writes it. A header aiohttp's
lenient response parser lets through with a control character in it is the origin's fault: a
502, where the old writer passed all but CR and LF on.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fakeedge import web_aiohttp, web_app

from .conftest import MakeEdge, base_config

# what the raw origin answers, by request path: each a whole HTTP/1.1 answer, kept alive
ANSWERS = {
    "/plain": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "/untyped": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    "/empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "/dated": b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
    "/found": (
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere?a=1\r\nSet-Cookie: a=1; Path=/\r\n"
        b"Set-Cookie: b=2; HttpOnly\r\nContent-Length: 0\r\n\r\n"
    ),
    "/reason": b"HTTP/1.1 299 Quite Unusual Reason\r\nX-Many: 1\r\nX-Many: 2\r\nContent-Length: 1\r\n\r\nx",
    "/obs-text": b"HTTP/1.1 200 Tr\xe8s bien\r\nX-Obs: caf\xe9\r\nContent-Length: 2\r\n\r\nok",
    "/teapot": b"HTTP/1.1 418 I'm a teapot\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nteapot",
    "/server": b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nCF-Ray: forged\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
    "/split": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    "/control": b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok",
}

# how the client asks: the request line's version and its Connection header
CLIENTS = {
    "1.1": ("HTTP/1.1", None),
    "1.1 close": ("HTTP/1.1", "close"),
    "1.0": ("HTTP/1.0", None),
    "1.0 keep-alive": ("HTTP/1.0", "keep-alive"),
}


@pytest.fixture
async def raw_origin() -> AsyncIterator[str]:
    """An origin that answers each request on a connection with ``ANSWERS[path]``, kept alive."""

    open_writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                if path.startswith("/reason/"):  # a reason of the origin's choosing, one per request
                    answer = b"HTTP/1.1 200 Reason %b\r\nContent-Length: 0\r\n\r\n" % path[8:].encode()
                else:
                    answer = ANSWERS[path]
                if path == "/split":  # the body in two writes, the second once the edge has the first
                    writer.write(answer[:-3])
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    answer = answer[-3:]
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            open_writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in list(open_writers):  # the edge's pooled connections: their handlers end on EOF
        writer.transport.abort()
    server.close()
    await server.wait_closed()


async def _ask(
    port: int, path: str, client: str, *, probe: bool = False
) -> tuple[bytes, list[bytes], bytes, bool | None]:
    """The status line, header lines and body the edge sends back, and (``probe``) whether it then closed."""
    version, connection = CLIENTS[client]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"GET {path} {version}\r\nHost: public.acme.test\r\n"
        if connection:
            head += f"Connection: {connection}\r\n"
        writer.write(head.encode() + b"\r\n")
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status, *lines = answer[:-4].split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        return status, lines, body, (await _closed(reader, writer) if probe else None)
    finally:
        writer.close()


async def _closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the edge closed the connection after its answer: a second request on it is answered,
    or meets the end (or a reset, once it reaches the socket the edge closed).

    Waiting 0.3 s for the end instead read an end that came later than that (a loaded machine, a
    collection of the garbage) as a connection kept open.
    """
    writer.write(b"GET /plain HTTP/1.1\r\nHost: public.acme.test\r\nConnection: close\r\n\r\n")
    try:
        again = await asyncio.wait_for(reader.readexactly(5), 10)
    except asyncio.IncompleteReadError as exc:
        assert exc.partial == b""
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    assert again == b"HTTP/"
    return False


def _comparable(lines: list[bytes]) -> list[bytes]:
    """The header lines, sorted, without the two that differ by nature: the Date and the Ray ID."""
    return sorted(line for line in lines if not line.lower().startswith((b"date:", b"cf-ray:")))


async def test_answers_read_whole_go_back_as_aiohttp_wrote_them(
    monkeypatch: pytest.MonkeyPatch, make_edge: MakeEdge, raw_origin: str
) -> None:
    assert web_aiohttp.WHOLE
    running = await make_edge(base_config(raw_origin))
    # /obs-text aside: aiohttp's writer drops a byte that is not UTF-8 ("caf"), WholeAnswer sends it
    cases = [(path, client) for path in ANSWERS if path not in ("/control", "/obs-text") for client in CLIENTS]
    whole = {case: await _ask(running.port, *case, probe=True) for case in cases}
    obs_text = await _ask(running.port, "/obs-text", "1.1")
    monkeypatch.setattr(web_aiohttp, "WHOLE", False)
    written = {case: await _ask(running.port, *case, probe=True) for case in cases}
    for case in cases:
        (status, lines, body, closed), (status2, lines2, body2, closed2) = whole[case], written[case]
        assert (status, _comparable(lines), body, closed) == (status2, _comparable(lines2), body2, closed2), case
        assert sum(line.lower().startswith(b"date:") for line in lines) == 1, case
    # what those answers are, in a few words: the version answered is the client's, keep-alive as asked
    assert whole["/plain", "1.1"][0] == b"HTTP/1.1 200 OK" and not whole["/plain", "1.1"][3]
    assert whole["/plain", "1.0"][0] == b"HTTP/1.0 200 OK" and whole["/plain", "1.0"][3]
    assert (
        b"Connection: keep-alive" in whole["/plain", "1.0 keep-alive"][1] and not whole["/plain", "1.0 keep-alive"][3]
    )
    assert b"Connection: close" in whole["/plain", "1.1 close"][1] and whole["/plain", "1.1 close"][3]
    assert whole["/reason", "1.1"][0] == b"HTTP/1.1 299 Quite Unusual Reason"
    assert whole["/split", "1.1"][2] == b"hello world"  # not all there when the head was: read to its end
    assert obs_text[0] == b"HTTP/1.1 200 Tr\xe8s bien" and b"X-Obs: caf\xe9" in obs_text[1]  # as the origin sent them
    assert b"Date: Tue, 01 Jan 2030 00:00:00 GMT" in whole["/dated", "1.1"][1]
    assert b"Content-Type: application/octet-stream" in whole["/untyped", "1.1"][1]  # aiohttp's default, kept
    server = _comparable(whole["/server", "1.1"][1])
    assert b"Server: cloudflare" in server and b"Server: gunicorn" not in server
    assert not any(line.lower().startswith(b"keep-alive:") for line in server)


async def test_a_control_character_in_an_origin_header_is_a_502(make_edge: MakeEdge, raw_origin: str) -> None:
    running = await make_edge(base_config(raw_origin))
    status, lines, body, _ = await _ask(running.port, "/control", "1.1")
    assert status == b"HTTP/1.1 502 Bad Gateway"
    assert b"\x01" not in b"".join(lines) + body
    assert b"the origin sent an invalid HTTP response" in body
    assert running.fake.requests.last.reason.endswith(
        "then the origin failed: the origin sent an invalid HTTP response"
    )


async def test_the_journal_sees_an_origin_answers_cookies_and_location(make_edge: MakeEdge, raw_origin: str) -> None:
    running = await make_edge(base_config(raw_origin))
    async with running.client.get(running.url("public.acme.test", "/found"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    record = running.fake.requests.last
    assert record.cookies_set == ("a=1; Path=/", "b=2; HttpOnly")
    assert record.location == "/elsewhere?a=1"


def test_a_moved_response_attribute_is_reported_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    assert web_aiohttp.answer_problems() == ()
    monkeypatch.setitem(web_aiohttp.ANSWER_STATE, "_renamed", "a property a future aiohttp reads")
    assert web_aiohttp.answer_problems() == (
        f"aiohttp {aiohttp.__version__}: StreamResponse has no attribute _renamed, behind a property "
        "a future aiohttp reads",
    )


async def test_an_answer_read_whole_reads_as_any_response(
    monkeypatch: pytest.MonkeyPatch, make_edge: MakeEdge, raw_origin: str
) -> None:
    # what a test or a hook may read of the answer the edge returned: StreamResponse's own properties
    seen: list[web_aiohttp.WholeAnswer] = []
    answer = web_app._answer

    async def spy(*args: Any) -> Any:
        found = await answer(*args)
        if isinstance(found[0], web_aiohttp.WholeAnswer):
            seen.append(found[0])
        return found

    monkeypatch.setattr(web_app, "_answer", spy)
    running = await make_edge(base_config(raw_origin))
    status, _, body, _ = await _ask(running.port, "/teapot", "1.1")
    assert status == b"HTTP/1.1 418 I'm a teapot" and body == b"teapot"
    (got,) = seen
    assert (got.status, got.reason, got.content_type, got.content_length, got.body_length) == (
        418,
        "I'm a teapot",
        "text/plain",
        6,
        6,
    )
    assert got.prepared and got.headers["Server"] == "cloudflare" and got.keep_alive is True


async def test_the_status_lines_kept_are_bounded(make_edge: MakeEdge, raw_origin: str) -> None:
    # an origin may make up a reason per answer: the status lines remembered stay at their bound
    running = await make_edge(base_config(raw_origin))
    web_aiohttp._STATUS_LINES.clear()
    async with running.client.get(running.url("public.acme.test", "/reason/first")) as resp:
        assert resp.reason == "Reason first"
    for n in range(web_aiohttp.STATUS_LINES_LIMIT + 20):
        async with running.client.get(running.url("public.acme.test", f"/reason/{n}")) as resp:
            assert (resp.status, resp.reason) == (200, f"Reason {n}")
    assert len(web_aiohttp._STATUS_LINES) == web_aiohttp.STATUS_LINES_LIMIT


async def test_a_client_that_does_not_read_holds_back_the_next_answers(make_edge: MakeEdge) -> None:
    """Backpressure: 400 pipelined requests for answers of 60 KB (each read whole, one write) from a
    client that reads nothing. WholeAnswer waits for the client past the transport's high-water
    mark, so the edge stops taking the next request from the pipeline: the origin sees only as many
    as the sockets' buffers hold, not all 400 (24 MB kept in the edge's memory). Once the client
    reads, every answer arrives, whole and in order."""
    size, count = 60_000, 400
    asked = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal asked
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                asked += 1
                number = head.split(b" ", 2)[1].rsplit(b"/", 1)[1]
                body = number.ljust(size, b".")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (size, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        running = await make_edge(base_config(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connecting: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", running.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2 * size)
        writer.write(b"".join(b"GET /big/%d HTTP/1.1\r\nHost: public.acme.test\r\n\r\n" % i for i in range(count)))
        await writer.drain()
        # until the origin, once asked, has been asked nothing more for half a second (bounded)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        last, still_since = 0, loop.time()
        while loop.time() < deadline:
            if asked != last:
                last, still_since = asked, loop.time()
            elif asked and loop.time() - still_since >= 0.5:
                break
            await asyncio.sleep(0.05)
        assert 0 < asked < count, asked  # all 400 without the wait (75 here: the buffers hold 4.5 MB)
        for i in range(count):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: %d\r\n" % size in head, head
            body = await asyncio.wait_for(reader.readexactly(size), 10)
            assert body.rstrip(b".") == b"%d" % i
        assert asked == count
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
