"""Request header bytes reach the origin as the client sent them, in both of aiohttp's builds (issue 17).

aiohttp's C extension dropped a non-UTF-8 byte (``caf\\xe9`` arrived as ``caf``) and its pure-Python
build failed with a bare 500; fakeedge now writes the head itself. Each build runs as its own edge
process (``AIOHTTP_NO_EXTENSIONS=1`` selects the pure-Python one), in front of a raw-socket origin
that records the bytes it received.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from fakeedge.web_proxy import UnsendableHead, serialize_head

from .conftest import base_config, copy_test_key

EXAMPLES = int(os.environ.get("FAKEEDGE_HYPOTHESIS_EXAMPLES", "300"))

# the edge process: build check, then the edge on port 0, its port on stdout, alive until stdin closes
EDGE_SCRIPT = """
import asyncio, json, sys
import aiohttp.http_parser as parser
from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.web_app import start

async def main():
    raw = json.loads(sys.argv[1])
    edge = Edge.create(parse_config(raw, source="test.yml"))
    runner, (_, port) = await start(edge, "127.0.0.1", 0)
    c_build = parser.HttpRequestParser is not parser.HttpRequestParserPy
    print(port, "c" if c_build else "python", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

asyncio.run(main())
"""

BUILDS = {"c": None, "python": "1"}  # aiohttp reads any non-empty value as "no extensions"


class RawOrigin:
    """An origin on a raw socket: records each request head's bytes and answers 200 "ok"."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(params=sorted(BUILDS))
async def build_edge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[int, RawOrigin]]:
    """An edge process in one aiohttp build (C or pure Python) in front of a :class:`RawOrigin`."""
    origin = RawOrigin()
    url = await origin.start()
    raw = base_config(url)
    raw["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    raw["ingress"].insert(0, {"hostname": "tls-origin.acme.test", "service": "https://127.0.0.1:9"})
    env = {k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"}
    if (build := BUILDS[request.param]) is not None:
        env["AIOHTTP_NO_EXTENSIONS"] = build
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        EDGE_SCRIPT,
        json.dumps(raw),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        port, build = line.decode().split()
        assert build == request.param, f"asked for aiohttp's {request.param} build, the edge runs the {build} one"
        yield int(port), origin
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        assert origin.server is not None
        origin.server.close()
        await origin.server.wait_closed()


async def _raw_request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = next(
            int(line.split(b":", 1)[1])
            for line in answer_head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return answer_head + await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()


async def test_non_utf8_header_bytes_reach_the_origin_as_sent(build_edge: tuple[int, RawOrigin]) -> None:
    port, origin = build_edge
    answer = await _raw_request(
        port,
        b"GET /menu HTTP/1.1\r\nHost: public.acme.test\r\nX-Dish: caf\xe9\r\nX-Utf8: caf\xc3\xa9 \xe2\x82\xac\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.endswith(b"\r\n\r\nok")
    assert len(origin.heads) == 1
    lines = origin.heads[0].split(b"\r\n")
    assert lines[0] == b"GET /menu HTTP/1.1"
    assert b"X-Dish: caf\xe9" in lines
    assert b"X-Utf8: caf\xc3\xa9 \xe2\x82\xac" in lines


async def test_non_utf8_header_bytes_to_an_https_origin_get_the_edge_400(build_edge: tuple[int, RawOrigin]) -> None:
    # aiohttp's client, which https origins go through, cannot send such bytes unchanged: refused
    # with the edge's page and a Ray ID, the same in both builds, before any connection is tried
    port, _ = build_edge
    answer = await _raw_request(
        port, b"GET / HTTP/1.1\r\nHost: tls-origin.acme.test\r\nX-Dish: caf\xe9\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert b"\r\nCF-Ray: " in head
    assert b"\r\nServer: cloudflare" in head
    assert b"The request headers cannot be forwarded to the origin as sent." in body


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("a\r\nInjected: 1", "a control character in the request head"),
        ("a\nb", "a control character in the request head"),
        ("a\rb", "a control character in the request head"),
        ("a\x00", "a control character in the request head"),
        ("a\x7f", "a control character in the request head"),
        ("\ud800", "a request header holds characters no client bytes decode to"),
    ],
)
def test_a_head_that_cannot_be_sent_as_received_is_refused(value: str, error: str) -> None:
    with pytest.raises(UnsendableHead) as refused:
        serialize_head("GET / HTTP/1.1", {"X-A": value})
    assert str(refused.value) == error


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=5))
def test_field_bytes_pass_through_as_received(values: list[bytes]) -> None:
    # oracle: any value bytes a parser accepts (HTAB, SP, visible ASCII, obs-text) come out unchanged,
    # decoded as both of aiohttp's parsers decode them
    allowed = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
    values = [v.translate(None, bytes(set(range(256)) - set(allowed))) or b"x" for v in values]
    headers = [(f"X-{i}", v.decode("utf-8", "surrogateescape")) for i, v in enumerate(values)]
    expected = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %b\r\n" % (i, v) for i, v in enumerate(values)) + b"\r\n"
    assert serialize_head("GET / HTTP/1.1", CIMultiDict(headers)) == expected
