"""Helpers for tests that talk to a fakeedge on loopback: a running edge, name resolution, sign-in.

The pytest plugin (:mod:`fakeedge.pytest_plugin`) is a thin layer over :class:`EdgeFactory`; the
same objects work without pytest::

    async with EdgeFactory() as start_edge:
        edge = await start_edge({"team": "acme", "apps": [...], "ingress": [...]})
        client = await edge.login("alice@acme.test", app="Admin")
        async with client.get(edge.url("Admin", "/api")) as resp: ...
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import hashlib
import html
import inspect
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, overload
from urllib.parse import urljoin

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from . import headers as h
from .audit import Accept, Report, run_audit
from .clock import Clock
from .config import USER_KEYS, App, Config, parse_config, parse_duration
from .edge import Edge
from .errors import FakeEdgeError, UnknownName
from .faults import CertsFault, certs_fault
from .keys import KeyStore, SigningKey
from .mint import mint as mint_token
from .origins import Origin, classify, serve_origin
from .policy import Facts, decide
from .record import RequestLog
from .tls import LocalCA
from .web_app import EdgeRunner, start

__all__ = [
    "ConfigInput",
    "EdgeFactory",
    "FakeEdge",
    "FakeEdgeFactory",
    "LoginRefused",
    "LoopbackResolver",
    "Starting",
    "UnknownName",
    "allow",
    "browser_login",
    "loopback_session",
    "one_app",
]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_OTP_ID = re.compile(r'name="otp_id" value="([^"]+)"')
_ERROR = re.compile(r'class="error"[^>]*>([^<]+)<')
PERSONA_KEYS = tuple(k for k in USER_KEYS if k != "email")  # a persona: a config user without its address
MAX_LOGIN_HOPS = 12  # app -> login page -> post -> callback (-> eager chain hops) -> back to the app


class LoginRefused(FakeEdgeError):
    """The sign-in flow did not end with an app cookie: the app or the team domain said no."""


class LoopbackResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1, so that ``http://admin.acme.test:PORT/`` reaches a local edge.

    Args:
        ports: optional mapping of port numbers to rewrite (e.g. ``{443: 8443}``), for URLs that
            use a default port while the edge listens on another one.
    """

    def __init__(self, ports: dict[int, int] | None = None) -> None:
        self.ports = ports or {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.ports.get(port, port),
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


def loopback_session(**kwargs: Any) -> aiohttp.ClientSession:
    """A ClientSession that resolves every host to 127.0.0.1 and keeps cookies for IP hosts too."""
    connector = aiohttp.TCPConnector(resolver=LoopbackResolver(kwargs.pop("ports", None)), ssl=kwargs.pop("ssl", True))
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)


async def browser_login(
    session: aiohttp.ClientSession, url: str, email: str, *, max_hops: int = 10
) -> aiohttp.ClientResponse:
    """Sign in the way a browser does: follow the 302s, post ``email`` on the SSO page, land on ``url``.

    Redirects are followed while they stay on the edge's port; a redirect elsewhere (a custom
    deny URL, say) is returned as is. Returns the final response (its body read). Raises
    AssertionError if the flow does not settle within ``max_hops``.
    """
    port = URL(url).port
    resp = await session.get(url, allow_redirects=False)
    final = await _walk_sign_in(session, resp, max_hops, lambda target: target.port == port, lambda _: {"email": email})
    if final is None:
        raise AssertionError(f"no final answer after {max_hops} hops from {url}")
    assert not _is_sso_page(final), "the SSO page has no csrf field"
    return final


REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _is_sso_page(resp: aiohttp.ClientResponse) -> bool:
    return resp.status == 200 and "/cdn-cgi/access/login/" in resp.url.path


async def _walk_sign_in(
    session: aiohttp.ClientSession,
    resp: aiohttp.ClientResponse,
    hops: int,
    follow: Callable[[URL], bool],
    form: Callable[[str], dict[str, str]],
) -> aiohttp.ClientResponse | None:
    """The browser's part of a sign-in (spec §1) from ``resp`` on: the one loop both sign-ins use.

    Follows the redirects ``follow`` accepts and answers the SSO page with ``form(page)`` and
    its csrf value; returns the first other answer (body read), a redirect not followed, or the
    SSO page if it has no form; None when ``hops`` steps did not settle it.
    """
    for _ in range(hops):
        await resp.read()
        if resp.status in REDIRECTS:
            target = URL(urljoin(str(resp.url), resp.headers["Location"]))
            if not follow(target):
                return resp
            resp = await session.get(target, allow_redirects=False)
        elif _is_sso_page(resp):
            page = await resp.text()
            csrf = _CSRF.search(page)
            if csrf is None:
                return resp
            resp = await session.post(resp.url, data={"csrf": csrf.group(1), **form(page)}, allow_redirects=False)
        else:
            return resp
    return None


# --- a running edge ------------------------------------------------------------------------------


