"""The aiohttp application: one handler that plays the edge for every host, and its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import ssl
import sys
import time
from collections.abc import AsyncIterator
from typing import TextIO
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from . import headers as h
from . import journal, pages, web_aiohttp, web_inspector, web_oauth
from .config import App, Config
from .edge import Edge
from .env import listener_url, shown_host
from .errors import ConfigError
from .headers import edge_headers
from .policy import Verdict, normalize_path, split_host
from .record import REASON_CACHE_LIMIT, AnswerKind, Judged, RequestLog, Why, WhyFacts
from .tls import edge_context
from .web_access import Admission, answer_preflight, app_cookies, check, is_preflight, metadata_token, oauth_bearer
from .web_cdn_cgi import handle_certs, handle_get_identity
from .web_control import CONTROL_PREFIX, handle_control
from .web_login import handle_authorized, handle_login, handle_logout
from .web_proxy import (
    Deadlines,
    OriginPool,
    add_edge_request_headers,
    clean_request_headers,
    forward,
    new_ray,
)
from .web_request import client_ip, client_key, edge_key, html_answer, ray_key, scheme

log = logging.getLogger("fakeedge")
# requests in flight get this long on shutdown: cut, flushed and gone before `docker stop` sends
# SIGKILL (10 s after SIGTERM by default)
SHUTDOWN_TIMEOUT = 8.0


class AccessLog:
    """One line per request, buffered and written at most once a second.

    An unbuffered write per request costs about 30% of throughput on these machines.
    """

    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, flush_every: float = 1.0, max_lines: int = 1000
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.flush_every = flush_every
        self.max_lines = max_lines
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self.max_lines:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_every, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            self.stream.write("\n".join(self._lines) + "\n")
            self.stream.flush()
            self._lines.clear()


pool_key = web.AppKey("pool_key", OriginPool)


def _notice(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return html_answer(request, pages.notice(title, message, request[ray_key]), status)


def _launcher(request: web.Request, edge: Edge) -> web.Response:
    """The team domain's root: links to the apps, on the port and scheme this request came in on."""
    port = request.host.rpartition(":")[2] if not request.host.endswith("]") and ":" in request.host else ""
    links = []
    for app in edge.config.apps:
        for dest in app.destinations:
            if "*" not in dest.host:  # a wildcard host names no page a browser can open
                path = dest.path.split("*", 1)[0] or "/"
                links.append((app.name, f"{scheme(request)}://{dest.host}{':' + port if port else ''}{path}"))
    return html_answer(request, pages.launcher(edge.team_domain, links, request[ray_key]))


async def handle_team(request: web.Request, edge: Edge) -> web.StreamResponse:
    """The team domain: login pages, certs, get-identity, logout (spec §1.3, §3, §4)."""
    path = request.path
    if path == "/":
        return _launcher(request, edge)
    if path.startswith("/cdn-cgi/access/login/"):
        return await handle_login(request, edge)
    if path == "/cdn-cgi/access/certs":
        return await handle_certs(request, edge)
    if path == "/cdn-cgi/access/get-identity":
        return await handle_get_identity(request, edge)
    if path == "/cdn-cgi/access/logout":
        return await handle_logout(request, edge, team=True)
    if path.startswith(CONTROL_PREFIX):
        return await handle_control(request, edge)
    return _notice(request, 404, "Not found", f"{edge.team_domain} serves only /cdn-cgi/access/* pages.")


async def handle_app_cdn_cgi(request: web.Request, edge: Edge, host: str, path: str) -> web.StreamResponse | None:
    """``/cdn-cgi/access/*`` answered by the edge on an app host (spec §4)."""
    match path:
        case "/cdn-cgi/access/authorized":
            return await handle_authorized(request, edge)
        case "/cdn-cgi/access/certs":
            return await handle_certs(request, edge)
        case "/cdn-cgi/access/get-identity":
            return await handle_get_identity(request, edge, app_host=host)
        case "/cdn-cgi/access/logout":
            return await handle_logout(request, edge, team=False)
    return None


