"""A bad day for the edge: clients that leave, slow uploads, stalled origins, shutdown, descriptors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from fakeedge import web_proxy

from .conftest import base_config


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


async def test_a_client_that_leaves_closes_the_origin_connection(make_edge, thinker: Thinker, forwarder: str) -> None:  # type: ignore[no-untyped-def]
    cfg = base_config(thinker.url)
    cfg["origin_timeout"] = "30s"
    running = await make_edge(cfg)
    before = open_fds()
    clients = 10
    for i in range(1, clients + 1):
        _, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(f"GET /think HTTP/1.1\r\nHost: public.acme.test:{running.port}\r\n\r\n".encode())
        await writer.drain()
        await wait_until(lambda i=i: thinker.started == i)
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
