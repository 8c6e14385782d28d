"""Edges with a TLS listener, and clients that trust their CA, for the TLS test modules."""

from __future__ import annotations

import copy
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.testing import loopback_session
from fakeedge.tls import LocalCA
from fakeedge.web_app import start


@dataclass
class TLSEdge:
    edge: Edge
    port: int | None  # the plain listener's, if any
    tls_port: int
    runner: web.AppRunner
    ca: LocalCA
    client: aiohttp.ClientSession  # trusts the CA; port 443 goes to tls_port

    @property
    def team(self) -> str:
        return self.edge.team_domain

    def url(self, host: str, path: str = "/", *, port: bool = True) -> str:
        """An https URL on the TLS listener; ``port=False``: on 443, which the client's resolver maps to it."""
        return f"https://{host}:{self.tls_port}{path}" if port else f"https://{host}{path}"

    def plain_url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def aud(self, name: str) -> str:
        return self.edge.app(name).aud


def trusting(ca: LocalCA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` only (not the system roots) and checks host names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    return ctx


MakeTLSEdge = Callable[..., Awaitable[TLSEdge]]


@pytest.fixture
async def make_tls_edge(tmp_path: Path) -> AsyncIterator[MakeTLSEdge]:
    """Start edges with a TLS listener on 127.0.0.1:0: ``await make_tls_edge(cfg, plain=True)``."""
    started: list[TLSEdge] = []

    async def go(raw: dict[str, Any], *, plain: bool = True, keys_dir: Path | None = None) -> TLSEdge:
        raw = copy.deepcopy(raw)
        raw.setdefault("keys_dir", str(keys_dir or tmp_path / "keys"))
        edge = Edge.create(parse_config(raw, source="test.yml", base_dir=tmp_path))
        runner, (_, first_port) = await start(edge, "127.0.0.1" if plain else None, 0, tls_listen=("127.0.0.1", 0))
        (tls_port,) = edge.tls_ports
        ca = LocalCA.load(edge.config.keys_dir)
        client = loopback_session(ssl=trusting(ca), ports={443: tls_port})
        running = TLSEdge(edge, first_port if plain else None, tls_port, runner, ca, client)
        started.append(running)
        return running

    yield go
    for running in reversed(started):
        await running.client.close()
        await running.runner.cleanup()


async def sign_in_across_ports(session: aiohttp.ClientSession, url: str, email: str) -> aiohttp.ClientResponse:
    """Like ``fakeedge.testing.browser_login``, but following redirects to any port (plain <-> TLS)."""
    resp = await session.get(url, allow_redirects=False)
    for _ in range(10):
        await resp.read()
        if resp.status == 302:
            resp = await session.get(URL(urljoin(str(resp.url), resp.headers["Location"])), allow_redirects=False)
        elif resp.status == 200 and "/cdn-cgi/access/login/" in resp.url.path:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
            assert csrf, "the SSO page has no csrf field"
            resp = await session.post(resp.url, data={"csrf": csrf.group(1), "email": email}, allow_redirects=False)
        else:
            return resp
    raise AssertionError(f"no final answer after 10 hops from {url}")