class Front:
    """What every request reads: the edge, its access log, and its upstream once the app has started."""

    __slots__ = ("access_log", "client", "deadlines", "edge", "pool")

    def __init__(self, edge: Edge, access_log: AccessLog, deadlines: Deadlines) -> None:
        self.edge = edge
        self.access_log = access_log
        self.deadlines = deadlines
        self.client: aiohttp.ClientSession | None = None  # set by the app's startup
        self.pool: OriginPool | None = None


front_key = web.AppKey("front_key", Front)


async def handle(front: Front, request: web.Request) -> web.StreamResponse:
    """Every request, whatever the host: the team domain, Access, then the ingress rules."""
    edge = front.edge
    edge.handling += 1
    try:
        return await _handle(request, front, edge)
    finally:
        edge.handling -= 1


async def _handle(request: web.Request, front: Front, edge: Edge) -> web.StreamResponse:
    started = time.perf_counter()
    # into the request's own dict, as request[key] = ... does after a check per call (web_aiohttp)
    state = request._state
    ray = state[ray_key] = new_ray()
    trail = state[journal.trail_key] = journal.Trail()
    edge_log = front.access_log
    try:
        response, app, kind, host = await _answer(request, front, edge, ray, trail)
    except asyncio.CancelledError:
        # the client went away (aiohttp cancels its handler): logged as nginx and Cloudflare do, 499
        if edge_log.enabled:
            elapsed = (time.perf_counter() - started) * 1000
            edge_log.write(
                _line(
                    request.method,
                    request.host,
                    request.raw_path,
                    499,
                    None,
                    None,
                    "client-closed",
                    _NO_WHY,
                    elapsed,
                    ray,
                )
            )
        if edge.recorder is not None:
            _journal_departed(request, edge, edge.recorder, started)
        raise
    journal_log = edge.recorder
    if kind == "favicon" or (journal_log is None and not edge_log.enabled):
        return response
    elapsed = (time.perf_counter() - started) * 1000  # one clock read for the journal and the log
    why = journal.why_facts(request, response, app, trail)
    if journal_log is not None and kind != "control":  # the inspector's own calls would drown the rest
        journal.record(
            journal_log,
            request,
            response,
            edge,
            host=host,
            app=app,
            kind=kind,
            latency_ms=elapsed,
            trail=trail,
            why=why,
        )
    if edge_log.enabled:
        edge_log.write(
            _line(
                request.method,
                request.host if kind != "bad-request" else _shown_host(request.host),
                request.raw_path,
                response.status,
                app,
                trail.judged,
                kind,
                why,
                elapsed,
                ray,
            )
        )
    return response


def _journal_departed(request: web.Request, edge: Edge, journal_log: RequestLog, started: float) -> None:
    """Journal a request whose client left before its answer, as status 499 like the access log."""
    journal.note(request, "the client closed the connection before the answer was complete")
    parsed = split_host(request.host)
    host = parsed[0] if parsed is not None else request.host
    match = edge.index.match(host, normalize_path(request.raw_path.partition("?")[0])) if parsed else None
    journal.record(
        journal_log,
        request,
        web.Response(status=499),
        edge,
        host=host,
        app=match.app if match is not None else None,
        kind="client-closed",
        latency_ms=(time.perf_counter() - started) * 1000,
    )


_NO_WHY: WhyFacts = (None, None, None, None)


def _shown_host(host: str) -> str:
    """A Host that is no host name, as its log line shows it: percent-encoded but for what a name,
    a port or an IPv6 literal holds, so that it writes no field, line break or escape of its own."""
    return quote(host.encode("utf-8", "surrogateescape"), safe=":[]")


