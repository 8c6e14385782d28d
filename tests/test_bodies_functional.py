"""Big bodies stream through a running ``fakeedge serve`` both ways, byte for byte, in bounded memory.

Issue 16: the edge's peak RSS stays flat whatever the body size. A forwarder that read a body
whole would grow by at least the body's 64 MiB; a streaming one by a few socket buffers.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from .conftest import Origin
from .test_reliability_functional import serve

MIB = 1 << 20
BLOCKS = 64  # a 64 MiB body each way
GROWTH_LIMIT = 32 * MIB  # half the body: generous for socket buffers, far below a body held whole


def block(i: int, base: bytes = random.Random(16).randbytes(MIB)) -> bytes:
    """The i-th MiB of the body: random bytes, numbered, so that a lost, doubled or swapped MiB shows."""
    return i.to_bytes(8, "big") + base[8:]


def expected_digest() -> str:
    digest = hashlib.sha256()
    for i in range(BLOCKS):
        digest.update(block(i))
    return digest.hexdigest()


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` memory figure (VmRSS, VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@pytest.fixture
async def big_origin(make_origin: Callable[..., Awaitable[Origin]]) -> Origin:
    """``GET /big`` streams the 64 MiB body; ``POST /big`` answers the size and SHA-256 of what came."""

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = BLOCKS * MIB
        await response.prepare(request)
        for i in range(BLOCKS):
            await response.write(block(i))
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.Response(text=f"{size} {digest.hexdigest()}")

    def routes(app: web.Application) -> None:
        app.router.add_get("/big", download)
        app.router.add_post("/big", upload)

    return await make_origin(routes)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the edge's memory from /proc (Linux)")
async def test_64_mib_each_way_byte_exact_in_bounded_memory(tmp_path: Path, big_origin: Origin) -> None:
    served = await serve(tmp_path, big_origin.url)
    try:
        port = await served.listening()
        pid = served.proc.pid
        url = f"http://127.0.0.1:{port}/big"
        headers = {"Host": "public.acme.test"}
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            async with client.get(f"http://127.0.0.1:{port}/", headers=headers) as warm:  # the first request's imports
                assert warm.status == 200
            before = status_kib(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts over from VmRSS (proc(5))

            async def body() -> AsyncIterator[bytes]:
                for i in range(BLOCKS):
                    yield block(i)

            async with client.post(url, headers=headers, data=body()) as resp:
                assert resp.status == 200
                assert await resp.text() == f"{BLOCKS * MIB} {expected_digest()}"
            async with client.get(url, headers=headers) as resp:
                assert resp.status == 200
                digest, size = hashlib.sha256(), 0
                async for chunk in resp.content.iter_any():
                    digest.update(chunk)
                    size += len(chunk)
            assert (size, digest.hexdigest()) == (BLOCKS * MIB, expected_digest())
        growth = (status_kib(pid, "VmHWM") - before) * 1024
        assert growth < GROWTH_LIMIT, f"the edge grew {growth / MIB:.1f} MiB passing 64 MiB each way"
    finally:
        served.proc.terminate()
        await served.exited(30)
