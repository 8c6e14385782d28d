"""The aiohttp application: one handler that plays the edge for every host, and its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator
from typing import TextIO
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from . import headers as h
from . import journal, pages, web_inspector
from .config import App
from .edge import Edge
from .env import base_url, shown_host
from .errors import ConfigError
from .policy import Verdict, normalize_path, split_host
from .tls import edge_context
from .web_access import Admission, answer_preflight, app_cookies, check, is_preflight, metadata_token
from .web_cdn_cgi import handle_certs, handle_get_identity
from .web_control import CONTROL_PREFIX, handle_control
from .web_login import handle_authorized, handle_login, handle_logout
from .web_proxy import (
    Deadlines,
    OriginPool,
    add_edge_request_headers,
    clean_request_headers,
    edge_headers,
    forward,
    new_ray,
)
from .web_request import NO_STORE, client_ip, client_key, edge_key, ray_key, scheme

log = logging.getLogger("fakeedge")


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


access_log_key = web.AppKey("access_log_key", AccessLog)
deadlines_key = web.AppKey("deadlines_key", Deadlines)
pool_key = web.AppKey("pool_key", OriginPool)


def _notice(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=pages.notice(title, message, request[ray_key]),
        content_type="text/html",
        headers={**edge_headers(request[ray_key]), **NO_STORE},
    )


async def handle_team(request: web.Request, edge: Edge) -> web.StreamResponse:
    """The team domain: login pages, certs, get-identity, logout (spec §1.3, §3, §4)."""
    path = request.path
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


async def handle(request: web.Request) -> web.StreamResponse:
    """Every request, whatever the host: the team domain, Access, then the ingress rules."""
    started = time.perf_counter()
    ray = request[ray_key] = new_ray()
    trail = request[journal.trail_key] = journal.Trail()
    response, app, kind, host = await _answer(request, ray)
    edge = request.app[edge_key]
    journal_log = edge.recorder
    edge_log = request.app[access_log_key]
    if journal_log is None and not edge_log.enabled:
        return response
    elapsed = (time.perf_counter() - started) * 1000
    if journal_log is not None and kind != "control":  # the inspector's own calls would drown the rest
        why = journal.record(
            journal_log, request, response, edge, host=host, app=app, kind=kind, latency_ms=elapsed
        ).why
    else:
        why = journal.why(request, response, app)
    if edge_log.enabled:
        verdict = trail.judged.verdict if trail.judged is not None else None
        policy = verdict.policy.name if verdict is not None and verdict.policy is not None else "-"
        reason = why.text(short=True).replace('"', "'")
        said = f' reason="{reason}"' if reason else ""
        edge_log.write(
            f"{request.method} {request.host}{request.raw_path[:200]} {response.status} "
            f"app={app.name if app is not None else '-'} policy={policy} "
            f"decision={verdict.outcome if verdict is not None else kind}{said} {elapsed:.1f}ms ray={ray}"
        )
    return response


async def _answer(request: web.Request, ray: str) -> tuple[web.StreamResponse, App | None, str, str]:
    """The response, the app that covered the request, what kind of answer it was, and the host."""
    edge = request.app[edge_key]
    parsed = split_host(request.host)
    if parsed is None or not request.raw_path.startswith("/"):
        # a Host that is no host name, or an absolute-form target whose host could differ from
        # the Host header Access decided on: refuse rather than guess which one the origin reads
        journal.note(
            request,
            "the Host header is no host name" if parsed is None else "the request target is not a path (absolute-form)",
        )
        return (
            _notice(request, 400, "Bad request", "The request's host or target is malformed."),
            None,
            "bad-request",
            request.host,
        )
    host = parsed[0]
    if host == edge.team_hostname:
        kind = "control" if request.path.startswith(CONTROL_PREFIX) else "team"
        return await handle_team(request, edge), None, kind, host
    # apps are matched on the path an origin would serve: dot segments and "//" resolved
    path = normalize_path(request.path)
    if path.startswith("/cdn-cgi/access/"):
        answer = await handle_app_cdn_cgi(request, edge, host, path)
        if answer is not None:
            return answer, None, "cdn-cgi", host
    match = edge.index.match(host, path)
    if match is None:
        journal.note(request, "no Access application covers this host and path")
        return await _to_origin(request, edge, host, path, None, None), None, "route", host
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
            return outcome, app, "app", host
        admission = outcome
    response = await _to_origin(request, edge, host, path, admission, app)
    return response, app, "app", host


async def _to_origin(
    request: web.Request, edge: Edge, host: str, path: str, admission: Admission | None, app: App | None
) -> web.StreamResponse:
    ray = request[ray_key]
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
        if admission.set_cookie is not None and app is not None:
            extra = app_cookies(request, app, *admission.set_cookie)
    request[journal.trail_key].forwarded = journal.Forwarded(upstream_headers, admission)
    # the path as the client sent it, unless it needed normalising: then the form Access judged
    target = request.raw_path
    if path != request.path:
        query = request.raw_path.partition("?")[2]
        target = quote(path, safe="/:@!$&'()*+,;=-._~") + ("?" + query if query else "")
    return await forward(
        request,
        request.app[client_key],
        rule,
        upstream_headers,
        target=target,
        ray=ray,
        read_timeout=edge.config.origin_timeout,
        deadlines=request.app[deadlines_key],
        extra_response_headers=extra,
        pool=request.app[pool_key],
    )


def create_app(edge: Edge, *, access_log: AccessLog | None = None) -> web.Application:
    """The aiohttp application for ``edge``; its upstream ClientSession and origin pool live and die with it."""
    app = web.Application(client_max_size=0)
    app[edge_key] = edge
    app[access_log_key] = access_log or AccessLog(enabled=False)

    async def upstream(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=False)
        async with aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # the origin gets the client's headers, not aiohttp's defaults
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        ) as client:
            app[client_key] = client
            pool = app[pool_key] = OriginPool()
            try:
                yield
            finally:
                pool.close()
        if access_log is not None:
            access_log.flush()

    async def watch_deadlines(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(app[deadlines_key].run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    streams = app[web_inspector.streams_key] = web_inspector.Streams()
    app.on_shutdown.append(streams.close)  # event streams end before the runner waits for handlers
    app[deadlines_key] = Deadlines(tick=min(1.0, max(0.02, edge.config.origin_timeout / 10)))
    app.cleanup_ctx.append(upstream)
    app.cleanup_ctx.append(watch_deadlines)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


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
) -> tuple[web.AppRunner, tuple[str, int]]:
    """Start the edge on host:port (0 for any free port) and return the runner and bound address.

    Args:
        edge: the edge to serve.
        host: the plain-HTTP listener's address; None for none (TLS only).
        port: its port; 0 for any free one.
        access_log: where to write one line per request, if anywhere.
        tls_listen: (host, port) of a TLS listener as well; its bound port is in ``edge.tls_ports``.
        ssl_context: the TLS listener's context; by default the local CA of ``keys_dir`` with a
            leaf per configured name (:func:`fakeedge.tls.edge_context`).

    Returns:
        The runner (``cleanup()`` stops everything) and the plain listener's bound address, or
        the TLS listener's when there is no plain one.

    The team domain defaults to ``https://<tls host>:<bound port>`` when there is a TLS listener,
    else ``http://<host>:<bound port>``; every URL the edge generates uses the address actually bound.

    Raises:
        OSError: a listener cannot bind.
        FakeEdgeError: the local CA cannot be loaded, or an app uses the team domain's host.
    """
    runner = web.AppRunner(create_app(edge, access_log=access_log), access_log=None, handle_signals=False)
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
            if tls_listen is not None:
                edge.team_domain = base_url("https", tls_listen[0], bound[-1][1])
            else:
                edge.team_domain = base_url("http", host or "", bound[0][1])
        check_hosts(edge)
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound[0]