def _line(
    method: str,
    host: str,
    raw_path: str,
    status: int,
    app: App | None,
    judged: Judged | None,
    kind: AnswerKind,
    why: WhyFacts,
    elapsed: float,
    ray: str,
) -> str:
    """The access-log line of an answered request."""
    verdict = judged.verdict if judged is not None else None
    if (
        verdict is not None
        and judged is not None
        and app is not None
        and why[2] is None
        and why[3] is None
        and not judged.bad_service_token
        and verdict.outcome not in ("deny", "forbidden")  # their reason names who and what failed
    ):
        # the hot path: an app's cached verdict, whose part of the line is the same every time
        key = (id(app), id(verdict))
        known = _VERDICT_PARTS.get(key)
        if known is not None and known[0] is app and known[1] is verdict:
            part = known[2]
        else:
            part = _part(app, judged, kind, why)
            if len(_VERDICT_PARTS) >= REASON_CACHE_LIMIT:
                _VERDICT_PARTS.clear()
            _VERDICT_PARTS[key] = (app, verdict, part)
    else:
        part = _part(app, judged, kind, why)
    return f"{method} {host}{raw_path[:200]} {status} {part} {elapsed:.1f}ms ray={ray}"


# An app's verdicts recur (the edge caches them per session and per token): the line's
# "app=... policy=... decision=... reason=..." written once per (app, verdict), both kept here so
# that their ids stay theirs
_VERDICT_PARTS: dict[tuple[int, int], tuple[App, Verdict, str]] = {}


def _part(app: App | None, judged: Judged | None, kind: AnswerKind, why: WhyFacts) -> str:
    """The line's ``app=... policy=... decision=...`` and ``reason="..."``."""
    verdict = judged.verdict if judged is not None else None
    decision: str
    if verdict is None:
        policy, decision = "-", kind
    else:
        policy = verdict.policy.name if verdict.policy is not None else "-"
        decision = verdict.outcome
    app_name = app.name if app is not None else "-"
    return f"app={app_name} policy={policy} decision={decision}{_said(Why(*why).text(short=True))}"


@functools.lru_cache(maxsize=1024)
def _said(reason: str) -> str:
    """The line's ``reason="..."`` part: the hot path's reasons are few and recur (cached verdicts)."""
    return ' reason="{}"'.format(reason.replace('"', "'")) if reason else ""


# the Host headers an edge sees are few: each is checked once (a tuple or None, immutable); bounded
# so that a client sending a new one per request only churns it
_split_host = functools.lru_cache(maxsize=256)(split_host)


_SPOKEN = (aiohttp.HttpVersion11, aiohttp.HttpVersion10)  # `in` tries identity first: the C parser hands out these


def _unspoken(request: web.Request, version: aiohttp.HttpVersion) -> web.StreamResponse:
    """505 to a request line claiming another version than HTTP/1.0 or 1.1 (RFC 9110 §15.6.6).

    aiohttp's two parsers pass different ones (the C parser HTTP/0.9, including a bare ``GET /``,
    and HTTP/2.0; the pure-Python one any 1.x to 9.9), which the edge would forward as HTTP/1.1 and
    answer in the claimed version's status line: refused the same whichever parser runs, in HTTP/1.1,
    and the connection closed, since what such a client sends next is no HTTP/1.1 request.
    """
    journal.note(request, f"the request line claims HTTP/{version[0]}.{version[1]}")
    web_aiohttp.answer_in_http11(request)
    response = _notice(
        request, 505, "HTTP version not supported", "The edge speaks HTTP/1.0 and HTTP/1.1 on this listener."
    )
    response.force_close()
    return response


