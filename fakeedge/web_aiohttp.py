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
``_serialize_headers``, which drops or refuses bytes that are not UTF-8; and an origin's answer
read whole goes back as one write (:class:`WholeAnswer`), a ``web.StreamResponse`` whose
``prepare`` sets the state aiohttp's own would (:data:`ANSWER_STATE`, checked by
:func:`answer_problems`; without it, :data:`WHOLE` is False and answers are ``web.Response``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "POOLED",
    "PROBLEMS",
    "WHOLE",
    "EdgeRequest",
    "HttpProcessingError",
    "ResponseHandler",
    "WholeAnswer",
    "answer_in_http11",
    "answer_problems",
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


# made at import: a RequestKey names itself after the module whose top level makes it, and a
# thread's frames (an edge started by fakeedge.testing_sync) have no module level to find
_PROBE_KEY = web.RequestKey("probe_key", str)


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
    probe: Any = object.__new__(web.Request)
    probe._state = {}
    try:
        probe[_PROBE_KEY] = "kept"
        kept = probe._state.get(_PROBE_KEY) == "kept" and probe.get(_PROBE_KEY) == "kept"
    except Exception:  # any failure is the answer: it moved
        kept = False
    if not kept:
        found.append(f"{where}: web.Request no longer keeps request[key] in its _state dict, which the edge writes")
    try:
        probe._cache = {}
        probe._version = aiohttp.HttpVersion(2, 0)
        claimed = probe.version
        answer_in_http11(probe)
        kept = claimed == (2, 0) and probe.version is aiohttp.HttpVersion11
    except Exception:
        kept = False
    if not kept:
        found.append(f"{where}: web.Request.version is no longer read from _version, which answer_in_http11 sets")
    return tuple(found)


def answer_in_http11(request: web.Request) -> None:
    """Have the answer to ``request`` speak HTTP/1.1 whatever version its request line claimed.

    aiohttp writes the status line in the request's version: ``HTTP/2.0 505`` to a client that
    wrote ``HTTP/2.0``. Its request keeps the version in ``_version``, and ``version`` is a reified
    property, so a version already read is in ``_cache`` too (checked by :func:`request_problems`).
    """
    request._version = aiohttp.HttpVersion11
    request._cache["version"] = aiohttp.HttpVersion11


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


# What WholeAnswer sets of a StreamResponse's state, as StreamResponse.prepare and write_eof do,
# and who reads it: a new aiohttp that renames one makes answer_problems() say so
ANSWER_STATE = {
    "_status": "the status property",
    "_reason": "the reason property",
    "_state": "response[key]",
    "_keep_alive": "the keep_alive property, which the server reads to keep the connection or close it",
    "_eof_sent": "the prepared property, and prepare() and write_eof() once the answer is out",
    "_req": "the request being answered while it is written",
    "_payload_writer": "the prepared property",
    "_body_length": "the body_length property",
}


def answer_problems() -> tuple[str, ...]:
    """How this aiohttp's ``web.StreamResponse`` differs from what :class:`WholeAnswer` expects, in words."""
    where = f"aiohttp {aiohttp.__version__}"
    found = []
    probe = web.StreamResponse(status=299, reason="Probe")
    for name, why in ANSWER_STATE.items():
        if not hasattr(probe, name):
            found.append(f"{where}: StreamResponse has no attribute {name}, behind {why}")
    if not found:
        probe._keep_alive = False
        probe._eof_sent = True
        probe._body_length = 7
        if not (
            probe.status == 299
            and probe.reason == "Probe"
            and probe.keep_alive is False
            and probe.prepared
            and probe.body_length == 7
        ):
            found.append(f"{where}: StreamResponse's properties no longer read the attributes WholeAnswer sets")
    if not isinstance(inspect.getattr_static(web.StreamResponse, "headers", None), property):
        found.append(f"{where}: StreamResponse has no property headers for WholeAnswer to make when read")
    return tuple(found)


WHOLE = not answer_problems()  # False: answers read whole go back as web.Response (slower, the same bytes)

