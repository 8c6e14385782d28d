"""Issue 13: the eager-redirect cookie setting per app (spec §14.6)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import pytest
import yarl

from fakeedge.testing import loopback_session

from .conftest import MakeEdge, Origin, RunningEdge, base_config
from .test_login_csrf_functional import _login_url, _post_form


def _app_on(origin: Origin, hosts: list[str], eager: bool | None) -> dict[str, Any]:
    cfg = base_config(origin.url)
    cfg["apps"][0]["destinations"] = hosts
    if eager is not None:
        cfg["apps"][0]["eager_redirect_cookie"] = eager
    for host in hosts:
        cfg["ingress"].insert(0, {"hostname": host, "service": origin.url})
    return cfg


async def _hosts_signed_in(edge: RunningEdge) -> list[str]:
    """Sign in on the first host; the hosts whose callback the browser passed before the final URL."""
    async with loopback_session() as client:
        first = edge.config.apps[0].destinations[0].host
        resp = await _post_form(client, await _login_url(client, edge.url(first, "/start")), "alice@acme.test")
        hosts: list[str] = []
        for _ in range(40):
            assert resp.status == 302, resp.status
            url = urljoin(str(resp.url), resp.headers["Location"])
            parsed = yarl.URL(url, encoded=True)
            if parsed.path == "/cdn-cgi/access/authorized" and "nonce" in parsed.query:
                hosts.append(parsed.host or "")
            resp = await client.get(parsed, allow_redirects=False)
            if parsed.path == "/start":
                assert resp.status == 200
                return hosts
    raise AssertionError(hosts)


TWO = ["admin.acme.test", "admin2.acme.test"]
SIX = [f"admin{i}.acme.test" for i in ("", 2, 3, 4, 5, 6)]


@pytest.mark.parametrize(
    ("hosts", "eager", "signed_in"),
    [
        (TWO, None, TWO),  # no saved setting: the old rule, eager up to five domains
        (SIX, None, SIX[:1]),  # more than five: lazily
        (TWO, False, TWO[:1]),  # off: each host asks when it is visited
        (SIX, True, SIX),  # on: every concrete domain, however many
    ],
    ids=["unset-two", "unset-six", "off", "on-six"],
)
async def test_eager_redirect_cookie(
    make_edge: MakeEdge, origin: Origin, hosts: list[str], eager: bool | None, signed_in: list[str]
) -> None:
    running = await make_edge(_app_on(origin, hosts, eager))
    assert await _hosts_signed_in(running) == signed_in
