"""Issue 13: temporary authentication (spec §14.5): a request, an approver's answer through the control API,
a grant of at most 24 h, asked again every sign-in; the origin sees nothing before the approval."""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL

from fakeedge.clock import Clock
from fakeedge.testing import loopback_session

from .conftest import MakeEdge, Origin, RunningEdge, base_config
from .test_today_justification import _follow, _post


async def _control(edge: RunningEdge, method: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with edge.client.request(method, f"{edge.team}/cdn-cgi/fakeedge/approvals", json=body) as resp:
        return resp.status, await resp.json()


async def _ask(client: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    login = await _follow(client, await client.get(url, allow_redirects=False))
    form = await _post(client, login, email="alice@acme.test")
    assert form.status == 200 and 'name="approval_reason"' in await form.text()
    return await _follow(client, await _post(client, form, approval_reason="prod incident INC-1"))


async def test_temporary_authentication(make_edge: MakeEdge, origin: Origin) -> None:
    clock = Clock()
    clock.freeze(1_800_000_000)
    cfg = base_config(origin.url)
    cfg["apps"][0]["policies"][0] |= {"approval_required": True}
    cfg["apps"][0]["session_duration"] = "24h"  # longer than the grant, which bounds the app's cookie
    running: RunningEdge = await make_edge(cfg, clock=clock)
    url = running.url("admin.acme.test", "/x")
    async with loopback_session() as browser:
        waiting = await _ask(browser, url)
        assert waiting.status == 200 and "Waiting for approval" in await waiting.text()
        status, listed = await _control(running, "GET")
        (request,) = listed["approvals"]
        assert (status, request["email"], request["app"], request["reason"], request["state"]) == (
            200,
            "alice@acme.test",
            "Admin",
            "prod incident INC-1",
            "pending",
        )
        assert _last_reason(running) == f"temporary authentication: request {request['id']} awaits an approver"
        # "Check again" before the approval: still waiting, the origin untouched
        again = await _follow(browser, await browser.get(url, allow_redirects=False))
        assert "Waiting for approval" in await again.text()
        assert origin.received == []

        assert (await _control(running, "POST", {"id": request["id"], "approve": True, "duration": "25h"}))[0] == 400
        status, granted = await _control(running, "POST", {"id": request["id"], "approve": True, "duration": "1h"})
        assert (status, granted["state"], granted["until"]) == (200, "approved", 1_800_003_600)
        done = await _follow(browser, await browser.get(url, allow_redirects=False))
        assert done.status == 200 and origin.last.headers["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"

        # the app's cookie lasts as long as the grant, not the app's session: when the grant runs
        # out, the cookie still in the browser lets nothing through and the user asks again
        assert browser.cookie_jar.filter_cookies(URL(url))["CF_Authorization"]
        clock.advance(3601)
        asked = await _follow(browser, await browser.get(url, allow_redirects=False))
        assert 'name="approval_reason"' in await asked.text()
        assert _last_reason(running) == "temporary authentication (approval_required): the page that asks for access"

    # another sign-in asks again, and a denial is a 403
    async with loopback_session() as other:
        await _ask(other, url)
        pending = [a for a in (await _control(running, "GET"))[1]["approvals"] if a["state"] == "pending"]
        assert len(pending) == 1
        status, denied = await _control(running, "POST", {"id": pending[0]["id"], "approve": False})
        assert (status, denied["state"]) == (200, "denied")
        refused = await _follow(other, await other.get(url, allow_redirects=False))
        assert refused.status == 403 and "Request denied" in await refused.text()
        assert _last_reason(running) == f"temporary authentication: request {pending[0]['id']} was denied"
    assert len(origin.received) == 1
    running.edge.end_sessions()  # a shared edge's reset(): the ended sign-ins' requests go too
    assert await _control(running, "GET") == (200, {"approvals": []})
    assert await _control(running, "POST", {"id": "nope", "approve": True}) == (
        400,
        {"error": "no approval request 'nope'"},
    )


def _last_reason(running: RunningEdge) -> str | None:
    """The journal's reason for the last request that was no control call."""
    assert running.edge.recorder is not None
    return [r for r in running.edge.recorder.all() if r.kind != "control"][-1].reason
