"""Helpers for tests that talk to a fakeedge on loopback: name resolution and the login dance."""

from __future__ import annotations

import re
import socket
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


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
    for _ in range(max_hops):
        await resp.read()
        if resp.status in (301, 302, 303, 307, 308):
            target = URL(urljoin(str(resp.url), resp.headers["Location"]))
            if target.port != port:
                return resp
            resp = await session.get(target, allow_redirects=False)
            continue
        if resp.status == 200 and "/cdn-cgi/access/login/" in resp.url.path:
            match = _CSRF.search(await resp.text())
            assert match, "the SSO page has no csrf field"
            resp = await session.post(resp.url, data={"csrf": match.group(1), "email": email}, allow_redirects=False)
            continue
        return resp
    raise AssertionError(f"no final answer after {max_hops} hops from {url}")
