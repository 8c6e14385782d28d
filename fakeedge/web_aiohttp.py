"""The aiohttp internals fakeedge relies on, in one place, checked at import.

The pooled forwarder (``web_proxy.OriginPool``) talks HTTP/1.1 to plain-http origins over aiohttp's
own client protocol, ``aiohttp.client_proto.ResponseHandler``: it parses the origin's answer with
aiohttp's parser (C or pure Python, whichever aiohttp loaded), so the edge has one HTTP parser,
and costs a third of a ``ClientSession`` request. That protocol is not aiohttp's public API. What
fakeedge uses of it is listed here; :data:`PROBLEMS` says in words what a new aiohttp changed, and
:data:`POOLED` is then False, so the edge forwards through the public ``ClientSession`` instead:
slower, the same answers. ``tests/test_aiohttp_contract.py`` fails on any of these problems, so
a new aiohttp that moves them is noticed in CI rather than by a slower edge.

The edge itself is served by aiohttp's low-level server (``web.Server``) with one handler, not by
an ``Application``'s router: :func:`request_factory` builds its requests, ``web.Request`` objects
as the router would hand over, whose ``app`` is the edge's application.

fakeedge writes request heads itself (``web_proxy.serialize_head``), not with aiohttp's
``_serialize_headers``, which drops or refuses bytes that are not UTF-8.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

__all__ = [
    "POOLED",
    "PROBLEMS",
    "EdgeRequest",
    "HttpProcessingError",
    "ResponseHandler",
    "drain",
    "new_protocol",
    "request_factory",
]

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.http_parser import RawRequestMessage
    from aiohttp.streams import StreamReader
    from aiohttp.web_protocol import RequestHandler
else:
    try:
        from aiohttp.http_exceptions import HttpProcessingError
    except ImportError:  # the answer-parse error: re-exported by aiohttp.http for years

        class HttpProcessingError(Exception):
            """Stands in for aiohttp's parse error if it moves: nothing raises it then."""

    try:
        from aiohttp.client_proto import ResponseHandler
    except ImportError:
        ResponseHandler = None

# What the pooled forwarder calls on a ResponseHandler, and what for
METHODS = {
    "set_response_params": "arms the parser for one answer",
    "read": "awaits the parsed head and its payload stream",
    "is_connected": "tells a live kept-alive connection from a closed one",
    "set_exception": "fails the answer's read when the request body cannot be sent",
    "close": "closes the connection",
    "_drain_helper": "waits while the origin reads the request body slower than the client sends it",
}
PROPERTIES = {
    "should_close": "whether the origin asked to close, or sent something unsolicited while idle",
}
# keyword arguments of set_response_params the forwarder passes
RESPONSE_PARAMS = ("skip_payload", "read_until_eof", "auto_decompress")


def _problems() -> tuple[str, ...]:
    """Each way this aiohttp differs from what the pooled forwarder expects, in words."""
    where = f"aiohttp {aiohttp.__version__}"
    if ResponseHandler is None:
        return (f"{where} has no aiohttp.client_proto.ResponseHandler, the pooled forwarder's protocol",)
    found: list[str] = []
    try:
        parameters = list(inspect.signature(ResponseHandler.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        parameters = []
    # ResponseHandler(loop): the loop first, anything added since with a default
    if not parameters or parameters[0].name != "loop" or any(p.default is p.empty for p in parameters[1:]):
        names = [p.name for p in parameters]
        found.append(f"{where}: ResponseHandler() no longer takes just the event loop (it takes {names})")
    for name, why in METHODS.items():
        if not callable(getattr(ResponseHandler, name, None)):
            found.append(f"{where}: ResponseHandler has no method {name}(), which {why}")
    for name in ("read", "_drain_helper"):
        if callable(getattr(ResponseHandler, name, None)) and not inspect.iscoroutinefunction(
            getattr(ResponseHandler, name)
        ):
            found.append(f"{where}: ResponseHandler.{name}() is no longer a coroutine function")
    for name, why in PROPERTIES.items():
        if not isinstance(inspect.getattr_static(ResponseHandler, name, None), property):
            found.append(f"{where}: ResponseHandler has no property {name}, which says {why}")
    setter = getattr(ResponseHandler, "set_response_params", None)
    if callable(setter):
        accepted = inspect.signature(setter).parameters
        for name in RESPONSE_PARAMS:
            if name not in accepted or accepted[name].kind is not inspect.Parameter.KEYWORD_ONLY:
                found.append(f"{where}: ResponseHandler.set_response_params() takes no keyword {name}=")
    return tuple(found)


PROBLEMS = _problems()
POOLED = not PROBLEMS  # False: every origin goes through aiohttp's public ClientSession


def new_protocol(loop: asyncio.AbstractEventLoop) -> ResponseHandler:
    """A fresh client protocol for ``loop.create_connection`` (only called when :data:`POOLED`)."""
    assert ResponseHandler is not None
    return ResponseHandler(loop)


async def drain(proto: ResponseHandler) -> None:
    """Wait until the transport's write buffer is below its high-water mark (flow control)."""
    helper: Any = proto._drain_helper
    await helper()


# web.Request(message, payload, protocol, payload_writer, task, loop, *, client_max_size=...), as
# Application._make_request calls it: the request factory web.Server is given calls it the same way
REQUEST_PARAMS = ("message", "payload", "protocol", "payload_writer", "task", "loop")


def request_problems() -> tuple[str, ...]:
    """How this aiohttp's ``web.Request`` differs from what :func:`request_factory` expects, in words.

    Unlike the pooled forwarder's problems, these have no fallback: the edge cannot serve, so
    they fail ``tests/test_aiohttp_contract.py`` and, at start, :func:`request_factory`.
    """
    where = f"aiohttp {aiohttp.__version__}"
    try:
        parameters = inspect.signature(web.Request.__init__).parameters
    except (TypeError, ValueError):
        return (f"{where}: web.Request() has no signature to check",)
    names = [p.name for p in parameters.values()][1 : 1 + len(REQUEST_PARAMS)]
    found = []
    if tuple(names) != REQUEST_PARAMS:
        found.append(f"{where}: web.Request() no longer takes {', '.join(REQUEST_PARAMS)} first (it takes {names})")
    size = parameters.get("client_max_size")
    if size is None or size.kind is not inspect.Parameter.KEYWORD_ONLY:
        found.append(f"{where}: web.Request() takes no keyword client_max_size=")
    if not isinstance(inspect.getattr_static(web.Request, "app", None), property):
        found.append(f"{where}: web.Request has no property app for EdgeRequest to stand in for")
    return tuple(found)


class EdgeRequest(web.Request):
    """A ``web.Request`` made without a router: its :attr:`app` is the edge's application."""

    ATTRS = web.Request.ATTRS | frozenset(["_edge_app"])
    _edge_app: web.Application

    @property
    def app(self) -> web.Application:
        """The edge's application (a routed request finds it through its match info)."""
        return self._edge_app


def request_factory(
    app: web.Application,
) -> Callable[[RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, asyncio.Task[None]], EdgeRequest]:
    """The ``request_factory`` of a ``web.Server`` serving ``app``: requests as its router would make them.

    No size limit on bodies read whole (``client_max_size=0``, as the edge's application had), so
    the control API and forms behave as before; the proxied path streams.
    """
    problems = request_problems()
    if problems:
        raise RuntimeError("\n".join(problems))
    loop = asyncio.get_running_loop()

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> EdgeRequest:
        request = EdgeRequest(message, payload, protocol, writer, task, loop, client_max_size=0)
        request._edge_app = app
        return request

    return make