async def _answer(
    request: web.Request, front: Front, edge: Edge, ray: str, trail: journal.Trail
) -> tuple[web.StreamResponse, App | None, AnswerKind, str]:
    """The response, the app that covered the request, what kind of answer it was, and the host."""
    version = request.version
    if version not in _SPOKEN:
        return _unspoken(request, version), None, "bad-request", request.host
    parsed = _split_host(request.host)
    raw_path = request.raw_path
    if parsed is None or not raw_path.startswith("/") or "#" in raw_path:
        # a Host that is no host name, or an absolute-form target whose host could differ from
        # the Host header Access decided on: refuse rather than guess which one the origin reads.
        # A "#" has no place in a request target (RFC 9112 §3.2): origins cut the path there,
        # so "/private#/../public" would be judged as one path and served as another
        journal.note(
            request,
            "the Host header is no host name"
            if parsed is None
            else "the request target is not a path (absolute-form)"
            if not raw_path.startswith("/")
            else "the request target holds a '#' (a fragment has no place in a request)",
        )
        return (
            _notice(request, 400, "Bad request", "The request's host or target is malformed."),
            None,
            "bad-request",
            request.host,
        )
    host = parsed[0]
    if host == edge.team_hostname:
        if request.path == "/favicon.ico":
            # browsers ask on every page of the team domain: an empty answer they may cache, left
            # out of the access log (and the journal), where it would be a 404 line after every sign-in page
            return (
                web.Response(status=204, headers={**edge_headers(ray), "Cache-Control": "max-age=86400"}),
                None,
                "favicon",
                host,
            )
        kind: AnswerKind = "control" if request.path.startswith(CONTROL_PREFIX) else "team"
        return await handle_team(request, edge), None, kind, host
    # apps are matched on the raw path as Cloudflare normalises it (spec §14.1): "\\" and "//"
    # are "/", dot segments resolved, and "%2F" stays data (aiohttp's request.path decodes it)
    path = normalize_path(raw_path.partition("?")[0])
    if path.startswith("/cdn-cgi/access/"):
        answer = await handle_app_cdn_cgi(request, edge, host, path)
        if answer is not None:
            return answer, None, "cdn-cgi", host
    if path.startswith(web_oauth.PATHS):
        answer = await web_oauth.handle(request, edge, host, path)
        if answer is not None:
            return answer, None, "oauth", host
    match = edge.index.match(host, path)
    if match is None:
        if edge.config.deny_unmatched_requests and not _exempted(host, edge.config):
            journal.note(request, "no Access application covers this host and deny_unmatched_requests blocks it")
            return _requires_access(request), None, "unprotected", host
        journal.note(request, "no Access application covers this host and path")
        return await _to_origin(request, front, trail, ray, host, path, None, None), None, "route", host
    app = match.app
    if request.method == "HEAD" and request.headers.get(h.METADATA_REQUEST) == "true":
        journal.note(request, "cloudflared's metadata request: the edge answers with the app's match token")
        token = metadata_token(request, edge, match)
        return web.Response(headers={**edge_headers(ray), h.METADATA: token}), app, "metadata", host
    if is_preflight(request):
        if not app.options_preflight_bypass:
            answer = answer_preflight(request, app)
            journal.note(
                request,
                "CORS preflight answered by Access (cors_headers)"
                if answer.status == 200
                else "CORS preflight refused: "
                + ("the app has no cors_headers" if app.cors_headers is None else "not allowed by cors_headers"),
            )
            return answer, app, "preflight", host
        journal.note(request, "CORS preflight passed to the origin (options_preflight_bypass)")
        admission = Admission(Verdict("bypass"), country=edge.config.default_country)
    else:
        outcome = check(request, edge, match)
        if isinstance(outcome, web.Response):
            refused = web_oauth.refusal(request, edge, app, outcome)  # spec §14.2: 401 for API clients
            if refused is not outcome:
                journal.note(
                    request,
                    "managed OAuth: the oauth: token is expired, revoked or unknown (401, invalid_token)"
                    if "invalid_token" in refused.headers.get("WWW-Authenticate", "")
                    else "managed OAuth: a client that is no browser gets 401 and the metadata URL, not the login",
                )
            return refused, app, "app", host
        admission = outcome
    response = await _to_origin(request, front, trail, ray, host, path, admission, app)
    return response, app, "app", host


REQUIRES_ACCESS_MESSAGE = (
    "Forbidden. This resource requires Cloudflare Access protection. Please contact your system administrator."
)


def _exempted(host: str, config: Config) -> bool:
    """A host of a zone exempted from "Require Access protection" (spec §14.4)."""
    return any(host == zone or host.endswith("." + zone) for zone in config.deny_unmatched_requests_exempted_zone_names)


def _requires_access(request: web.Request) -> web.Response:
    """The block page of a host no Access app covers, under ``deny_unmatched_requests`` (spec §14.4).

    Cloudflare documents the page, not its status or text: a 403 Forbidden page, with its
    ``json_data`` (no app, so an empty ``aud``), the origin never reached.
    """
    return html_answer(request, pages.forbidden("", request[ray_key], REQUIRES_ACCESS_MESSAGE), 403)


