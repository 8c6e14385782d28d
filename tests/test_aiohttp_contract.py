"""The aiohttp internals behind fakeedge/web_aiohttp.py: still where and what the pooled forwarder expects.

A new aiohttp that moves them fails here, in words, rather than slowing the edge down unnoticed
(the edge then forwards through ClientSession, which the fallback test below proves works).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.client_proto
import pytest
from aiohttp import web

from fakeedge import web_aiohttp, web_app
from fakeedge.web_app import pool_key
from fakeedge.web_proxy import serialize_head

from .conftest import Origin, RunningEdge


def test_the_internals_the_pooled_forwarder_uses_are_there() -> None:
    assert web_aiohttp.PROBLEMS == (), (
        "aiohttp moved what fakeedge's pooled forwarder uses; the edge falls back to ClientSession "
        "(slower) until fakeedge/web_aiohttp.py and web_proxy.py are updated:\n" + "\n".join(web_aiohttp.PROBLEMS)
    )
    assert web_aiohttp.POOLED


def test_a_moved_internal_is_reported_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    class Moved:  # what a future aiohttp might ship
        def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None: ...

        async def read(self) -> None: ...

        def set_response_params(self, *, skip_payload: bool = False) -> None: ...

        def is_connected(self) -> bool:
            return True

        def close(self) -> None: ...

        def set_exception(self, exc: BaseException) -> None: ...

        def _drain_helper(self) -> None: ...  # no longer a coroutine function

    monkeypatch.setattr(web_aiohttp, "ResponseHandler", Moved)
    version = aiohttp.__version__
    assert web_aiohttp._problems() == (
        f"aiohttp {version}: ResponseHandler() no longer takes just the event loop (it takes ['loop', 'limit'])",
        f"aiohttp {version}: ResponseHandler._drain_helper() is no longer a coroutine function",
        f"aiohttp {version}: ResponseHandler has no property should_close, which says whether the origin asked "
        "to close, or sent something unsolicited while idle",
        f"aiohttp {version}: ResponseHandler.set_response_params() takes no keyword read_until_eof=",
        f"aiohttp {version}: ResponseHandler.set_response_params() takes no keyword auto_decompress=",
    )

    class Extended(aiohttp.client_proto.ResponseHandler):  # a new optional argument is no problem
        def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 10) -> None:
            super().__init__(loop)

    monkeypatch.setattr(web_aiohttp, "ResponseHandler", Extended)
    assert web_aiohttp._problems() == ()
    monkeypatch.setattr(web_aiohttp, "ResponseHandler", None)
    assert web_aiohttp._problems() == (
        f"aiohttp {version} has no aiohttp.client_proto.ResponseHandler, the pooled forwarder's protocol",
    )


async def test_the_protocol_parses_answers_and_keeps_alive_as_used() -> None:
    # each call web_proxy makes, against a real aiohttp origin
    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        response = web.Response(text=f"{request.method} {request.path_qs} {len(body)}", headers={"X-Seen": "yes"})
        if request.path == "/close":
            response.force_close()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    try:
        _, proto = await loop.create_connection(lambda: web_aiohttp.new_protocol(loop), "127.0.0.1", port)
        assert proto.is_connected()
        for i in range(2):  # the same connection twice: kept alive
            proto.set_response_params(skip_payload=False, read_until_eof=True, auto_decompress=False)
            assert proto.transport is not None
            proto.transport.write(
                serialize_head("POST /x?i=1 HTTP/1.1", {"Host": "o.test", "Content-Length": "3"}) + b"abc"
            )
            await web_aiohttp.drain(proto)
            message, payload = await asyncio.wait_for(proto.read(), 10)
            assert (message.code, message.reason, message.headers["X-Seen"]) == (200, "OK", "yes"), i
            assert await payload.read() == b"POST /x?i=1 3"
            assert not proto.should_close
        proto.set_response_params(skip_payload=True, read_until_eof=True, auto_decompress=False)
        assert proto.transport is not None
        proto.transport.write(serialize_head("HEAD /close HTTP/1.1", {"Host": "o.test"}))
        message, payload = await asyncio.wait_for(proto.read(), 10)
        assert message.code == 200
        assert await payload.read() == b""
        assert proto.should_close  # Connection: close: never back to the pool
        proto.close()

        _, proto = await loop.create_connection(lambda: web_aiohttp.new_protocol(loop), "127.0.0.1", port)
        proto.set_response_params(skip_payload=False, read_until_eof=True, auto_decompress=False)
        proto.set_exception(aiohttp.ClientOSError("the body could not be sent"))
        with pytest.raises(aiohttp.ClientOSError, match="the body could not be sent"):
            await asyncio.wait_for(proto.read(), 10)
        proto.close()
    finally:
        await runner.cleanup()


async def test_without_the_internals_the_edge_forwards_through_client_session(
    monkeypatch: pytest.MonkeyPatch, edge: RunningEdge, origin: Origin
) -> None:
    pool: Any = edge.runner.app[pool_key]
    async with edge.client.get(edge.url("public.acme.test", "/pooled")) as resp:
        assert resp.status == 200
    assert sum(len(idle) for idle in pool._idle.values()) == 1  # the pooled path was taken

    monkeypatch.setattr(web_aiohttp, "POOLED", False)
    pool.close()
    for path in ("/fallback", "/fallback-post"):
        async with edge.client.post(edge.url("public.acme.test", path), data=b"x" * 100) as resp:
            assert resp.status == 200
            assert await resp.json() == {"path": path, "size": 100}
    assert origin.last.headers["CF-Ray"]
    assert pool._idle == {}  # nothing went through the pool


def test_the_request_the_low_level_server_builds_is_still_made_the_same_way() -> None:
    assert web_aiohttp.request_problems() == (), (
        "aiohttp changed web.Request, which the edge's low-level server builds itself; fix "
        "fakeedge/web_aiohttp.py (request_factory):\n" + "\n".join(web_aiohttp.request_problems())
    )


def test_a_changed_request_constructor_is_reported_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    class Moved(web.BaseRequest):  # what a future aiohttp might ship: the loop first, no size limit, no app
        def __init__(self, loop: asyncio.AbstractEventLoop, message: Any) -> None: ...

    monkeypatch.setattr(web, "Request", Moved)
    version = aiohttp.__version__
    assert web_aiohttp.request_problems() == (
        f"aiohttp {version}: web.Request() no longer takes message, payload, protocol, payload_writer, task, "
        "loop first (it takes ['loop', 'message'])",
        f"aiohttp {version}: web.Request() takes no keyword client_max_size=",
        f"aiohttp {version}: web.Request has no property app for EdgeRequest to stand in for",
    )


async def test_the_edge_serves_requests_as_its_router_did(monkeypatch: pytest.MonkeyPatch, edge: RunningEdge) -> None:
    # the low-level server's requests are web.Requests whose app is the edge's (the inspector's
    # event stream reads it), with no limit on a body read whole, as the application had: a 2 MiB
    # control call gets the control API's own answer, not aiohttp's 413
    seen: list[web.Request] = []
    answer = web_app._answer

    async def spy(request: web.Request, *args: Any) -> Any:
        seen.append(request)
        return await answer(request, *args)

    monkeypatch.setattr(web_app, "_answer", spy)
    async with edge.client.get(edge.url("public.acme.test", "/x")) as resp:
        assert resp.status == 200
    (request,) = seen
    assert isinstance(request, web.Request)
    assert request.app is edge.runner.app

    async def body() -> AsyncIterator[bytes]:
        yield b'{"padding": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    async with edge.client.post(
        f"{edge.team}/cdn-cgi/fakeedge/clock", data=body(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert (resp.status, await resp.json()) == (
            400,
            {"error": "unknown key(s) padding; valid: advance, skew, freeze, unfreeze, reset"},
        )


def test_a_request_that_keeps_its_keys_elsewhere_is_reported_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    class Moved(web.Request):  # what a future aiohttp might ship: request[key] kept apart from _state
        def __setitem__(self, key: Any, value: Any) -> None:
            self.__dict__.setdefault("elsewhere", {})[key] = value

    monkeypatch.setattr(web, "Request", Moved)
    assert web_aiohttp.request_problems() == (
        f"aiohttp {aiohttp.__version__}: web.Request no longer keeps request[key] in its _state dict, "
        "which the edge writes",
    )
