"""Issue 13: purpose justification after sign-in (spec §14.5), over raw HTTP: once per sign-in and app."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from fakeedge.testing import loopback_session

from .conftest import MakeEdge, Origin, RunningEdge, base_config

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _follow(client: aiohttp.ClientSession, resp: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    for _ in range(10):
        await resp.read()
        if resp.status != 302:
            return resp
        resp = await client.get(
            URL(urljoin(str(resp.url), resp.headers["Location"]), encoded=True), allow_redirects=False
        )
    raise AssertionError("no final answer")


async def _post(client: aiohttp.ClientSession, page: aiohttp.ClientResponse, **form: str) -> aiohttp.ClientResponse:
    match = CSRF.search(await page.text())
    assert match is not None
    return await client.post(page.url, data={"csrf": match.group(1), **form}, allow_redirects=False)


async def test_justification_is_asked_once_per_sign_in(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][0]["policies"][0] |= {"purpose_justification_required": True}
    running: RunningEdge = await make_edge(cfg)
    client = running.client
    url = running.url("admin.acme.test", "/x")
    login = await _follow(client, await client.get(url, allow_redirects=False))
    asked = await _post(client, login, email="alice@acme.test")
    assert asked.status == 200
    html = await asked.text()
    assert "<p id=prompt>Please enter a justification for accessing this application.</p>" in html
    assert origin.received == []
    assert running.edge.recorder is not None
    assert running.edge.recorder.all()[-1].reason == (
        "purpose_justification_required: the page that asks why, before the app"
    )
    empty = await _post(client, asked, justification="   ")
    assert empty.status == 400 and "Enter a justification of at most 1000 characters." in await empty.text()
    too_long = await _post(client, asked, justification="x" * 1001)
    assert too_long.status == 400
    done = await _follow(client, await _post(client, asked, justification="INC-4711"))
    assert done.status == 200 and origin.last.headers["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"

    # the app cookie gone: the team-domain session signs in silently, and asks no second time
    client.cookie_jar.clear_domain("admin.acme.test")
    again = await _follow(client, await client.get(url, allow_redirects=False))
    assert again.status == 200 and len(origin.received) == 2

    # another browser, another sign-in: asked again
    async with loopback_session() as other:
        login = await _follow(other, await other.get(url, allow_redirects=False))
        assert (await _post(other, login, email="alice@acme.test")).status == 200
        # a justification posted without the signed-in session is refused
        forged = await other.post(login.url, data={"csrf": "x", "justification": "y"}, allow_redirects=False)
        assert forged.status == 400
    assert len(origin.received) == 2