async def _to_origin(
    request: web.Request,
    front: Front,
    trail: journal.Trail,
    ray: str,
    host: str,
    path: str,
    admission: Admission | None,
    app: App | None,
) -> web.StreamResponse:
    edge = front.edge
    client = front.client
    assert client is not None  # set while the app runs
    rule = edge.route(host, path)
    status = rule.status
    if status is not None:
        journal.note(request, f"the ingress rule for this host and path answers {status} (http_status)")
        return web.Response(status=status, headers=edge_headers(ray))
    upstream_headers = clean_request_headers(request, drop=app.read_service_tokens_from_header if app else None)
    country = admission.country if admission else edge.config.default_country
    add_edge_request_headers(
        upstream_headers, request, ip=client_ip(request), country=country, ray=ray, scheme=scheme(request)
    )
    extra: list[tuple[str, str]] = []
    if admission is not None:
        if admission.assertion:
            upstream_headers[h.JWT_ASSERTION] = admission.assertion
        if admission.email:
            upstream_headers[h.AUTHENTICATED_USER_EMAIL] = admission.email
        if app is not None and web_oauth.enabled(app) and oauth_bearer(request) is not None:
            upstream_headers.popall("Authorization", None)  # an Access credential, like CF_Binding
        if admission.set_cookie is not None and app is not None:
            extra = app_cookies(request, app, *admission.set_cookie)
    trail.forwarded = journal.Forwarded(upstream_headers, admission)
    return await forward(
        request,
        client,
        rule,
        upstream_headers,
        # the URL as the client sent it: Cloudflare's default normalisation scope is "incoming"
        # only (spec §14.1), so origins see what they would see behind Cloudflare
        target=request.raw_path,
        ray=ray,
        read_timeout=edge.config.origin_timeout,
        deadlines=front.deadlines,
        extra_response_headers=extra,
        pool=front.pool,
    )


