"""Managed OAuth's authorization step in a real browser (issue 12): Debian's Chromium via Playwright.

The browser opens the authorization URL an MCP client would open, lands on the branded SSO page,
picks a persona and ends on the client's redirect URI with a code that the token endpoint takes.
A navigation to the protected MCP path itself still gets the login 302, not the 401 challenge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.async_api import Browser, Route, async_playwright

from .conftest import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, Origin, RunningEdge
from .test_oauth_functional import CALLBACK, oauth_config, pkce, register, token

pytestmark = BROWSER_MARKS
ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP *.acme.test 127.0.0.1"]
TIMEOUT_MS = 10_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        yield chromium
        await chromium.close()


@pytest.fixture
async def edge(make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin) -> RunningEdge:
    raw = oauth_config(origin.url)
    raw["branding"] = {"name": "Acme Tools SSO"}
    return await make_edge(raw)


async def test_authorization_in_chromium_through_the_branded_sso_page(edge: RunningEdge, browser: Browser) -> None:
    client = await register(edge, [CALLBACK])
    verifier, challenge = pkce()
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": CALLBACK,
        "state": "from-chromium",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    landed: list[str] = []

    async def client_callback(route: Route) -> None:
        # the MCP client's loopback listener: note the URL, show a page
        landed.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<title>done</title>")

    await context.route(CALLBACK + "*", client_callback)
    page = await context.new_page()

    # a browser navigating to the protected path keeps the 302 to the SSO page
    response = await page.goto(edge.url("mcp.acme.test", "/mcp"))
    assert response is not None and response.status == 200
    assert page.url.startswith(f"{edge.team}/cdn-cgi/access/login/mcp.acme.test:{edge.port}?")
    assert "Acme Tools SSO" in await page.content()

    await page.goto(edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/authorization") + "?" + urlencode(query))
    assert page.url.startswith(f"{edge.team}/cdn-cgi/access/login/mcp.acme.test:{edge.port}?")
    assert "Acme Tools SSO" in await page.content()
    await page.locator("button.persona", has_text="Alice").click()
    await page.wait_for_url(lambda url: url.startswith(CALLBACK))
    await context.close()

    assert len(landed) == 1
    got = {k: v[0] for k, v in parse_qs(urlsplit(landed[0]).query).items()}
    assert got["state"] == "from-chromium"
    status, body = await token(
        edge,
        {
            "grant_type": "authorization_code",
            "code": got["code"],
            "redirect_uri": CALLBACK,
            "client_id": client["client_id"],
            "code_verifier": verifier,
        },
    )
    assert status == 200, body
    resp = await edge.client.get(
        edge.url("mcp.acme.test", "/mcp"), headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert resp.status == 200
