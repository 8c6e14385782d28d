"""Forwarding to the origin: header hygiene, streamed bodies both ways, websockets, 502/504 pages."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import headers as h
from . import pages, web_aiohttp
from .config import IngressRule
from .headers import edge_headers
from .web_aiohttp import HttpProcessingError, ResponseHandler

SMALL_BODY = 64 * 1024  # origin bodies up to this size are read whole; larger ones are streamed
CHUNK = 64 * 1024
WS_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
RESPONSE_DROP = h.HOP_BY_HOP | {
    "x-accel-buffering",
    "x-accel-charset",
    "x-accel-limit-rate",
    "x-accel-redirect",
    "server",
    "cf-ray",
}
# a body read whole gets its Content-Length from aiohttp, from the bytes actually read
RESPONSE_DROP_WHOLE = RESPONSE_DROP | {"content-length"}


# RFC 9110 §5.5, RFC 9112 §4: a field line holds HTAB, visible ASCII, SP and obs-text; CR LF end it
_FIELD_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
# what aiohttp's client cannot send byte for byte: bytes that were not UTF-8, which both of
# aiohttp's parsers hand over as lone surrogates ("surrogateescape")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class UnsendableHead(ValueError):
    """A request head the edge cannot forward as it was received (answered with the edge's 400)."""


def serialize_head(start_line: str, headers: Mapping[str, str]) -> bytes:
    """The request head as bytes, each header byte as the client sent it.

    aiohttp's parsers (C and pure Python alike) decode header bytes as UTF-8 with
    ``surrogateescape``, so encoding back the same way gives the received bytes: ``caf\\xe9``
    reaches the origin as sent, where aiohttp's own serializer drops the byte (C) or raises
    (Python). A control character (which no parsed header holds, but a configured one could)
    raises :class:`UnsendableHead`, as does a string no client bytes can decode to.
    """
    lines = [start_line]
    lines.extend(map(": ".join, headers.items()))
    lines.append("")  # the blank line that ends the head
    return _field_lines(lines, "request", "client")


def answer_fields(reason: str, lines: list[tuple[str, str]]) -> bytes:
    """An origin's answer's header lines as bytes, each ending in CR LF, checked as request heads are.

    aiohttp's response parser is lenient where origins are sloppy; nothing it let through may
    reach the client as a header line or a status line of its own (response splitting): a
    control character in ``reason`` or a field raises :class:`UnsendableHead`.
    """
    parts = [reason]
    parts.extend(map(": ".join, lines))
    head = _field_lines(parts, "response", "origin")
    return head[head.index(b"\r\n") + 2 :]


def _field_lines(lines: list[str], side: str, sender: str) -> bytes:
    """``lines``, each ended by CR LF, as the bytes ``sender`` sent (see :func:`serialize_head`).

    Raises :class:`UnsendableHead` on a control character, or on a string no bytes decode to.
    """
    lines.append("")
    try:
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UnsendableHead(f"a {side} header holds characters no {sender} bytes decode to") from None
    # what is left once every byte a field line may hold is removed: exactly the CR LFs put there
    # above (one translate pass, a third of a regex search on a 2 KiB head)
    if head.translate(None, _FIELD_BYTES) != b"\r\n" * (len(lines) - 1):
        raise UnsendableHead(f"a control character in the {side} head")
    return head


_getrandbits = random.getrandbits


def new_ray() -> str:
    """A Ray ID in Cloudflare's shape: 16 hex, a dash, a location code (spec §8).

    It names a request in logs and pages and guards nothing, so it need not cost a getrandom
    syscall per request as ``secrets`` would.
    """
    return "%016x-DEV" % _getrandbits(64)  # noqa: UP031 (a fifth cheaper than the f-string's format spec)


# Never removed because the client's Connection header names them (RFC 9110 §7.6.1 lets a sender
# name any header there): Host is what Access and the ingress rules judged, Cookie may carry the
# CF_Authorization an origin verifies, Content-Length frames the body, and the edge's own headers
# are set, or appended to (X-Forwarded-For), whatever the client asked.
CONNECTION_PROOF = frozenset({"host", "cookie", "content-length"}) | h.EDGE_SET


ALWAYS_DROPPED = h.HOP_BY_HOP | h.SPOOFABLE_EXACT  # lower-cased, "_" read as "-"


def clean_request_headers(request: web.Request, *, drop: str | None = None) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop and anything that could spoof identity (spec §2.6, §8).

    Every ``Cf-Access-*`` header (assertions, emails, client ids and secrets, tokens),
    ``CF-Connecting-IP``-style headers, and the ``CF_Binding`` cookie are removed; ``drop`` names one
    more header to remove (an app's single-header service token). Headers the client's
    ``Connection`` names are removed too, except ``Host``, ``Cookie``, ``Content-Length`` and the
    ones the edge sets (``CONNECTION_PROOF``): ``Connection: close, Host`` must not send the
    request to the origin's default virtual host.
    """
    connection_tokens: set[str] = set()
    for conn in request.headers.getall("Connection", ()):
        connection_tokens.update(t.strip().lower().replace("_", "-") for t in conn.split(","))
    connection_tokens -= CONNECTION_PROOF
    out: CIMultiDict[str] = CIMultiDict()
    dropped = ALWAYS_DROPPED
    if connection_tokens or drop:
        dropped = dropped | connection_tokens | ({drop.lower().replace("_", "-")} if drop else set())
    for name, value in request.headers.items():
        # CGI and WSGI servers read "_" as "-": Cf_Access_Authenticated_User_Email is the same header
        low = name.lower()
        if "_" in low:
            low = low.replace("_", "-")
        if low in dropped or low.startswith(h.SPOOFABLE_PREFIX):
            continue
        if low == "cookie" and h.CF_BINDING in value:
            value = "; ".join(c.strip() for c in value.split(";") if not c.strip().startswith(h.CF_BINDING + "="))
            if not value:
                continue
        out.add(name, value)
    return out


def add_edge_request_headers(
    out: CIMultiDict[str], request: web.Request, *, ip: str, country: str, ray: str, scheme: str
) -> None:
    """The headers Cloudflare adds for the origin (spec §8), to headers from :func:`clean_request_headers`."""
    forwarded = out.get(h.X_FORWARDED_FOR)
    out[h.X_FORWARDED_FOR] = f"{forwarded},{ip}" if forwarded else ip
    out[h.X_FORWARDED_PROTO] = scheme
    # added, not set: clean_request_headers removed any client copy (SPOOFABLE_EXACT), and setting
    # scans the whole multidict each time
    out.add(h.CONNECTING_IP, ip)
    out.add(h.IP_COUNTRY, country)
    out.add(h.RAY, ray)
    out.add(h.VISITOR, '{"scheme":"https"}' if scheme == "https" else '{"scheme":"http"}')
    out.add(h.CDN_LOOP, "cloudflare")


async def forward(
    request: web.Request,
    client: aiohttp.ClientSession,
    rule: IngressRule,
    upstream_headers: CIMultiDict[str],
    *,
    target: str,
    ray: str,
    read_timeout: float,
    deadlines: Deadlines,
    extra_response_headers: Sequence[tuple[str, str]] = (),
    pool: OriginPool | None = None,
) -> web.StreamResponse:
    """Send the request to ``rule``'s origin and stream the answer back.

    Plain-http origins go through ``pool`` when one is given (:func:`_send_pooled`); https
    origins and websockets through ``client`` (:func:`_send_client`). Either way the same
    answers, errors and timeouts: this one skeleton reads or streams what they return.
    """
    if rule.http_host_header:
        upstream_headers[h.X_FORWARDED_HOST] = request.host
        upstream_headers["Host"] = rule.http_host_header
    websocket = _is_websocket(request)
    method = request.method
    origin = _plain_origin(rule.service) if pool is not None and web_aiohttp.POOLED and not websocket else None
    try:
        has_body = request.body_exists
        head = _pooled_head(method, target, upstream_headers, has_body, origin)
        if origin is None and _SURROGATE.search(head.decode("utf-8", "surrogateescape")):
            # aiohttp's client serialises with its own code: bytes that were not UTF-8 would be
            # dropped (C build) or fail (pure Python), so they are refused here the same way in both
            raise UnsendableHead(
                "a request header holds bytes that are not UTF-8, which the edge forwards only to http origins"
            )
    except UnsendableHead as exc:
        return unsendable(request, ray, exc)
    if websocket:
        return await _forward_websocket(
            request, client, _client_url(rule, target), upstream_headers, rule, ray, read_timeout
        )
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    body = _timed_body(request, deadlines, task, read_timeout) if has_body else None
    upstream: _Pooled | _FromClient | None = None
    response: web.StreamResponse | None = None
    failure: BaseException | None = None
    # the origin must answer, and keep sending, within read_timeout (an idle stream is cut)
    deadlines.set(task, loop.time() + read_timeout)
    try:
        if origin is not None:
            assert pool is not None
            chunked = body is not None and "Content-Length" not in upstream_headers  # _pooled_head's framing
            upstream = await _send_pooled(pool, origin, method, head, body, chunked, rule.connect_timeout)
        else:
            upstream = await _send_client(client, method, _client_url(rule, target), upstream_headers, body, rule)
        status = upstream.status
        headers = upstream.headers
        raw_length = headers.get("Content-Length")
        # small bodies are read whole (HEAD, 204 and 304 have none to read)
        if raw_length and int(raw_length) <= SMALL_BODY and method != "HEAD" and status not in (204, 304):
            payload = upstream.payload
            # all there already, as a small answer mostly is: taken at once (a third of read()'s cost)
            data = payload.read_nowait(-1) if payload.is_eof() else await payload.read()
            upstream.finish()
            out = _response_headers(headers, ray, extra_response_headers, RESPONSE_DROP_WHOLE)
            if web_aiohttp.WHOLE and isinstance(headers, CIMultiDictProxy):
                reason = upstream.reason or ""
                return web_aiohttp.WholeAnswer(
                    status, reason, answer_fields(reason, out), data, headers, out, extra_response_headers
                )
            return web.Response(status=status, reason=upstream.reason, headers=out, body=data)
        out = _response_headers(headers, ray, extra_response_headers, RESPONSE_DROP)
        response = web.StreamResponse(status=status, reason=upstream.reason, headers=out)
        await response.prepare(request)
        async for chunk in upstream.payload.iter_chunked(CHUNK):
            deadlines.set(task, loop.time() + read_timeout)
            await response.write(chunk)
        upstream.finish()
        await response.write_eof()
        return response
    except asyncio.CancelledError:
        if not deadlines.clear(task):
            raise  # not ours: the client went away, or the server is stopping
        failure = TimeoutError()
    except (aiohttp.ClientError, HttpProcessingError, OSError, _ConnectError, UnsendableHead) as exc:
        failure = exc
    finally:
        deadlines.clear(task)
        if upstream is not None:
            upstream.close()  # back to the pool if finished, else cut
    return _failed(request, response, failure, rule, ray, read_timeout)


def _pooled_head(
    method: str, target: str, upstream_headers: CIMultiDict[str], has_body: bool, origin: tuple[str, int] | None
) -> bytes:
    """The request head as fakeedge writes it; for the pool, framed as aiohttp's client frames a body.

    The client's Content-Length is kept, else chunked; an empty POST-like request says
    ``Content-Length: 0``. Raises :class:`UnsendableHead`.
    """
    if origin is not None:
        if has_body:
            if "Content-Length" not in upstream_headers:
                upstream_headers["Transfer-Encoding"] = "chunked"
        elif method not in BODYLESS_METHODS and "Content-Length" not in upstream_headers:
            upstream_headers["Content-Length"] = "0"
        if "Host" not in upstream_headers:
            host, port = origin
            upstream_headers["Host"] = host if port == 80 else f"{host}:{port}"
    return serialize_head(f"{method} {target} HTTP/1.1", upstream_headers)


def _client_url(rule: IngressRule, target: str) -> URL:
    # encoded=True: the path and query go on as the client sent them; yarl would otherwise re-encode
    # them (%2F -> / in the query, %7e -> ~), breaking URLs an origin checks byte for byte (signatures)
    return URL(rule.service + target, encoded=True)


class _Pooled:
    """One exchange over a pooled connection: the origin's answer, and the connection's fate."""

    __slots__ = ("_finished", "_origin", "headers", "payload", "pool", "proto", "reason", "status", "writer")

    def __init__(
        self,
        pool: OriginPool,
        origin: tuple[str, int],
        proto: ResponseHandler,
        writer: asyncio.Task[None] | None,
        message: Any,
        payload: aiohttp.StreamReader,
    ) -> None:
        self.pool = pool
        self._origin = origin
        self.proto = proto
        self.writer = writer
        self.status: int = message.code
        self.reason: str | None = message.reason
        self.headers: Mapping[str, str] = message.headers
        self.payload = payload
        self._finished = False

    def finish(self) -> None:
        """The answer was read to its end."""
        self._finished = True

    def close(self) -> None:
        """Pool the connection if it can carry another request, else close it; stop a body still sending."""
        writer = self.writer
        if self._finished:
            _release(self.pool, self._origin, self.proto, writer)
        else:  # failed, cancelled or cut short: never back to the pool
            self.proto.close()
        if writer is not None and not writer.done():
            writer.cancel()


class _FromClient:
    """One exchange through aiohttp's ``ClientSession``, shaped as :class:`_Pooled`."""

    __slots__ = ("headers", "payload", "reason", "response", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status
        self.reason = response.reason
        self.headers: Mapping[str, str] = response.headers
        self.payload = response.content

    def finish(self) -> None:
        pass  # aiohttp releases the connection at the end of the payload

    def close(self) -> None:
        self.response.release()


async def _send_client(
    client: aiohttp.ClientSession,
    method: str,
    url: URL,
    upstream_headers: CIMultiDict[str],
    body: AsyncIterator[bytes] | None,
    rule: IngressRule,
) -> _FromClient:
    upstream = await client.request(
        method,
        url,
        headers=upstream_headers,
        data=body,
        allow_redirects=False,
        timeout=_timeout(rule.connect_timeout),
    )
    return _FromClient(upstream)


async def _send_pooled(
    pool: OriginPool,
    origin: tuple[str, int],
    method: str,
    head: bytes,
    body: AsyncIterator[bytes] | None,
    chunked: bool,
    connect_timeout: float,
) -> _Pooled:
    """Write ``head`` (and stream ``body``) over a pooled keep-alive connection; the answer's head parsed."""
    host, port = origin
    retry = body is None and method in IDEMPOTENT
    while True:
        proto, reused = await pool.acquire(host, port, connect_timeout)
        writer: asyncio.Task[None] | None = None
        try:
            proto.set_response_params(skip_payload=method == "HEAD", read_until_eof=True, auto_decompress=False)
            transport = proto.transport
            assert transport is not None
            transport.write(head)
            if body is not None:
                writer = asyncio.create_task(_send_body(proto, body, chunked))
                writer.add_done_callback(functools.partial(_body_sent, proto))
            try:
                message, payload = await proto.read()
                # 1xx (100 Continue, 103 Early Hints) are skipped, as aiohttp's client does; 101 is final
                while 100 <= message.code < 200 and message.code != 101:
                    message, payload = await proto.read()
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # a kept-alive connection the origin closed meanwhile: once more on a new one (RFC 9112 §9.3.1)
                if not (reused and retry):
                    raise
                retry = False
                proto.close()
                continue
        except BaseException:
            proto.close()
            if writer is not None and not writer.done():
                writer.cancel()
            raise
        return _Pooled(pool, origin, proto, writer, message, payload)


def _timed_body(
    request: web.Request, deadlines: Deadlines, task: asyncio.Task[Any], timeout: float
) -> AsyncIterator[bytes] | None:
    """The client's body for the origin, or None; the origin timeout runs only while the origin is waited for.

    Cloudflare's proxy read timeout is the wait for the origin, not for the client: while the
    next chunk comes from the client the deadline is paused; while a chunk is written to the
    origin (which may stop reading: a stalled origin) it runs, and from the end of the body on
    it is the wait for the response.
    """
    if not request.body_exists:
        return None
    chunks: AsyncIterator[bytes] = request.content.iter_any()
    if request.version == aiohttp.HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        chunks = _continued(request, chunks)
    return _timed_chunks(chunks, deadlines, task, timeout)


async def _continued(request: web.Request, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body, asked for with ``100 Continue`` as it is first read (RFC 9110 §10.1.1).

    The low-level server has no router to send it before the handler (aiohttp's expect_handler),
    and a client may wait for it without end: sent here, once Access has admitted the request, so
    the body of a refused one is never asked for.
    """
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's size, as aiohttp's expect handler leaves it
    async for chunk in chunks:
        yield chunk


async def _timed_chunks(
    chunks: AsyncIterator[bytes], deadlines: Deadlines, task: asyncio.Task[Any], timeout: float
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadlines.pause(task)
    async for chunk in chunks:
        deadlines.set(task, loop.time() + timeout)
        yield chunk  # resumed once the chunk is written and drained
        deadlines.pause(task)
    deadlines.set(task, loop.time() + timeout)


def _response_headers(
    headers: Mapping[str, str], ray: str, extra: Iterable[tuple[str, str]], drop: frozenset[str]
) -> list[tuple[str, str]]:
    """The origin's response headers for the client: hop-by-hop and edge-owned ones (``drop``) replaced.

    A list, not a CIMultiDict: aiohttp's responses copy whatever they are given into their own.
    """
    out = [(k, v) for k, v in headers.items() if k.lower() not in drop]
    out.append(("Server", "cloudflare"))  # edge_headers(), whose names are in every drop set
    out.append(("CF-Ray", ray))
    out.extend(extra)
    return out


def _failed(
    request: web.Request,
    response: web.StreamResponse | None,
    failure: BaseException | None,
    rule: IngressRule,
    ray: str,
    read_timeout: float,
) -> web.StreamResponse:
    """The answer when the origin failed: 504 or 502 before the response started, a cut after."""
    if response is not None:
        # the origin died or stalled mid-body: the status is gone already, so cut the
        # connection rather than pretend the body is complete
        if request.transport is not None:
            request.transport.close()
        return response
    if isinstance(failure, TimeoutError):
        return origin_error(
            request,
            504,
            "Gateway time-out",
            ray,
            f"The origin did not answer within {read_timeout:g}s.",
            reason=f"no answer within {read_timeout:g}s",
        )
    reason = failure_reason(failure)
    return origin_error(
        request, 502, "Bad gateway", ray, f"The origin {rule.service} could not be reached ({reason}).", reason=reason
    )


def failure_reason(failure: BaseException | None) -> str:
    """Why the origin failed, in words for the 502 page and the access log (no library class names)."""
    if isinstance(failure, _ConnectError | aiohttp.ClientConnectorError):
        # the OSError of the connect call: refused, unreachable, unresolvable
        failure = failure.__cause__ if isinstance(failure, _ConnectError) else failure.os_error
    if isinstance(failure, aiohttp.ServerDisconnectedError):
        return "the origin closed the connection without an answer"
    if isinstance(
        failure, HttpProcessingError | aiohttp.ClientResponseError | aiohttp.ClientPayloadError | UnsendableHead
    ):
        return "the origin sent an invalid HTTP response"
    if isinstance(failure, OSError):
        number = failure.errno
        if number is None and failure.args and isinstance(failure.args[0], str):
            # an OSError re-raised as text, "[Errno 104] Connection reset by peer"
            found = re.match(r"\[Errno (\d+)\]", failure.args[0])
            number = int(found.group(1)) if found else None
        if number:
            text = os.strerror(number)  # "Connection refused", "Connection reset by peer", "No route to host"
            return text[0].lower() + text[1:]
    return "connection failed"


def _body_sent(proto: ResponseHandler, writer: asyncio.Task[None]) -> None:
    if writer.cancelled():
        return
    exc = writer.exception()
    if exc is not None:
        # the response read fails with it rather than wait for an origin still expecting the body
        proto.set_exception(aiohttp.ClientOSError(str(exc)) if isinstance(exc, OSError) else exc)


def _release(
    pool: OriginPool, origin: tuple[str, int], proto: ResponseHandler, writer: asyncio.Task[None] | None
) -> None:
    """Pool ``proto`` if it can carry another request, else close it."""
    body_done = writer is None or (writer.done() and not writer.cancelled() and writer.exception() is None)
    if body_done and not proto.should_close and proto.is_connected():
        pool.release(origin[0], origin[1], proto)
    else:
        proto.close()


MAX_IDLE = 100  # kept-alive origin connections per origin beyond this are closed when released
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # aiohttp client: no Content-Length: 0


class OriginPool:
    """Keep-alive HTTP/1.1 connections to plain-http origins, reused across requests.

    aiohttp's ClientSession.request builds a ClientRequest, a ClientResponse, a connector key and
    timers per request; here a request is one write of its head and a parse with aiohttp's own
    C parser and protocol (``ResponseHandler``). A connection goes back to the pool only once its
    response was read to the end, its request body sent whole, and the origin did not ask to close.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[ResponseHandler]] = {}

    async def acquire(self, host: str, port: int, connect_timeout: float) -> tuple[ResponseHandler, bool]:
        idle = self._idle.get((host, port))
        while idle:
            proto = idle.pop()
            # not closed by the origin meanwhile, nothing unsolicited received while idle
            if proto.is_connected() and not proto.should_close:
                return proto, True
            proto.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, proto = await loop.create_connection(lambda: web_aiohttp.new_protocol(loop), host, port)
        except TimeoutError:
            raise
        except OSError as exc:
            raise _ConnectError(exc) from exc
        return proto, False

    def release(self, host: str, port: int, proto: ResponseHandler) -> None:
        idle = self._idle.setdefault((host, port), [])
        if len(idle) < MAX_IDLE:
            idle.append(proto)
        else:
            proto.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for proto in idle:
                proto.close()
        self._idle.clear()


class _ConnectError(Exception):
    """The origin could not be connected to (refused, unreachable, unresolvable)."""


@functools.lru_cache(maxsize=64)
def _plain_origin(service: str) -> tuple[str, int] | None:
    """(host, port) of an ``http://`` origin, None for anything else (https stays on aiohttp)."""
    url = URL(service)
    if url.scheme != "http" or url.raw_host is None:
        return None
    return url.raw_host, url.port or 80


async def _send_body(proto: ResponseHandler, body: AsyncIterator[bytes], chunked: bool) -> None:
    async for chunk in body:
        if not chunk:
            continue
        transport = proto.transport
        if transport is None or transport.is_closing():
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        if chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            transport.write(chunk)
        await web_aiohttp.drain(proto)
    if chunked:
        transport = proto.transport
        if transport is None or transport.is_closing():
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        transport.write(b"0\r\n\r\n")


class Deadlines:
    """Origin timeouts of the requests in flight, enforced by one task that wakes every ``tick``.

    ``asyncio.timeout`` or aiohttp's ``sock_read`` arm and cancel a timer per request (or per
    read), about 5% of a proxied request here (callgrind); a dict entry per request and one sweep
    per tick cost next to nothing, for a timeout that is late by at most ``tick``.
    """

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()

    def set(self, task: asyncio.Task[Any], when: float) -> None:
        if not task.done():
            self._due[task] = when

    def pause(self, task: asyncio.Task[Any]) -> None:
        """No deadline for ``task`` until the next :meth:`set` (it waits for its client, not the origin)."""
        self._due.pop(task, None)

    def clear(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``; True if it was cancelled because its deadline passed."""
        self._due.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for task in [task for task, when in self._due.items() if when <= now]:
                del self._due[task]
                self._expired.add(task)
                task.cancel()


@functools.lru_cache(maxsize=64)
def _timeout(connect: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect)


origin_failure_key = web.RequestKey("origin_failure_key", str)  # why, for the access log


def origin_error(
    request: web.Request, status: int, title: str, ray: str, detail: str, *, reason: str | None = None
) -> web.Response:
    """Cloudflare's 502/504 page; ``reason`` (short words) also goes on the request's access-log line."""
    if reason is not None:
        request[origin_failure_key] = reason
    return web.Response(
        status=status,
        text=pages.origin_error(status, title, request.host, ray, detail),
        content_type="text/html",
        headers={**edge_headers(ray), "Cache-Control": "private, max-age=0, no-store, no-cache, must-revalidate"},
    )


def unsendable(request: web.Request, ray: str, exc: UnsendableHead) -> web.Response:
    """The edge's 400 for a request head it cannot forward as received; the origin sees nothing."""
    request[origin_failure_key] = str(exc)
    return web.Response(
        status=400,
        text=pages.notice("Bad request", "The request headers cannot be forwarded to the origin as sent.", ray),
        content_type="text/html",
        headers={**edge_headers(ray), "Cache-Control": "no-store"},
    )


def _is_websocket(request: web.Request) -> bool:
    # only a GET can be a websocket handshake (RFC 6455 §4.1): an OPTIONS preflight let through
    # without Access must not turn into an upgrade the origin sees as an authenticated GET
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


async def _forward_websocket(
    request: web.Request,
    client: aiohttp.ClientSession,
    url: URL,
    upstream_headers: CIMultiDict[str],
    rule: IngressRule,
    ray: str,
    handshake_timeout: float,
) -> web.StreamResponse:
    if request.body_exists:
        # RFC 6455 §4.1: a handshake is a GET without a body. Forwarded, its head would promise the
        # origin a body the upgrade never sends, and the client would wait for a 504: refused here,
        # before the origin sees anything, and the connection closed since its framing is in doubt
        refusal = web.Response(
            status=400,
            text=pages.notice("Bad request", "A websocket handshake cannot carry a body.", ray),
            content_type="text/html",
            headers={**edge_headers(ray), "Cache-Control": "no-store"},
        )
        refusal.force_close()
        return refusal
    protocols = tuple(p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip())
    headers = CIMultiDict(
        (k, v) for k, v in upstream_headers.items() if k.lower() not in WS_HEADERS and k.lower() != "content-length"
    )
    try:
        async with asyncio.timeout(handshake_timeout):  # the ClientWSTimeout has no handshake bound
            upstream = await client.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10),
                autoclose=False,
                autoping=False,
                max_msg_size=0,
            )
    except aiohttp.WSServerHandshakeError as exc:
        return web.Response(status=exc.status or 502, headers=edge_headers(ray))
    except TimeoutError:
        return origin_error(
            request,
            504,
            "Gateway time-out",
            ray,
            "The origin did not accept the websocket in time.",
            reason="websocket handshake timed out",
        )
    except aiohttp.ClientError as exc:
        reason = failure_reason(exc)
        return origin_error(
            request,
            502,
            "Bad gateway",
            ray,
            f"The origin {rule.service} could not be reached ({reason}).",
            reason=reason,
        )
    downstream = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (), autoclose=False, autoping=False, max_msg_size=0
    )
    downstream.headers.update(edge_headers(ray))
    await downstream.prepare(request)

    async def pump(
        src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in src:
            match msg.type:
                case aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                case aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                case aiohttp.WSMsgType.PING:
                    await dst.ping(msg.data)
                case aiohttp.WSMsgType.PONG:
                    await dst.pong(msg.data)
                case aiohttp.WSMsgType.CLOSE:
                    break
        await dst.close(code=src.close_code or aiohttp.WSCloseCode.OK)

    tasks = [asyncio.create_task(pump(downstream, upstream)), asyncio.create_task(pump(upstream, downstream))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await downstream.close()
    return downstream