def create_app(edge: Edge, *, access_log: AccessLog | None = None) -> web.Application:
    """The aiohttp application for ``edge``: its state, and its upstream ClientSession and origin pool.

    It has no routes: :class:`EdgeRunner` serves it, every request going to :func:`handle`.
    """
    app = web.Application(client_max_size=0)
    app[edge_key] = edge
    deadlines = Deadlines(tick=min(1.0, max(0.02, edge.config.origin_timeout / 10)))
    front = app[front_key] = Front(edge, access_log or AccessLog(enabled=False), deadlines)

    async def upstream(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=False)
        async with aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # the origin gets the client's headers, not aiohttp's defaults
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        ) as client:
            app[client_key] = front.client = client
            pool = app[pool_key] = front.pool = OriginPool()
            try:
                yield
            finally:
                pool.close()
                front.client = front.pool = None
        if access_log is not None:
            access_log.flush()

    async def watch_deadlines(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(deadlines.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    streams = app[web_inspector.streams_key] = web_inspector.Streams()
    app.on_shutdown.append(streams.close)  # event streams end before the runner waits for handlers
    app.cleanup_ctx.append(upstream)
    app.cleanup_ctx.append(watch_deadlines)
    return app


class EdgeRunner(web.ServerRunner):
    """``app`` on aiohttp's low-level server: every request straight to :func:`handle`.

    An ``AppRunner`` would resolve each request through the application's router, build its match
    info and look up middlewares, all for one catch-all route: about 30k instructions a request
    (bench/README.md). The application keeps what it is for, the edge's state and lifetime: it
    starts up before the server, shuts down (``on_shutdown``) while the server waits for requests
    in flight, and is cleaned up last, in the order an ``AppRunner`` keeps.
    """

    def __init__(self, app: web.Application, *, handler_cancellation: bool, shutdown_timeout: float) -> None:
        self.app = app
        # web.Server's keywords beyond the factory go to each connection's RequestHandler
        server = web.Server(
            # the factory makes web.Request objects (EdgeRequest), not only BaseRequest ones
            functools.partial(handle, app[front_key]),
            request_factory=web_aiohttp.request_factory(app),
            handler_cancellation=handler_cancellation,
            access_log=None,
        )
        super().__init__(server, shutdown_timeout=shutdown_timeout)

    async def setup(self) -> None:
        # as AppRunner does: the startup hooks may still set state (the upstream session, the pool)
        self.app.on_startup.freeze()
        await self.app.startup()
        self.app.freeze()
        await super().setup()

    async def shutdown(self) -> None:
        await self.app.shutdown()

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            await self.app.cleanup()


FDS_RESERVED = 32  # descriptors not for connections: listeners, the loop, stdio, keys, certificates


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one, as production servers do; return it.

    Every proxied connection holds two descriptors (client and origin), so the usual soft limit
    of 1024 caps the edge near 500 concurrent connections while the hard limit allows far more.
    A limit that cannot be raised is left as it is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_ceiling(open_files: int) -> int | None:
    """How many proxied connections fit in ``open_files`` descriptors (None: no limit)."""
    if open_files == resource.RLIM_INFINITY:
        return None
    return max(0, (open_files - FDS_RESERVED) // 2)


def check_hosts(edge: Edge) -> None:
    """Refuse an app on the team domain's host: their cookies would share one name and host."""
    for i, app in enumerate(edge.config.apps):
        for dest in app.destinations:
            if dest.host == edge.team_hostname:
                raise ConfigError(
                    edge.config.source,
                    f"apps[{i}].domain",
                    f"{dest.host!r} is the team domain's host ({edge.team_domain}); give the app another name "
                    "(for instance localhost for the app and 127.0.0.1 for the team domain)",
                )


async def start(
    edge: Edge,
    host: str | None,
    port: int,
    *,
    access_log: AccessLog | None = None,
    tls_listen: tuple[str, int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> tuple[EdgeRunner, tuple[str, int]]:
    """Start the edge on host:port (0 for any free port) and return the runner and bound address.

    Args:
        edge: the edge to serve.
        host: the plain-HTTP listener's address; None for none (TLS only).
        port: its port; 0 for any free one.
        access_log: where to write one line per request, if anywhere.
        tls_listen: (host, port) of a TLS listener as well; its bound port is in ``edge.tls_ports``.
        ssl_context: the TLS listener's context; by default the local CA of ``keys_dir`` with a
            leaf per configured name (:func:`fakeedge.tls.edge_context`).
        shutdown_timeout: how long ``runner.cleanup()`` lets requests in flight finish (after it
            stops accepting) before cutting them.

    Returns:
        The runner (``cleanup()`` stops everything) and the plain listener's bound address, or
        the TLS listener's when there is no plain one.

    The team domain defaults to ``https://<tls host>:<bound port>`` when there is a TLS listener,
    else ``http://<host>:<bound port>``; every URL the edge generates uses the address actually bound.

    Raises:
        OSError: a listener cannot bind.
        FakeEdgeError: the local CA cannot be loaded, or an app uses the team domain's host.
    """
    # handler_cancellation: a client that leaves cancels its request, so the forwarder closes the
    # origin connection and the origin sees the disconnect, as at Cloudflare (a 499 in its logs)
    runner = EdgeRunner(
        create_app(edge, access_log=access_log), handler_cancellation=True, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        bound: list[tuple[str, int]] = []
        if host is not None:
            await web.TCPSite(runner, host, port, backlog=1024).start()
            bound.append(runner.addresses[0][:2])
            edge.ports.add(bound[-1][1])
        if tls_listen is not None:
            tls_host, tls_port = tls_listen
            if ssl_context is None:
                team_host = urlsplit(edge.team_domain).hostname or shown_host(tls_host)
                ssl_context = edge_context(edge.config, team_host)
            before = len(runner.addresses)
            await web.TCPSite(runner, tls_host, tls_port, ssl_context=ssl_context, backlog=1024).start()
            bound.append(runner.addresses[before][:2])
            edge.ports.add(bound[-1][1])
            edge.tls_ports.add(bound[-1][1])
        if not edge.team_domain:
            http = (host, bound[0][1]) if host is not None else None
            edge.team_domain = listener_url(http, (tls_listen[0], bound[-1][1]) if tls_listen is not None else None)
        check_hosts(edge)
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound[0]
