"""fakeedge for synchronous code: plain pytest, unittest, Django and Flask suites, scripts.

The edge runs on an event loop in a background thread; every member is a plain call::

    from fakeedge.testing_sync import start_edge

    with start_edge(config) as edge:
        session = edge.login("alice@acme.test")          # a requests.Session, signed in
        assert session.get(edge.url("Admin", "/me")).json()["email"] == "alice@acme.test"

In pytest, the ``fakeedge_sync`` fixture is a factory of these edges, closed after the test.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from .clock import Clock
from .config import App, Config
from .faults import CertsFault
from .record import RequestLog
from .testing import ConfigInput, FakeEdge, _start_edge
from .tls import LocalCA

if TYPE_CHECKING:
    import httpx
    from requests import Session as RequestsSession

__all__ = [
    "ClientKind",
    "SyncEdge",
    "SyncEdgeFactory",
    "chromium_args",
    "loopback_httpx_client",
    "loopback_requests_session",
    "start_edge",
]

T = TypeVar("T")
CALL_TIMEOUT = 120.0  # seconds: a call into the edge's loop that takes longer is a hang, not a slow test
ClientKind = Literal["requests", "httpx", "cookies"]


class _LoopThread:
    """An event loop running in a daemon thread, stopped and closed by :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fakeedge-edge", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync fakeedge call from the edge's own loop (an aiohttp origin?) would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(CALL_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(CALL_TIMEOUT)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CALL_TIMEOUT)
        self.loop.close()


