"""What the handlers leave on a request for the journal, and the :class:`~fakeedge.record.Record` made of it.

Handlers note facts in the request's :class:`Trail` as they decide (:func:`judged` from the access
check, :func:`note` for a reason of their own, the forwarded headers from the proxy);
:func:`record` turns them, with the response, into one journal record once the answer is sent.
"""

from __future__ import annotations

import re
from html import unescape
from typing import TYPE_CHECKING, NamedTuple, Protocol

from aiohttp import web
from multidict import CIMultiDict

from .record import AnswerKind, Judged, Record, RequestLog, Why, WhyFacts, recorded
from .web_aiohttp import WholeAnswer
from .web_proxy import origin_failure_key
from .web_request import ray_key

if TYPE_CHECKING:
    from .config import App
    from .edge import Credential, Edge


class Admitted(Protocol):
    """What the journal reads of ``web_access.Admission`` (typed here so that the two modules
    do not import each other: ``web_access`` notes its facts through this module)."""

    @property
    def assertion(self) -> str | None: ...

    @property
    def credential(self) -> Credential | None: ...


class Forwarded(NamedTuple):
    """What the edge sent the origin, and on whose admission."""

    headers: CIMultiDict[str]
    admission: Admitted | None


class Trail:
    """What the handlers noted about one request, for its journal record and access-log line.

    One object per request, set up front by the edge's handler: the hooks write attributes
    rather than look keys up on the request (a missing key costs an exception there).
    """

    __slots__ = ("forwarded", "judged", "note")

    def __init__(self) -> None:
        self.judged: Judged | None = None  # the access check's facts and verdict
        self.note: str | None = None  # a reason that is no policy's
        self.forwarded: Forwarded | None = None  # set once the request goes to an origin


trail_key = web.RequestKey("trail_key", Trail)

_ERROR = re.compile(r'class="error"[^>]*>([^<]+)<')
_TITLE = re.compile(r"<h1>([^<]+)</h1>(?:<p>([^<]+)</p>)?")


def _trail(request: web.Request) -> Trail | None:
    return request._state.get(trail_key)  # request.get(): two calls more (web_aiohttp's contract)


def note(request: web.Request, reason: str) -> None:
    """Give the journal the reason for this request's answer, when it is no policy's."""
    trail = _trail(request)
    if trail is not None:
        trail.note = reason


def judged(request: web.Request, facts: Judged) -> None:
    """What the access check knew when it decided (``web_access.check``)."""
    trail = _trail(request)
    if trail is not None:
        trail.judged = facts


def record(
    log: RequestLog,
    request: web.Request,
    response: web.StreamResponse,
    edge: Edge,
    *,
    host: str,
    app: App | None,
    kind: AnswerKind,
    latency_ms: float,
    trail: Trail | None = None,
    why: WhyFacts | None = None,
) -> Record:
    """Append the journal record of ``request``, answered with ``response``, and return it.

    ``trail`` is the request's :class:`Trail` and ``why`` its :func:`why_facts` when the caller
    holds them (saves a lookup). The record keeps the facts as they are now (the clock, the
    response's ``Set-Cookie`` and ``Location``) and references to what does not change after the
    answer (the client's headers, the headers sent, the verdict); the rest is worked out when read.
    """
    if trail is None:
        trail = request[trail_key]
    forwarded = trail.forwarded
    if isinstance(response, WholeAnswer):  # an origin's answer: its headers are not made to be read here
        set_cookie = response.set_cookies()
        location = response.location()
    else:
        headers = response.headers
        set_cookie = tuple(headers.getall("Set-Cookie", ())) if "Set-Cookie" in headers else ()
        location = headers.get("Location")
    grant = claims = assertion = None
    if forwarded is not None:
        sent: CIMultiDict[str] | None = forwarded.headers
        admission = forwarded.admission
        if admission is not None:
            assertion = admission.assertion
            cred = admission.credential
            if cred is not None:
                claims = cred.claims
            if assertion and edge.oauth.grants:  # only with managed OAuth in use
                cred = cred or edge.credential(assertion)
                if cred is not None and cred.session is not None:
                    found = edge.oauth.grant_of_session(cred.session.nonce)
                    grant = found.id if found is not None else None
    else:
        sent = None
    rec = recorded(
        (
            request.method,
            host,
            request.raw_path,  # as the client sent it (and cheap: path_qs builds a URL)
            app.name if app is not None else None,
            request[ray_key],
            edge.clock.now(),
            log.next_seq(),
            response.status,
            kind,
            request.remote or "0.0.0.0",  # web_request.client_ip, inline
            latency_ms,
            request.headers,
            set_cookie,
            location,
            sent,
            claims,
            assertion,
            edge.service_token_by_client_id,
            grant,
        ),
        why if why is not None else why_facts(request, response, app, trail),
    )
    log.add(rec, sent is not None)
    return rec


def why_facts(request: web.Request, response: web.StreamResponse, app: App | None, trail: Trail) -> WhyFacts:
    """What the reason for ``request``'s answer is written from, as :class:`Why`'s fields."""
    reason = trail.note
    status = response.status
    judged = trail.judged
    if (
        reason is None
        and judged is None
        and trail.forwarded is None
        and status >= 400
        and isinstance(response, web.Response)
    ):
        reason = _page_reason(response)  # an edge page (login, callback, 400): its own words say why
    return (app, judged, reason, request.get(origin_failure_key) if status == 502 or status == 504 else None)


def why(request: web.Request, response: web.StreamResponse, app: App | None, trail: Trail | None = None) -> Why:
    """What the reason for ``request``'s answer is written from (:attr:`Record.reason`)."""
    return Why(*why_facts(request, response, app, trail if trail is not None else request[trail_key]))


def _page_reason(response: web.Response) -> str | None:
    text = response.text if response.body is not None and response.content_type == "text/html" else None
    if not text:
        return None
    found = _ERROR.search(text)
    if found:
        return unescape(found.group(1)).strip()
    found = _TITLE.search(text)
    if found:
        title, message = found.groups()
        return unescape(f"{title}: {message}" if message else title).strip()
    return None
