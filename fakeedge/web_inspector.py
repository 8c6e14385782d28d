"""The inspector: ``<team_domain>/cdn-cgi/fakeedge/``, the journal live in a page, and its event stream.

Served by the control API's handler (:mod:`fakeedge.web_control`), so under its rule: loopback
clients only, or ``admin_token`` (the browser asks for it as a password). The page is one
template with plain JavaScript that reads the journal through ``GET events`` (server-sent events)
and acts through the control API's JSON POSTs; nothing in it is served to another site: no CORS,
``frame-ancestors 'none'``, and scripts only with this response's nonce.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

from .edge import Edge
from .headers import edge_headers
from .record import Record
from .web_request import NO_STORE, html_answer, json_answer, ray_key

HEARTBEAT = 15.0  # seconds between comments on an idle stream: a gone client shows up as a failed write
# on every answer of the control API and the page: not readable by, or embeddable in, another site
PRIVATE = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_TEMPLATE = files("fakeedge").joinpath("templates/inspector.html").read_text(encoding="utf-8")


class Streams:
    """The open event streams of one application, ended when it shuts down (else it would wait on them)."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()

    async def close(self, app: web.Application) -> None:
        self.closing.set()


streams_key = web.AppKey("streams_key", Streams)


async def handle_page(request: web.Request, edge: Edge) -> web.Response:
    """``GET /cdn-cgi/fakeedge/``: the inspector page."""
    nonce = secrets.token_urlsafe(16)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    page = _TEMPLATE.replace("{{nonce}}", nonce).replace("{{team}}", _html_text(edge.team_domain))
    return html_answer(request, page, headers={**PRIVATE, "Content-Security-Policy": csp})


def _html_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


async def handle_events(request: web.Request, edge: Edge) -> web.StreamResponse:
    """``GET /cdn-cgi/fakeedge/events[?since=<seq>]``: the journal as server-sent events.

    Each record is one ``request`` event (``id`` its seq, ``data`` its masked JSON), those kept
    above ``since`` (or ``Last-Event-ID`` on a reconnection) first, then each new one as it
    happens. With the journal off, one ``off`` event, and the stream ends.
    """
    headers = {
        **edge_headers(request[ray_key]),
        **NO_STORE,
        **PRIVATE,
        "Content-Type": "text/event-stream",
        "X-Accel-Buffering": "no",
    }
    last_text = request.headers.get("Last-Event-ID") or request.query.get("since", "0")
    if not last_text.isdigit():
        error = f"since: expected the seq of the last request seen (0 or more), got {last_text!r}"
        return json_answer(request, {"error": error}, 400, PRIVATE)
    last = int(last_text)
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    log = edge.recorder
    if log is None:
        await response.write(b'event: off\ndata: {"error": "the journal is off (journal: 0)"}\n\n')
        return response
    changed = asyncio.Event()

    def wake(record: Record) -> None:
        changed.set()

    stop = log.subscribe(wake)
    closing = request.app[streams_key].closing
    # open for as long as the page is: not a request a sync test's edge.requests should wait for
    # (the journal never records the inspector's own calls), or every read would wait its full second
    edge.handling -= 1
    try:
        while not closing.is_set():
            changed.clear()
            out = []
            for record in log.since(last):
                out.append(f"id: {record.seq}\nevent: request\ndata: {json.dumps(record.to_json())}\n\n")
                last = record.seq
            await response.write("".join(out).encode() if out else b": idle\n\n")
            waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(closing.wait())]
            try:
                await asyncio.wait(waiters, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
    except (ConnectionResetError, ConnectionError):
        pass  # the page was closed
    finally:
        stop()
        edge.handling += 1
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


PAGES: dict[str, Callable[[web.Request, Edge], Awaitable[web.StreamResponse]]] = {
    "": handle_page,
    "events": handle_events,
}