_OCTETS = b"Content-Type: application/octet-stream\r\n"
# aiohttp's Connection header, by the request's HTTP version: kept alive, or not
_KEEP = {(1, 1): b"", (1, 0): b"Connection: keep-alive\r\n"}
_CLOSE = {(1, 1): b"Connection: close\r\n", (1, 0): b""}
# the status lines answers recur with, by (version, status, reason): bounded, as origins choose reasons
_STATUS_LINES: dict[tuple[tuple[int, int], int, str], bytes] = {}
STATUS_LINES_LIMIT = 256
_DATE: list[Any] = [0, b""]  # the second, and its Date line: one formatdate a second


def _date_line() -> bytes:
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[:] = [now, b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"]
    line: bytes = _DATE[1]
    return line


class WholeAnswer(web.StreamResponse):
    """An origin's answer read whole, written back head and body in one piece (issue 16).

    ``web.Response`` copies its headers into a CIMultiDict, and its ``prepare`` serialises them
    again, checking byte by byte in aiohttp's writer: about a tenth of a proxied request's
    instructions. Here the origin's fields come serialised and checked already
    (``web_proxy.answer_fields``); :meth:`prepare` adds the status line and what aiohttp's
    ``prepare`` would add (Content-Length, a default Content-Type, Date, Connection) and writes.
    :attr:`headers` is made only when something reads it.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        fields: bytes,
        body: bytes,
        origin_headers: CIMultiDictProxy[str],
        lines: list[tuple[str, str]],
        extra: Sequence[tuple[str, str]],
    ) -> None:
        """``fields``: the header lines ``lines`` serialised, each ending in CR LF; ``extra``: the
        edge's own among them (cookies it sets); ``origin_headers``: the origin's, as parsed."""
        # not StreamResponse.__init__, which would build the CIMultiDict this class exists to avoid
        self._state = {}
        self._status = status
        self._reason = reason
        self._fields = fields
        self._whole = body
        self._origin_headers = origin_headers
        self._lines = lines
        self._extra = extra
        self._made: CIMultiDict[str] | None = None

    @property
    def headers(self) -> CIMultiDict[str]:
        made = self._made
        if made is None:
            made = self._made = CIMultiDict(self._lines)
            made["Content-Length"] = str(len(self._whole))
            if self._whole and "Content-Type" not in made:
                made["Content-Type"] = "application/octet-stream"
        return made

    @property  # read-only here: the headers are the origin's
    def _headers(self) -> CIMultiDict[str]:  # type: ignore[override]  # what StreamResponse's methods read
        return self.headers

    def set_cookies(self) -> tuple[str, ...]:
        """The answer's ``Set-Cookie`` values, without making :attr:`headers` (the journal's)."""
        found = tuple(self._origin_headers.getall("Set-Cookie", ()))
        return found + tuple(v for k, v in self._extra if k.lower() == "set-cookie") if self._extra else found

    def location(self) -> str | None:
        """The answer's ``Location``, without making :attr:`headers`."""
        return self._origin_headers.get("Location")

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        self._req = request
        writer = self._payload_writer = request.writer
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        version = request.version
        body = self._whole
        origin_headers = self._origin_headers
        status_line = _STATUS_LINES.get((version, self._status, self._reason))
        if status_line is None:
            status_line = f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}\r\n".encode(
                "utf-8",
                "surrogateescape",  # a reason byte that was not UTF-8 goes back as it came
            )
            if len(_STATUS_LINES) < STATUS_LINES_LIMIT:
                _STATUS_LINES[version, self._status, self._reason] = status_line
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(
            b"%b%bContent-Length: %d\r\n%b%b%b\r\n%b"
            % (
                status_line,
                self._fields,
                len(body),
                _OCTETS if body and "Content-Type" not in origin_headers else b"",
                b"" if "Date" in origin_headers else _date_line(),
                (_KEEP if keep_alive else _CLOSE).get(version, b""),
                body,
            )
        )
        self._eof_sent = True
        self._body_length = len(body)
        if transport.get_write_buffer_size():  # not all written at once: a slow reader
            await writer.drain()  # waits past the transport's high-water mark, as aiohttp's writer does
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        self._req = None
        self._payload_writer = None
