"""Edges with a TLS listener, and clients that trust their CA, for the TLS test modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakeedge.edge import Edge
from fakeedge.testing import FakeEdge, FakeEdgeFactory, _walk_sign_in
from fakeedge.tls import LocalCA


@dataclass(frozen=True)
class TLSEdge:
    """An edge with a TLS listener from the public ``EdgeFactory`` (``tls_listen`` in its config),
    and the client a test drives it with: it trusts the edge's CA, and port 443 goes to ``tls_port``."""

    fake: FakeEdge
    client: aiohttp.ClientSession

    @property
    def edge(self) -> Edge:
        return self.fake.core

    @property
    def port(self) -> int | None:
        """The plain listener's port, if any."""
        return None if self.fake.port == self.fake.tls_port else self.fake.port

    @property
    def tls_port(self) -> int:
        assert self.fake.tls_port is not None
        return self.fake.tls_port

    @property
    def ca(self) -> LocalCA:
        assert self.fake.ca is not None
        return self.fake.ca

    @property
    def team(self) -> str:
        return self.fake.team_domain

    def url(self, host: str, path: str = "/", *, port: bool = True) -> str:
        """An https URL on the TLS listener; ``port=False``: on 443, which the client's resolver maps to it."""
        return f"https://{host}:{self.tls_port}{path}" if port else f"https://{host}{path}"

    def plain_url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def aud(self, name: str) -> str:
        return self.fake.aud(name)


MakeTLSEdge = Callable[..., Awaitable[TLSEdge]]


@pytest.fixture
async def make_tls_edge(fakeedge: FakeEdgeFactory) -> MakeTLSEdge:
    """Start edges with a TLS listener on 127.0.0.1:0: ``await make_tls_edge(cfg, plain=True)``."""

    async def go(raw: dict[str, Any], *, plain: bool = True, keys_dir: Path | None = None) -> TLSEdge:
        raw = {"tls_listen": "127.0.0.1:0", **raw, **({} if plain else {"listen": False})}
        fake = await fakeedge(raw, keys_dir=keys_dir)
        return TLSEdge(fake, fake.client())

    return go


async def sign_in_across_ports(session: aiohttp.ClientSession, url: str, email: str) -> aiohttp.ClientResponse:
    """Like ``fakeedge.testing.browser_login``, but following redirects to any port (plain <-> TLS)."""
    first = await session.get(url, allow_redirects=False)
    resp = await _walk_sign_in(session, first, 10, lambda _target: True, lambda _page: {"email": email})
    if resp is None:
        raise AssertionError(f"no final answer after 10 hops from {url}")
    return resp