class SyncEdge:
    """A running fakeedge driven from synchronous code: the members of :class:`~fakeedge.testing.FakeEdge`
    as plain calls.

    Start one with :func:`start_edge` (a context manager too) or the ``fakeedge_sync`` fixture;
    :meth:`close` stops the edge, its origins and its thread.
    """

    def __init__(self, edge: FakeEdge, loop: _LoopThread) -> None:
        self.edge = edge  # the async edge, for what runs on its loop
        self._loop = loop
        self._closed = False

    # -- addresses: plain reads of the running edge --

    @property
    def port(self) -> int:
        """The edge's port on 127.0.0.1."""
        return self.edge.port

    @property
    def config(self) -> Config:
        return self.edge.config

    @property
    def team_domain(self) -> str:
        """The team domain URL, also the ``iss`` of every token."""
        return self.edge.team_domain

    @property
    def certs_url(self) -> str:
        """``<team_domain>/cdn-cgi/access/certs``: what an origin's JWKS client fetches."""
        return self.edge.certs_url

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port, when the config has ``tls_listen``; else ``None``.

        Clients from :meth:`client` and :meth:`login` send port 443 there and trust :attr:`ca`,
        so ``https://acme.cloudflareaccess.com/...`` and ``https://<app host>/`` reach this edge.
        """
        return self.edge.tls_port

    @property
    def ca(self) -> LocalCA | None:
        """The local CA of the TLS listener (``None`` without TLS): ``edge.ca.cert_path`` for
        ``SSL_CERT_FILE`` or ``requests``' ``verify=``."""
        return self.edge.ca

    def ssl_context(self) -> ssl.SSLContext:
        """A client ``ssl.SSLContext`` that trusts this edge's :attr:`ca` only (see ``FakeEdge.ssl_context``)."""
        return self.edge.ssl_context()

    @property
    def clock(self) -> Clock:
        """The edge's clock: ``freeze()``, ``advance(seconds)``, ``skew(seconds)``, ``reset()``."""
        return self.edge.clock

    @property
    def requests(self) -> RequestLog:
        """What origins received through this edge, oldest first: ``edge.requests.last.claims``.

        Waits (up to a second) for the requests the edge is still handling: the edge records a
        request once its answer is sent, on its own thread, so a client may hold the answer first.
        """
        core = self.edge.core
        deadline = time.monotonic() + 1.0
        while core.handling and time.monotonic() < deadline:
            time.sleep(0.002)
        return self.edge.requests

    def host(self, host_or_app: str) -> str:
        """The host name for an app name (its first domain), or a host name as given."""
        return self.edge.host(host_or_app)

    def url(self, host_or_app: str, path: str = "/") -> str:
        """``http://<host>:<edge port><path>``; reach it with a client from :meth:`login` or :meth:`client`."""
        return self.edge.url(host_or_app, path)

    def origin_url(self, host_or_app: str, path: str = "/") -> str:
        """The origin's own URL behind the edge, for negative tests that bypass the edge."""
        return self.edge.origin_url(host_or_app, path)

    def aud(self, app: str) -> str:
        """The AUD tag of the app named ``app``: what an origin passes as ``audience``."""
        return self.edge.aud(app)

    def app(self, name: str) -> App:
        """The configured app named ``name``."""
        return self.edge.app(name)

    def service_token(self, name: str, *, app: str | None = None) -> dict[str, str]:
        """The headers a client sends for the service token ``name`` (see ``FakeEdge.service_token``)."""
        return self.edge.service_token(name, app=app)

    @overload
    def client(self, kind: Literal["requests"] = ...) -> RequestsSession: ...
    @overload
    def client(self, kind: Literal["httpx"]) -> httpx.Client: ...

    def client(self, kind: Literal["requests", "httpx"] = "requests") -> RequestsSession | httpx.Client:
        """A client with no credentials that connects every host to 127.0.0.1: what a visitor
        who has not signed in sends (``edge.client().get(edge.url("App"))`` is the 302 to sign-in).
        The caller closes it."""
        if kind == "httpx":
            return self._httpx_client()
        return self._requests_session()

    def _requests_session(self) -> RequestsSession:
        ca, port = self.edge.ca, self.edge.tls_port
        if ca is None or port is None:
            return loopback_requests_session()
        return loopback_requests_session(ports={443: port}, verify=str(ca.cert_path))

    def _httpx_client(self) -> httpx.Client:
        if self.edge.ca is None or self.edge.tls_port is None:
            return loopback_httpx_client()
        return loopback_httpx_client(ports={443: self.edge.tls_port}, verify=self.edge.ssl_context())

    # -- what changes the edge: run on its loop --

    def mint(self, **kwargs: Any) -> str:
        """A signed app token, valid or broken in one named way; the arguments of ``FakeEdge.mint``."""
        return self._run(self._call(self.edge.mint, **kwargs))

    def rotate_keys(self, grace: float | str = "7d") -> str:
        """Make a new current signing key and return its kid (see ``FakeEdge.rotate_keys``)."""
        return self._run(self._call(self.edge.rotate_keys, grace))

    def certs_fault(self, mode: str | None, **kwargs: Any) -> CertsFault | None:
        """Make ``/cdn-cgi/access/certs`` misbehave, or behave again (see ``FakeEdge.certs_fault``)."""
        return self._run(self._call(self.edge.certs_fault, mode, **kwargs))

    def reset(self) -> None:
        """Put the edge back as it started (sessions, clock, faults, request log, keys, personas).

        For a module- or session-wide edge, between tests; see ``FakeEdge.reset``.
        """
        self._run(self.edge.reset())

    @overload
    def login(
        self, email: str, *, app: str | None = ..., client: Literal["requests"] = ..., **persona: Any
    ) -> RequestsSession: ...
    @overload
    def login(self, email: str, *, app: str | None = ..., client: Literal["httpx"], **persona: Any) -> httpx.Client: ...
    @overload
    def login(
        self, email: str, *, app: str | None = ..., client: Literal["cookies"], **persona: Any
    ) -> dict[str, str]: ...

    def login(
        self, email: str, *, app: str | None = None, client: ClientKind = "requests", **persona: Any
    ) -> RequestsSession | httpx.Client | dict[str, str]:
        """Sign ``email`` in through the real flow and return a client holding the cookies.

        Args:
            email: the address typed on the SSO page.
            app: the app's name; may be left out when only one app has an Allow policy.
            client: ``"requests"`` (default: a ``requests.Session``), ``"httpx"`` (an
                ``httpx.Client``) or ``"cookies"`` (the app's cookies as ``{name: value}``). The
                clients resolve every host to 127.0.0.1 and ignore proxy settings; the caller
                closes them.
            **persona: ``name``, ``groups``, ``country``... as for ``FakeEdge.login``.

        Raises:
            LoginRefused: the app or the team domain refused the sign-in; the message says why.
            UnknownName: no such app.
        """
        jar = self._run(self._login(email, app, persona))
        if client == "cookies":
            return {c["name"]: c["value"] for c in jar if c["app"]}
        if client == "httpx":
            hx = self._httpx_client()
            for c in jar:
                hx.cookies.set(c["name"], c["value"], domain=c["domain"], path=c["path"])
            return hx
        if client == "requests":
            session = self._requests_session()
            for c in jar:
                session.cookies.set(c["name"], c["value"], domain=c["domain"], path=c["path"])
            return session
        raise ValueError(f"login(): client must be 'requests', 'httpx' or 'cookies', got {client!r}")

    def storage_state(self, email: str, *, app: str | None = None, **persona: Any) -> dict[str, Any]:
        """Sign ``email`` in and return the cookies as a Playwright ``storageState`` document.

        ``browser.new_context(storage_state=edge.storage_state("alice@acme.test"))`` opens the
        app signed in; launch Chromium with :func:`chromium_args` so app hosts reach the edge.
        """
        jar = self._run(self._login(email, app, persona))
        cookies = [
            {
                "name": c["name"],
                "value": c["value"],
                "domain": c["domain"],
                "path": c["path"],
                "expires": -1,
                "httpOnly": c["httponly"],
                "secure": c["secure"],
                "sameSite": c["samesite"],
            }
            for c in jar
        ]
        return {"cookies": cookies, "origins": []}

    async def _login(self, email: str, app: str | None, persona: dict[str, Any]) -> list[dict[str, Any]]:
        session = await self.edge.login(email, app=app, **persona)
        app_cookies = self.edge.cookies(session)
        jar = []
        for morsel in session.cookie_jar:
            if not morsel.value:
                continue  # a cleared cookie: a browser drops it
            jar.append(
                {
                    "name": morsel.key,
                    "value": morsel.value,
                    "domain": morsel["domain"],
                    "path": morsel["path"] or "/",
                    "httponly": bool(morsel["httponly"]),
                    "secure": bool(morsel["secure"]),
                    "samesite": (morsel["samesite"] or "Lax").capitalize(),
                    "app": app_cookies.get(morsel.key) == morsel.value,
                }
            )
        return jar

    # -- lifetime --

    def close(self) -> None:
        """Stop the edge, its origins and its thread. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self.edge.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> SyncEdge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this edge is closed")
        return self._loop.run(coro)

    @staticmethod
    async def _call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return func(*args, **kwargs)


def start_edge(
    config: ConfigInput,
    *,
    clock: Clock | None = None,
    keys_dir: str | os.PathLike[str] | None = None,
    record: bool = True,
) -> SyncEdge:
    """Start an edge on 127.0.0.1 (a free port) on a background thread; close it, or use ``with``.

    Args:
        config: a config mapping (the YAML's structure, or :func:`fakeedge.testing.one_app`) or
            the path of a YAML file. An ingress ``service`` may be a URL, an ASGI app, a WSGI
            app, an ``aiohttp.web.Application``, or a callable that takes the running edge
            (``edge.certs_url``, ``edge.aud(...)``, ``edge.team_domain``) and returns one.
        clock: the edge's clock (default: a new real-time :class:`~fakeedge.clock.Clock`).
        keys_dir: where the signing keys live (default: the config's, else a temporary one).
        record: keep a record of what origins receive (``edge.requests``).

    Raises:
        ConfigError: the config is wrong; the message names the key.
    """
    loop = _LoopThread()
    try:
        edge = loop.run(_start_edge(config, clock=clock, keys_dir=keys_dir, record=record))
    except BaseException:
        loop.stop()
        raise
    return SyncEdge(edge, loop)


class SyncEdgeFactory:
    """Starts :class:`SyncEdge` instances and closes them all, last started first: the
    ``fakeedge_sync`` fixture, also a context manager outside pytest."""

    def __init__(self) -> None:
        self._edges: list[SyncEdge] = []

    def __call__(
        self,
        config: ConfigInput,
        *,
        clock: Clock | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
        record: bool = True,
    ) -> SyncEdge:
        """Start an edge: the arguments of :func:`start_edge`."""
        edge = start_edge(config, clock=clock, keys_dir=keys_dir, record=record)
        self._edges.append(edge)
        return edge

    def reset(self) -> None:
        """Reset every edge this factory started (see :meth:`SyncEdge.reset`)."""
        for edge in self._edges:
            edge.reset()

    def close(self) -> None:
        while self._edges:
            self._edges.pop().close()

    def __enter__(self) -> SyncEdgeFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- loopback clients --------------------------------------------------------------------------


def loopback_requests_session(*, ports: Mapping[int, int] | None = None, verify: str | None = None) -> RequestsSession:
    """A ``requests.Session`` that connects every host to 127.0.0.1 and ignores proxy settings.

    Cookies and TLS names still use the URL's host, as a browser whose DNS points at the edge.
    ``ports`` sends a URL's port elsewhere (``{443: edge.tls_port}``), the Host header unchanged;
    ``verify`` is the CA file its https requests trust (``str(edge.ca.cert_path)``).
    """
    moved = dict(ports or {})
    try:
        import requests
        from requests.adapters import HTTPAdapter
    except ImportError:
        raise ImportError("login(client='requests') needs requests: pip install requests") from None
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def _connect_to_loopback(conn: HTTPConnection, new_conn: Callable[[], Any]) -> Any:
        # urllib3 connects to _dns_host, which is also what its `host` (the Host header, TLS
        # names) reads: swapped for the connect only
        name, port = conn._dns_host, conn.port
        conn._dns_host, conn.port = "127.0.0.1", moved.get(port, port)
        try:
            return new_conn()
        finally:
            conn._dns_host, conn.port = name, port

    class _Connection(HTTPConnection):
        def _new_conn(self) -> Any:
            return _connect_to_loopback(self, super()._new_conn)

    class _TLSConnection(HTTPSConnection):
        def _new_conn(self) -> Any:
            return _connect_to_loopback(self, super()._new_conn)

    class _Pool(HTTPConnectionPool):
        ConnectionCls = _Connection

    class _TLSPool(HTTPSConnectionPool):
        ConnectionCls = _TLSConnection

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}

    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: every name is ours
    session.mount("http://", _Adapter())
    session.mount("https://", _Adapter())
    if verify is not None:
        session.verify = verify
    return session


def loopback_httpx_client(
    *, ports: Mapping[int, int] | None = None, verify: ssl.SSLContext | bool = True, **kwargs: Any
) -> httpx.Client:
    """An ``httpx.Client`` that connects every host to 127.0.0.1 and ignores proxy settings.

    ``ports`` sends a URL's port elsewhere (``{443: edge.tls_port}``), the Host header unchanged;
    ``verify`` is what its https requests trust (``edge.ssl_context()``).
    """
    moved = dict(ports or {})
    try:
        import httpcore
        import httpx
    except ImportError:
        raise ImportError("login(client='httpx') needs httpx: pip install httpx") from None

    class _Backend(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, *args: Any, **kw: Any) -> httpcore.NetworkStream:
            return super().connect_tcp("127.0.0.1", moved.get(port, port), *args, **kw)

    transport = httpx.HTTPTransport(verify=verify)  # the client's own verify= is not its transport's
    transport._pool._network_backend = _Backend()  # httpx offers no resolver hook; httpcore's pool has one
    return httpx.Client(transport=transport, trust_env=False, **kwargs)


def chromium_args() -> list[str]:
    """Chromium flags that send every host name to 127.0.0.1, so app hosts reach the edge with no
    /etc/hosts edit: ``chromium.launch(args=chromium_args())``. URLs keep the edge's port, as
    :meth:`SyncEdge.url` gives them (resolver rules map names, not ports)."""
    return ["--host-resolver-rules=MAP * 127.0.0.1"]