def _concrete(host: str) -> str:
    """A host name a wildcard destination covers: ``*.acme.test`` -> ``app.acme.test``."""
    first, dot, rest = host.partition(".")
    if "*" not in first:
        return host
    return ("app" if first == "*" else first.replace("*", "")) + dot + rest


def _concrete_path(path: str) -> str:
    """A path an app's destination covers: ``/alpha/*`` -> ``/alpha/x``, ``""`` -> ``/``."""
    return path.replace("*", "x") if path else "/"


class FakeEdge:
    """A fakeedge running in-process on 127.0.0.1, as the ``fakeedge`` fixture returns it.

    Build one with :class:`EdgeFactory` (or the fixture); every client, origin and temporary
    directory it made is closed by :meth:`close`, in reverse order.

    Attributes:
        core: the :class:`fakeedge.edge.Edge` it serves (config, keys, sessions).
        port: the plain-HTTP listener's port; the TLS listener's when the config turns the
            plain one off (``listen: off``).
        tls_port: the TLS listener's port, when the config has ``tls_listen``; else ``None``.
        ca: the local CA the TLS listener's certificates come from (``None`` without TLS):
            ``edge.ca.cert_path`` for ``SSL_CERT_FILE``, ``edge.ca.configure_trust(ctx)`` for
            an ``ssl.SSLContext``. Clients from :meth:`client` and :meth:`login` trust it.
    """

    def __init__(
        self,
        core: Edge,
        port: int,
        stack: contextlib.AsyncExitStack,
        *,
        tls_port: int | None = None,
        ca: LocalCA | None = None,
    ) -> None:
        self.core = core
        self.port = port
        self.tls_port = tls_port
        self.ca = ca
        self._stack = stack
        self._runner: EdgeRunner | None = None  # for fakeedge's own tests of aiohttp internals
        self._logins: dict[aiohttp.ClientSession, str] = {}
        self._clients: list[aiohttp.ClientSession] = []
        self._start: tuple[Config, SigningKey, SigningKey | None, float] | None = None

    # -- addresses --

    @property
    def config(self) -> Config:
        return self.core.config

    @property
    def team_domain(self) -> str:
        """The team domain URL, also the ``iss`` of every token: ``http://127.0.0.1:<port>`` unless configured."""
        return self.core.team_domain

    @property
    def certs_url(self) -> str:
        """``<team_domain>/cdn-cgi/access/certs``: what an origin's JWKS client fetches."""
        return f"{self.core.team_domain}/cdn-cgi/access/certs"

    @property
    def clock(self) -> Clock:
        """The edge's clock: ``freeze()``, ``advance(seconds)``, ``skew(seconds)``, ``reset()``.

        It moves the edge's time only; an origin verifying tokens keeps its own clock.
        """
        return self.core.clock

    @property
    def requests(self) -> RequestLog:
        """What origins received through this edge, oldest first (see :class:`fakeedge.record.Record`).

        ``edge.requests.last.claims["email"]``, ``.policy``, ``.headers["CF-Connecting-IP"]``;
        ``edge.requests.clear()`` between steps. Sign-in itself never reaches the origin.
        ``edge.requests.all()`` is the whole journal: every request the edge answered, refusals
        and sign-in pages included, each with ``.status`` and ``.reason`` (why, in words).

        Raises:
            FakeEdgeError: the edge was started with ``record=False``.
        """
        if self.core.recorder is None:
            raise FakeEdgeError("this edge was started with record=False: it keeps no record of requests")
        return self.core.recorder

    def host(self, host_or_app: str) -> str:
        """The host name for an app name (its first domain), or a host name as given.

        Raises:
            UnknownName: ``host_or_app`` is neither an app name nor looks like a host name.
        """
        with contextlib.suppress(UnknownName):
            return _concrete(self.core.app(host_or_app).destinations[0].host)
        if "." in host_or_app or host_or_app.lower() == "localhost":
            return host_or_app.lower()
        raise self._unknown_app(host_or_app, hosts=True)

    def url(self, host_or_app: str, path: str = "/") -> str:
        """``http://<host>:<edge port><path>`` for an app name or a host name.

        Use it with a client from :meth:`login` or :meth:`client` (they resolve every name to
        127.0.0.1); the edge routes on the ``Host`` header, as Cloudflare does. An edge with no
        plain listener (``listen: off``) gives ``https://<host>:<tls port><path>``.

        Raises:
            UnknownName: not an app name, and not a host name either.
            ValueError: ``path`` does not start with ``/``.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        scheme = "https" if self.port == self.tls_port else "http"
        return f"{scheme}://{self.host(host_or_app)}:{self.port}{path}"

    def aud(self, app: str) -> str:
        """The AUD tag of the app named ``app``: what an origin passes as ``audience``."""
        return self.app(app).aud

    def app(self, name: str) -> App:
        """The configured app named ``name``.

        Raises:
            UnknownName: no app has that name.
        """
        return self.core.app(name)

    def _unknown_app(self, name: str, *, hosts: bool = False) -> UnknownName:
        apps = self.core.config.apps
        also = f" (or pass a host name such as {_concrete(apps[0].destinations[0].host)})" if hosts and apps else ""
        return UnknownName(f"{UnknownName.among('app', name, [a.name for a in apps])}{also}")

    # -- clients --

    def origin_url(self, host_or_app: str, path: str = "/") -> str:
        """The URL of the origin that serves an app (or host) behind the edge, for reaching it directly.

        Use it in negative tests: the origin must refuse a request that did not come through
        the edge (no assertion, a forged one). The origin is the ingress rule that routes
        ``host_or_app`` and ``path``.

        Raises:
            UnknownName: not an app name nor a host name.
            ValueError: that host and path route to an ``http_status:`` rule, not an origin.
        """
        host = self.host(host_or_app)
        rule = self.core.route(host, path)
        if rule.service.startswith("http_status:"):
            raise ValueError(f"{host}{path} is routed to {rule.service}, not to an origin")
        return rule.service.rstrip("/") + path

    def client(self) -> aiohttp.ClientSession:
        """A new loopback ClientSession with no credentials; closed with the edge (or by :meth:`reset`).

        With a TLS listener, it trusts the edge's :attr:`ca` (and nothing else) and sends port
        443 to :attr:`tls_port`, so ``https://acme.cloudflareaccess.com/...`` reaches this edge.
        """
        if self.ca is None or self.tls_port is None:
            session = loopback_session()
        else:
            session = loopback_session(ssl=self.ssl_context(), ports={443: self.tls_port})
        self._clients.append(session)
        return session

    def ssl_context(self) -> ssl.SSLContext:
        """A client ``ssl.SSLContext`` that trusts this edge's :attr:`ca` only and checks host names.

        Raises:
            FakeEdgeError: the edge has no TLS listener (no ``tls_listen`` in its config).
        """
        if self.ca is None:
            raise FakeEdgeError("this edge has no TLS listener: add tls_listen to its config")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(ctx)
        return ctx

    # -- one edge for many tests --

    def _remember_start(self) -> None:
        keys = self.core.keys
        self._start = (self.core.config, keys.current, keys.previous, keys.previous_until)
        self._stack.push_async_callback(self._close_clients)

    async def _close_clients(self) -> None:
        while self._clients:
            await self._clients.pop().close()
        self._logins.clear()

    async def reset(self) -> None:
        """Put the edge back as it started, for the next test of a module- or session-wide edge.

        Ends every session, pending sign-in and one-time PIN (tokens minted so far are refused),
        closes the clients from :meth:`login` and :meth:`client`, resets the clock, ends a certs
        fault, empties :attr:`requests`, drops personas added by ``login(..., **persona)`` and
        makes the signing keys those of the start again (in memory: the key files of a
        configured ``keys_dir`` are left as they are). Origins and the port stay.
        """
        await self._close_clients()
        core = self.core
        assert self._start is not None, "reset() before the edge started"
        config, current, previous, previous_until = self._start
        core.end_sessions()
        core.clock.reset()
        core.set_certs_fault(None)
        if core.recorder is not None:
            core.recorder.clear()
        keys = core.keys
        keys.current, keys.previous, keys.previous_until = current, previous, previous_until
        keys._certs = None  # the certs document is rebuilt from the keys above
        core.reconfigure(config)

    def service_token(self, name: str, *, app: str | None = None) -> dict[str, str]:
        """The headers a client sends for the service token ``name`` (its name, id or client id).

        Args:
            name: the service token's ``name``, ``id`` or ``client_id`` in the config.
            app: when given and that app reads tokens from one header
                (``read_service_tokens_from_header``), the headers take that form (spec §5).

        Raises:
            UnknownName: no such service token (or app).
        """
        token = self.core.service_token_named(name)
        header = self.app(app).read_service_tokens_from_header if app is not None else None
        if header:
            value = {"cf-access-client-id": token.client_id, "cf-access-client-secret": token.client_secret}
            return {header: json.dumps(value)}
        return {h.CLIENT_ID: token.client_id, h.CLIENT_SECRET: token.client_secret}

    def mint(
        self,
        *,
        app: str | None = None,
        email: str | None = None,
        service_token: str | None = None,
        variant: str = "valid",
        claims: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
        lifetime: float | str | None = None,
    ) -> str:
        """A signed app token for a user or a service token, valid or broken in one named way.

        Send it to your origin directly (``Cf-Access-Jwt-Assertion``) to test its verification.
        A valid user token is also accepted by the edge (cookie or ``Cf-Access-Token``).

        Args:
            app: the app's name (its AUD is the ``aud``); may be left out when there is one app.
            email: a user token (spec §2.2) for this address.
            service_token: a service-token token (spec §2.3) for this name, id or client id.
            variant: ``valid`` (default), ``aud_string``, ``aud_array`` (valid shapes) or a bad
                one: ``expired``, ``not_yet_valid``, ``wrong_aud``, ``wrong_iss``,
                ``foreign_key``, ``unknown_kid``, ``no_kid``, ``alg_none``,
                ``hs256_public_key``, ``tampered`` (see :data:`fakeedge.mint.VARIANTS`).
            claims: claims to set last; ``None`` as a value removes that claim.
            header: JWT header members to set the same way.
            lifetime: ``exp - iat`` (seconds or ``"10m"``); default the app's session duration.

        Raises:
            UnknownName: no such app or service token.
            ValueError: an unknown variant, or not exactly one of ``email`` / ``service_token``.
        """
        if app is None:
            apps = self.core.config.apps
            if len(apps) != 1:
                names = ", ".join(a.name for a in apps) or "none"
                raise UnknownName(f"mint(): name the app with app=...; apps: {names}")
            app = apps[0].name
        return mint_token(
            self.core,
            app=app,
            email=email,
            service_token=service_token,
            variant=variant,
            claims=claims,
            header=header,
            lifetime=lifetime,
        )

    # -- keys and certs --

    def rotate_keys(self, grace: float | str = "7d") -> str:
        """Make a new current signing key and return its kid (spec §3).

        Tokens are signed with the new key from now on. The previous key stays in
        ``/cdn-cgi/access/certs`` (first, the current one last) for ``grace`` on the edge clock
        (Cloudflare: 7 days); ``edge.clock.advance(...)`` past it removes the key from certs, and
        the edge stops accepting tokens it signed.

        Args:
            grace: seconds, or a duration such as ``"7d"`` or ``"90s"``.
        """
        return self.core.rotate_keys(parse_duration(grace)).kid

    # -- managed OAuth (spec §14.2) --

    def oauth(self) -> dict[str, Any]:
        """Registered OAuth clients and live grants: ``{"clients": [...], "grants": [...]}``.

        Each grant has ``id``, ``client_id``, ``app``, ``email``, ``expires`` (edge clock) and
        ``access_tokens`` (live ones); ``edge.requests`` records carry the ``grant`` id a request
        came through.
        """
        return self.core.oauth_document()

    def revoke_oauth(self, *, grant: str | None = None, email: str | None = None) -> list[str]:
        """End a grant by id, or every grant of ``email``: its access and refresh tokens stop working.

        Returns:
            The ids of the grants ended.
        """
        return [g.id for g in self.core.revoke_oauth(grant=grant, email=email)]

    @overload
    def certs_fault(
        self, mode: str, *, delay: float | str = ..., times: int | None = ..., duration: float | str | None = ...
    ) -> CertsFault: ...

    @overload
    def certs_fault(
        self, mode: None, *, delay: float | str = ..., times: int | None = ..., duration: float | str | None = ...
    ) -> None: ...

    def certs_fault(
        self,
        mode: str | None,
        *,
        delay: float | str = 5.0,
        times: int | None = None,
        duration: float | str | None = None,
    ) -> CertsFault | None:
        """Make ``/cdn-cgi/access/certs`` (team domain and app hosts) misbehave, or behave again.

        Args:
            mode: ``"slow"`` (answer after ``delay``), ``"empty"`` (``{"keys":[]}``),
                ``"failing"`` (500), or ``None`` to end any fault now.
            delay: for ``"slow"``: seconds (or ``"2s"``) before the normal answer.
            times: end after this many certs requests.
            duration: end after this long on the edge clock (``edge.clock.advance`` ends it).

        Returns:
            The fault, also a context manager that ends it on exit:
            ``with edge.certs_fault("failing"): ...``.

        Raises:
            ValueError: an unknown mode or a bad number.
        """
        # built first: a refused fault leaves the running one in place
        fault = (
            None
            if mode is None
            else certs_fault(mode, now=self.core.clock.now(), delay=delay, times=times, duration=duration)
        )
        self.core.set_certs_fault(fault)
        return fault

    # -- audit --

    async def audit(
        self,
        origin_url: str,
        *,
        app: str,
        path: str | None = None,
        email: str | None = None,
        accept: Accept | None = None,
        timeout: float = 10.0,
        stall: float | None = None,
        rotation_wait: float = 35.0,
    ) -> Report:
        """Send the audit battery straight at ``origin_url`` and through this edge: does it fail open?

        ``assert report.ok, report`` fails with the table. The audit rotates this edge's signing
        key four times and makes certs fail for a moment (see :mod:`fakeedge.audit`).

        Args:
            origin_url: the origin's own address (bypassing the edge), e.g. ``http://127.0.0.1:3002``.
            app: the app whose AUD the origin checks.
            path: the path to probe (default: ``origin_url``'s); a page that shows the user is best.
            email: the user of the valid tokens (default: a persona the app admits).
            accept: what "accepted" means: statuses, or a callable on the status (default: 2xx).
            timeout: seconds to wait for each answer.
            stall: how long certs stalls in the ``certs_slow`` row (default ``timeout + 5``).
            rotation_wait: how long to retry the rotation rows while the origin waits out its
                certs refetch cooldown.

        Raises:
            UnknownName: no such app.
            ValueError: the origin URL is not http(s), or a number is out of range.
        """
        return await run_audit(
            self.core,
            origin_url,
            app=app,
            path=path,
            email=email,
            accept=accept,
            edge_url=f"http://127.0.0.1:{self.port}",
            timeout=timeout,
            stall=stall,
            rotation_wait=rotation_wait,
        )

    # -- sign-in --

    async def login(
        self, email: str, *, app: str | None = None, host: str | None = None, path: str | None = None, **persona: Any
    ) -> aiohttp.ClientSession:
        """Sign ``email`` in to ``app`` through the real flow and return the signed-in client.

        The client (a loopback ``aiohttp.ClientSession``, closed with the edge) requests the app,
        follows the 302 to the team domain, submits the SSO form (and the one-time PIN when the
        config asks for one), takes the callback on the app host, and stops there: it holds the
        app's ``CF_Authorization`` (and the org session on the team domain), and the origin has
        seen nothing. :meth:`cookies` gives the app cookies as a plain dict for other clients.

        Args:
            email: the address typed on the SSO page.
            app: the app's name; may be left out when only one app has an Allow policy.
            host: the host to start from (default: the app's first domain).
            path: the path to start from (default: one the app's first domain covers).
            **persona: attributes of this user for this edge: ``name``, ``groups``,
                ``github_orgs``, ``country``, ``amr``, ``idp``, ``custom`` (as in ``users:``).

        Raises:
            LoginRefused: the app or the team domain refused the sign-in; the message says why.
            UnknownName: no such app.
            ConfigError: a persona attribute has a wrong value.
            TypeError: an unknown persona attribute.
        """
        target = self._login_app(app)
        if persona:
            self._add_persona(email, persona)
        dest = target.destinations[0]
        start_url = self.url(host or _concrete(dest.host), path or _concrete_path(dest.path))
        session = self.client()
        await _sign_in(session, self, target, start_url, email)
        self._logins[session] = start_url
        return session

    def cookies(self, client: aiohttp.ClientSession, url: str | None = None) -> dict[str, str]:
        """The cookies ``client`` sends to its app (or to ``url``), as ``{name: value}``.

        For ``requests``, httpx or Playwright: ``requests.get(..., cookies=edge.cookies(client))``.
        """
        where = url or self._logins.get(client)
        if where is None:
            raise ValueError("this client did not come from edge.login(); pass the url whose cookies you want")
        jar = client.cookie_jar.filter_cookies(URL(where))
        # a cleared cookie (Expires at the epoch) stays in aiohttp's jar with an empty value: a browser drops it
        return {name: morsel.value for name, morsel in jar.items() if morsel.value}

    def _login_app(self, name: str | None) -> App:
        if name is not None:
            return self.app(name)
        interactive = [a for a in self.core.config.apps if a.has_identity_policy]
        if len(interactive) == 1:
            return interactive[0]
        names = ", ".join(a.name for a in interactive) or "none"
        raise UnknownName(f"login(): name the app to sign in to with app=...; apps with an Allow policy: {names}")

    def _add_persona(self, email: str, persona: dict[str, Any]) -> None:
        unknown = sorted(set(persona) - set(PERSONA_KEYS))
        if unknown:
            raise TypeError(
                f"login() got unknown persona attribute(s) {', '.join(unknown)}; valid: {', '.join(PERSONA_KEYS)}"
            )
        raw = {"team": self.core.config.team, "users": [{"email": email, **persona}]}
        (user,) = parse_config(raw, source=f"login({email!r})").users
        config = self.core.config
        others = tuple(u for u in config.users if u.email.lower() != email.lower())
        self.core.reconfigure(dataclasses.replace(config, users=(*others, user)))

    async def close(self) -> None:
        """Close every client, the edge and the origins it started, in reverse order."""
        await self._close_clients()
        await self._stack.aclose()


async def _sign_in(session: aiohttp.ClientSession, edge: FakeEdge, app: App, start_url: str, email: str) -> None:
    """The browser's part of spec §1: app -> 302 -> SSO page -> callback; stop before the origin."""
    resp = await session.get(start_url, allow_redirects=False)
    await resp.read()
    if resp.status != 302 or "/cdn-cgi/access/login/" not in resp.headers.get("Location", ""):
        raise LoginRefused(_no_redirect(edge, app, start_url, resp.status))

    def form(page: str) -> dict[str, str]:
        otp = _OTP_ID.search(page)
        return {"email": email} if otp is None else _otp_form(edge, otp.group(1))

    # the last hop, to the origin, is not taken: the client is signed in by then
    final = await _walk_sign_in(
        session, resp, MAX_LOGIN_HOPS, lambda target: target.path.startswith("/cdn-cgi/access/"), form
    )
    if final is None:
        raise LoginRefused(f"sign-in to {app.name!r} did not finish after {MAX_LOGIN_HOPS} hops from {start_url}")
    text = await final.text(errors="replace")
    if _is_sso_page(final):
        raise LoginRefused(f"the SSO page at {final.url} has no sign-in form")
    if final.status not in REDIRECTS:
        raise LoginRefused(_refusal(edge, app, email, final.status, text))
    cookie = session.cookie_jar.filter_cookies(URL(start_url)).get(h.CF_AUTHORIZATION)
    cred = edge.core.credential(cookie.value) if cookie is not None else None
    if cred is None or app.aud not in cred.auds:
        raise LoginRefused(_refusal(edge, app, email, final.status, text))


def _otp_form(edge: FakeEdge, otp_id: str) -> dict[str, str]:
    # one_time_pin: the code is "sent" by logging it; in-process we read it where the edge keeps it
    pin = edge.core.otp(otp_id)
    return {"otp_id": otp_id, "code": pin.code if pin else ""}


def _no_redirect(edge: FakeEdge, app: App, url: str, status: int) -> str:
    why = {
        200: "a Bypass policy lets it through without sign-in",
        403: "nothing but a service token can reach it (no Allow policy admits a sign-in from here)",
        401: "nothing but a service token can reach it (service_auth_401_redirect is on)",
    }.get(status, "see edge.requests and the response for why")
    policies = ", ".join(f"{p.name} ({p.decision})" for p in app.policies) or "none"
    return (
        f"app {app.name!r} did not send {url} to sign in: it answered {status}, not a 302 to the team domain; "
        f"{why}; policies: {policies}"
    )


def _refusal(edge: FakeEdge, app: App, email: str, status: int, text: str) -> str:
    """Why a sign-in ended without an app cookie, in the policies' own words."""
    page_error = _ERROR.search(text)
    if page_error is not None:
        return f"the team domain refused {email}: {html.unescape(page_error.group(1)).strip()}"
    who = edge.core.identity(email)
    verdict = decide(app, Facts(ipaddress.ip_address("127.0.0.1"), who.country), who)
    policies = ", ".join(f"{p.name} ({p.decision})" for p in app.policies) or "none"
    if verdict.outcome == "deny" and verdict.policy is not None:
        why = f"the Block policy {verdict.policy.name!r} matches"
    elif verdict.outcome == "deny":
        why = "no Allow policy includes this identity"
    else:
        why = f"the edge answered {status}"
    return f"app {app.name!r} refused {email} at sign-in ({status}): {why}; policies: {policies}"


# --- the common config in a line ---------------------------------------------------------------


def allow(
    *emails: str, email_domains: Iterable[str] = (), everyone: bool = False, name: str = "allow"
) -> dict[str, Any]:
    """An Allow policy (a mapping in the YAML's structure) for addresses, domains or everyone.

    ``allow("alice@acme.test", "@acme.test")``: an entry starting with ``@`` is an email domain.

    Raises:
        ValueError: no one is allowed (no address, domain nor ``everyone``).
    """
    include: list[dict[str, Any]] = []
    for entry in emails:
        if entry.startswith("@"):
            include.append({"email_domain": {"domain": entry[1:]}})
        else:
            include.append({"email": {"email": entry}})
    include += [{"email_domain": {"domain": d.lstrip("@")}} for d in email_domains]
    if everyone:
        include.append({"everyone": {}})
    if not include:
        raise ValueError("allow(): give at least one address, @domain, email_domains=... or everyone=True")
    return {"name": name, "decision": "allow", "include": include}


def one_app(
    origin: Any,
    *allowed: str,
    host: str = "app.acme.test",
    name: str = "App",
    team: str = "acme",
    policies: Iterable[Mapping[str, Any]] = (),
    service_token: str | None = None,
    **top: Any,
) -> dict[str, Any]:
    """The common config in one call: one app on ``host``, who may sign in, one origin behind it.

    ``fakeedge_sync(one_app(flask_app, "alice@acme.test"))``; add keys of the config's top level
    (``users=[...]``, ``team_domain=...``) as keywords.

    Args:
        origin: the ingress ``service``: a URL, an ASGI or WSGI app, an aiohttp Application, or
            a callable taking the running edge and returning one.
        *allowed: addresses and ``@domains`` allowed to sign in (see :func:`allow`).
        host: the app's domain (and the ingress hostname).
        name: the app's name (``edge.aud(name)``).
        team: the team name (its AUDs and ``sub`` derive from it).
        policies: more policies, after the Allow one (e.g. ``{"decision": "bypass", ...}``).
        service_token: the name of a service token to create, with a Service Auth policy for it;
            ``edge.service_token(name)`` gives its headers.

    Raises:
        ValueError: neither ``allowed``, ``policies`` nor ``service_token`` lets anyone in.
    """
    app_policies = [allow(*allowed)] if allowed else []
    app_policies += [dict(p) for p in policies]
    config: dict[str, Any] = {"team": team}
    if service_token is not None:
        digest = hashlib.sha256(f"{team}:{service_token}".encode()).hexdigest()
        config["service_tokens"] = [
            {"name": service_token, "client_id": f"{digest[:32]}.access", "client_secret": digest[32:]}
        ]
        app_policies.append(
            {
                "name": service_token,
                "decision": "non_identity",
                "include": [{"service_token": {"token_id": service_token}}],
            }
        )
    if not app_policies:
        raise ValueError("one_app(): give addresses or @domains to allow, policies=[...] or service_token=...")
    config["apps"] = [{"name": name, "domain": host, "policies": app_policies}]
    config["ingress"] = [{"hostname": host, "service": origin}, {"service": "http_status:404"}]
    return {**config, **top}


# --- starting edges ----------------------------------------------------------------------------


ConfigInput = Mapping[str, Any] | str | os.PathLike[str]


class FakeEdgeFactory(Protocol):
    """The type of the ``fakeedge`` fixture: ``edge = await fakeedge(config=...)``."""

    def __call__(
        self,
        config: ConfigInput,
        *,
        clock: Clock | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
        record: bool = True,
    ) -> Awaitable[FakeEdge]: ...


NOT_AWAITED = (
    "fakeedge(config=...) starts the edge asynchronously: `edge = await fakeedge(config=...)` in an "
    "async test; a sync test (Flask, Django, unittest) uses the fakeedge_sync fixture: "
    "`edge = fakeedge_sync(config)`"
)


class Starting(Awaitable[FakeEdge]):
    """An edge being started: ``await`` it. Used as if it were the edge (a sync test that forgot
    the ``await``, or asked for the async fixture), it says what to do instead of
    ``'coroutine' object has no attribute 'url'``."""

    def __init__(self, coro: Coroutine[Any, Any, FakeEdge]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, None, FakeEdge]:
        return self._coro.__await__()

    def __getattr__(self, name: str) -> Any:
        self._coro.close()  # never to run: no "coroutine was never awaited" warning on top
        raise AttributeError(f"{NOT_AWAITED} (asked for .{name})")


class EdgeFactory:
    """Starts :class:`FakeEdge` instances and closes them all, last started first.

    Usable as an async context manager outside pytest; the ``fakeedge`` fixture wraps one.
    """

    def __init__(self) -> None:
        self._edges: list[FakeEdge] = []

    def __call__(
        self,
        config: ConfigInput,
        *,
        clock: Clock | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
        record: bool = True,
    ) -> Starting:
        """Start an edge on 127.0.0.1 (a free port) in front of the origins ``config`` names: await it.

        The edge listens as the config says, on 127.0.0.1 and free ports whatever the addresses:
        plain HTTP unless ``listen: off``, and TLS as well with ``tls_listen`` (certificates from
        the local CA in ``keys_dir``, as ``fakeedge serve`` does; see :attr:`FakeEdge.tls_port`).

        Args:
            config: a config mapping (the YAML's structure) or the path of a YAML file. In a
                mapping, an ingress rule's ``service`` may be an ``aiohttp.web.Application``
                (started on a free port, its URL used instead), or a callable that takes the
                running :class:`FakeEdge` and returns one (or an awaitable of one): for an
                origin that needs ``edge.certs_url``, ``edge.aud(...)`` or ``edge.team_domain``.
            clock: the edge's clock (default: a new real-time :class:`Clock`).
            keys_dir: where the signing keys live. Default: the config's ``keys_dir`` if it
                names one, else a temporary directory removed with the edge.
            record: keep a record of what origins receive (``edge.requests``).

        Raises:
            ConfigError: the config is wrong; the message names the key.
        """
        return Starting(self._start(config, clock=clock, keys_dir=keys_dir, record=record))

    async def _start(
        self, config: ConfigInput, *, clock: Clock | None, keys_dir: str | os.PathLike[str] | None, record: bool
    ) -> FakeEdge:
        edge = await _start_edge(config, clock=clock, keys_dir=keys_dir, record=record)
        self._edges.append(edge)
        return edge

    async def close(self) -> None:
        while self._edges:
            await self._edges.pop().close()

    async def __aenter__(self) -> EdgeFactory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _start_edge(
    config: ConfigInput, *, clock: Clock | None, keys_dir: str | os.PathLike[str] | None, record: bool
) -> FakeEdge:
    stack = contextlib.AsyncExitStack()
    factories: list[tuple[int, Callable[[FakeEdge], Any]]] = []
    try:
        if isinstance(config, Mapping):
            raw = dict(config)
            started: dict[int, str] = {}
            rules = list(raw.get("ingress") or [])
            for i, rule in enumerate(rules):
                service = rule.get("service") if isinstance(rule, Mapping) else None
                if isinstance(service, str) or service is None:
                    continue
                if classify(service) == "factory" and not isinstance(service, web.Application):
                    factories.append((i, service))
                    rules[i] = {**rule, "service": "http://127.0.0.1:9"}  # until the edge runs
                else:
                    rules[i] = {**rule, "service": await _run_origin(stack, service, started, f"ingress[{i}].service")}
            raw["ingress"] = rules
            store: KeyStore | None = None
            if keys_dir is None and "keys_dir" not in raw:
                keys_dir, store = _temporary_keys(stack)
            if keys_dir is not None:
                raw["keys_dir"] = str(keys_dir)
            parsed = parse_config(raw, source="fakeedge(config=...)")
        else:
            parsed, store = _load_yaml(stack, Path(config), keys_dir)
        core = Edge.create(parsed, clock, store)
        core.stop_recording()  # the config's journal: tests keep a longer one, or none
        if record:
            core.start_recording()
        # the config's listeners, on loopback and free ports: tests never take a fixed port
        plain = "127.0.0.1" if parsed.listen is not None else None
        tls_listen = ("127.0.0.1", 0) if parsed.tls_listen is not None else None
        runner, (_, port) = await start(core, plain, 0, tls_listen=tls_listen)
        stack.push_async_callback(runner.cleanup)
        # first of all at teardown: a slow certs answer in progress must not hold up the runner's cleanup
        stack.callback(core.set_certs_fault, None)
        tls_port = next(iter(core.tls_ports), None)
        ca = LocalCA.load(parsed.keys_dir) if tls_port is not None else None
        edge = FakeEdge(core, port, stack, tls_port=tls_port, ca=ca)
        edge._runner = runner
        for i, factory in factories:
            app = factory(edge)
            if inspect.isawaitable(app):
                app = await app
            url = await _run_origin(stack, app, {}, f"ingress[{i}].service", made_by_factory=True)
            ingress = list(core.config.ingress)
            ingress[i] = dataclasses.replace(ingress[i], service=url)
            core.reconfigure(dataclasses.replace(core.config, ingress=tuple(ingress)))
        edge._remember_start()
        return edge
    except BaseException:
        await stack.aclose()
        raise


def _load_yaml(
    stack: contextlib.AsyncExitStack, path: Path, keys_dir: str | os.PathLike[str] | None
) -> tuple[Config, KeyStore | None]:
    import yaml

    from .config import load_config

    parsed = load_config(path)
    store = None
    if keys_dir is None:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "keys_dir" in raw:
            return parsed, None
        # a test should not write keys next to the config (often the project's own fakeedge.yml)
        keys_dir, store = _temporary_keys(stack)
    return dataclasses.replace(parsed, keys_dir=Path(keys_dir)), store


async def _run_origin(
    stack: contextlib.AsyncExitStack, service: Any, started: dict[int, str], key: str, *, made_by_factory: bool = False
) -> str:
    """Serve an in-process origin on 127.0.0.1 (a free port) until ``stack`` closes; return its URL.

    ``service`` is an ``aiohttp.web.Application`` (served on the edge's loop), an ASGI or a WSGI
    app (served by uvicorn, :mod:`fakeedge.origins`). ``started`` maps the objects already
    served for this edge (by identity) to their URL: an app named by several rules runs once.

    Raises:
        TypeError: ``service`` is none of those; the message names ``key``.
    """
    if id(service) in started:
        return started[id(service)]
    if isinstance(service, web.Application):
        runner = web.AppRunner(service, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    else:
        kind = classify(service)
        if kind not in ("asgi", "wsgi"):
            what = "a callable service must return" if made_by_factory else "a service must be a URL or"
            raise TypeError(
                f"{key}: {what} an aiohttp.web.Application, an ASGI app (async (scope, receive, send)) or a "
                f"WSGI app ((environ, start_response)); got {type(service).__name__}"
                + ("" if made_by_factory else "; a factory takes one argument, the running edge")
            )
        app = service.app if isinstance(service, Origin) else service
        url = await serve_origin(stack, app, kind)
    started[id(service)] = url
    return url


# One signing key per process for the temporary key directories of test edges: generating an RSA
# key, and even loading one (OpenSSL checks it), is most of an edge's start (issue 11: 40 ms
# median). Each edge gets its own directory holding a copy, and its own KeyStore object made by a
# shallow copy of the loaded one: a rotation rebinds the copy's keys, never the template's.
_KEY_TEMPLATE: KeyStore | None = None
_KEY_TEMPLATE_LOCK = threading.Lock()  # sync edges start from several threads


def _key_template() -> KeyStore:
    """This process's test key store (made on first use, removed at exit): copy its directory, never change it."""
    global _KEY_TEMPLATE
    with _KEY_TEMPLATE_LOCK:
        if _KEY_TEMPLATE is None or not _KEY_TEMPLATE.directory.is_dir():
            template = Path(tempfile.mkdtemp(prefix="fakeedge-keys-template-"))
            atexit.register(shutil.rmtree, template, True)
            _KEY_TEMPLATE = KeyStore(template, time.time())
        return _KEY_TEMPLATE


def _temporary_keys(stack: contextlib.AsyncExitStack) -> tuple[str, KeyStore]:
    """A new temporary ``keys_dir``, removed with ``stack``, and its loaded store: this process's test key."""
    source = _key_template()
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="fakeedge-keys-"))
    shutil.copytree(source.directory, directory, dirs_exist_ok=True)
    store = copy.copy(source)
    store.directory = Path(directory)
    return directory, store
