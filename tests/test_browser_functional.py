"""A real browser through the sign-in: Debian's Chromium, driven by Playwright, against a real edge and origin.

The aiohttp client tests check every hop byte for byte; these check what only a browser decides:
that it follows the redirects across two sites, submits the SSO page's forms, stores the cookies
with the attributes fakeedge sends (and sends them back under its SameSite rules), and ends on the
page it asked for, showing the identity the origin verified.

Event loop: Playwright's async API runs its driver as a subprocess of the running loop, so the
``browser`` fixture and the test share pytest-aiohttp's per-test loop with the edge and the origin.
Nothing may block that loop: the sync API would, and would deadlock against our own servers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, assert_never

import jwt
import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from fakeedge import headers as h
from fakeedge.config import default_aud
from fakeedge.demo import whoami_app

from .conftest import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, RunningEdge, base_config

APP_HOST = "admin.acme.test"  # the Admin app of base_config: email_domain acme.test or GitHub org acme
TIMEOUT_MS = 10_000
# the apps' names reach the edge without /etc/hosts; the team domain is 127.0.0.1 already
ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP *.acme.test 127.0.0.1"]

pytestmark = BROWSER_MARKS


@dataclass
class Reached:
    """A request that got through the edge to the origin."""

    host: str
    raw_path: str
    email: str | None


@dataclass
class Site:
    """An edge on base_config in front of the demo's whoami origin, which verifies the Admin app's assertion."""

    edge: RunningEdge
    reached: list[Reached] = field(default_factory=list)

    def url(self, path: str, host: str = APP_HOST) -> str:
        return self.edge.url(host, path)


@pytest.fixture
async def site(make_edge: Callable[..., Awaitable[RunningEdge]]) -> AsyncIterator[Site]:
    edges: list[RunningEdge] = []
    reached: list[Reached] = []
    # the issuer is read per request: the team domain's port is known only once the edge listens
    app = whoami_app(lambda: edges[0].team, default_aud("acme", "Admin"))

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        reached.append(Reached(request.host, request.raw_path, request.headers.get(h.AUTHENTICATED_USER_EMAIL)))

    app.on_response_prepare.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    edges.append(await make_edge(base_config(f"http://127.0.0.1:{runner.addresses[0][1]}")))
    yield Site(edges[0], reached)
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium; never Playwright's own download (``playwright install`` is not used)."""
    async with async_playwright() as playwright:
        # a cold start on a CI machine can take longer than a page: 30 s, still bounded
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        yield chromium
        await chromium.close()


async def new_page(browser: Browser) -> tuple[BrowserContext, Page]:
    """A fresh context (no cookies) and a page in it, every wait bounded."""
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    return context, await context.new_page()


async def open_sso_page(site: Site, page: Page, target: str) -> None:
    """Go to ``target`` on the app and check that the browser was sent to the team domain's SSO page."""
    response = await page.goto(target)
    assert response is not None and response.status == 200
    login = f"{site.edge.team}/cdn-cgi/access/login/{APP_HOST}:{site.edge.port}?kid={site.edge.aud('Admin')}&meta="
    assert page.url.startswith(login), page.url
    assert await page.locator("h1").text_content() == "Log in to Admin"


async def land_on(page: Page, url: str) -> None:
    """Wait until the browser's address is exactly ``url``; on timeout, say where it ended up instead."""
    try:
        await page.wait_for_url(lambda address: address == url)
    except PlaywrightTimeoutError:
        raise AssertionError(f"expected to land on {url}, ended on {page.url} ({await page.title()!r})") from None


SignIn = Literal["typed", "persona"]


async def sign_in(page: Page, how: SignIn, who: str) -> None:
    """Sign in on the SSO page: ``typed`` fills the email form, ``persona`` clicks a persona's button."""
    match how:
        case "typed":
            await page.fill("input[name=email]", who)
            await page.get_by_role("button", name="Sign in", exact=True).click()
        case "persona":
            await page.locator("button.persona", has_text=who).click()
        case _:
            assert_never(how)


@pytest.mark.parametrize(
    ("how", "who", "email", "country"),
    [
        ("typed", "carol@acme.test", "carol@acme.test", "US"),  # no persona: the default country
        ("persona", "Alice", "alice@acme.test", "GB"),  # the persona's attributes
    ],
    ids=["typed-email", "persona-button"],
)
async def test_sign_in_lands_on_the_original_url_showing_the_verified_identity(
    site: Site, browser: Browser, how: SignIn, who: str, email: str, country: str
) -> None:
    context, page = await new_page(browser)
    target = site.url("/some/path?q=1&r=%2Fx")
    await open_sso_page(site, page, target)
    assert site.reached == []

    signing_in = time.time()
    await sign_in(page, how, who)
    await land_on(page, target)
    landed = time.time()

    assert await page.title() == f"whoami · {email}"
    assert await page.locator("#who").text_content() == email
    verdict = await page.locator("#verdict").text_content()
    assert verdict == f"verified by PyJWT against {site.edge.team}/cdn-cgi/access/certs (signature, aud, iss, exp)"
    shown = json.loads(await page.locator("#assertion").text_content() or "null")
    assert (shown["email"], shown["aud"], shown["iss"], shown["country"]) == (
        email,
        [site.edge.aud("Admin")],
        site.edge.team,
        country,
    )
    assert site.reached[0] == Reached(f"{APP_HOST}:{site.edge.port}", "/some/path?q=1&r=%2Fx", email)

    # over plain http: no Secure, SameSite=Lax (browsers drop SameSite=None without Secure), HttpOnly
    app_cookies = {c["name"]: c for c in await context.cookies(site.url("/"))}
    assert sorted(app_cookies) == [h.CF_AUTHORIZATION]  # CF_AppSession was spent at the callback
    cookie = app_cookies[h.CF_AUTHORIZATION]
    assert (cookie["domain"], cookie["path"], cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (
        APP_HOST,
        "/",
        False,
        True,
        "Lax",
    )
    # the cookie is the very token the origin verified, and expires with it (Admin: session_duration 1h)
    assert jwt.decode(cookie["value"], options={"verify_signature": False}) == shown
    # Chromium shifts Expires by its clock's offset from the response's Date header: by the time
    # from the start of the Date's second (whole seconds) to its reading of the cookie. That is
    # under a second plus the answer's way to the browser, not under a second (a fraction of a
    # percent of runs, more on a loaded machine): bounded by the clock read around the sign-in.
    assert shown["exp"] == shown["iat"] + 3600
    assert 0 <= cookie["expires"] - shown["exp"] <= landed - math.floor(signing_in)

    team_cookies = {c["name"]: c for c in await context.cookies(site.edge.team)}
    org = team_cookies[h.CF_AUTHORIZATION]  # the team-domain session that signs in other apps silently
    assert (org["domain"], org["secure"], org["httpOnly"], org["sameSite"]) == ("127.0.0.1", False, True, "Lax")
    assert jwt.decode(org["value"], options={"verify_signature": False})["email"] == email
    await context.close()


async def test_blocked_identity_sees_the_block_page_and_the_origin_nothing(site: Site, browser: Browser) -> None:
    context, page = await new_page(browser)
    target = site.url("/some/path?q=1")
    await open_sso_page(site, page, target)

    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await sign_in(page, "persona", "Mallory")  # mallory@evil.test: neither acme.test nor GitHub org acme
    response = await answer.value
    await page.wait_for_load_state()

    assert response.status == 403
    assert response.headers["cf-access-aud"] == site.edge.aud("Admin")
    assert response.headers["cf-access-domain"] == APP_HOST
    assert await page.title() == "Forbidden ・ Cloudflare Access"
    assert await page.locator("h1").text_content() == "Forbidden"
    data = json.loads(await page.locator("#json_data").text_content() or "null")
    assert (data["status_code"], data["aud"]) == (403, site.edge.aud("Admin"))
    assert page.url.startswith(f"{site.edge.team}/cdn-cgi/access/login/")

    # signed in to the team but not to this app: another try goes through the team domain to the block page
    again = await page.goto(target)
    assert again is not None and again.status == 403
    assert await page.locator("h1").text_content() == "Forbidden"
    assert [c["name"] for c in await context.cookies(site.url("/"))] == [h.CF_APP_SESSION]
    assert site.reached == []
    await context.close()


async def test_the_block_page_lets_the_user_sign_in_as_someone_else(site: Site, browser: Browser) -> None:
    context, page = await new_page(browser)
    target = site.url("/some/path?q=1")
    await open_sso_page(site, page, target)
    await sign_in(page, "persona", "Mallory")
    await page.wait_for_load_state()
    assert await page.locator("h1").text_content() == "Forbidden"
    assert await page.locator("#signed_in_as").text_content() == "mallory@evil.test"
    refused = {c["name"]: c["value"] for c in await context.cookies(site.edge.team)}[h.CF_AUTHORIZATION]

    # the link forgets the refused team-domain session and comes back to this sign-in page
    async with page.expect_navigation():
        await page.get_by_role("link", name="Sign in as someone else").click()
    assert await page.locator("h1").text_content() == "Log in to Admin"
    assert page.url.startswith(f"{site.edge.team}/cdn-cgi/access/login/{APP_HOST}:{site.edge.port}?kid=")
    assert h.CF_AUTHORIZATION not in {c["name"] for c in await context.cookies(site.edge.team)}
    assert site.edge.edge.credential(refused) is None  # logged out, not merely forgotten by the browser

    await sign_in(page, "persona", "Alice")
    await land_on(page, target)
    assert await page.locator("#who").text_content() == "alice@acme.test"
    assert {r.email for r in site.reached} == {"alice@acme.test"}  # mallory never reached the origin
    await context.close()


async def test_team_session_signs_in_a_second_app_without_the_sso_page(site: Site, browser: Browser) -> None:
    # the team cookie is SameSite=Lax over http: a browser must still send it when an app on another
    # site redirects a top-level navigation to the team domain, or silent sign-in breaks (spec §1.3)
    context, page = await new_page(browser)
    await open_sso_page(site, page, site.url("/"))
    await sign_in(page, "persona", "Alice")
    await land_on(page, site.url("/"))

    grafana = site.url("/d/home?orgId=1", host="grafana.acme.test")
    response = await page.goto(grafana)
    assert response is not None and response.status == 200
    assert page.url == grafana
    hops = []
    request = response.request.redirected_from
    while request is not None:
        hops.append(request.url.split("?", 1)[0])
        request = request.redirected_from
    assert hops == [
        f"http://grafana.acme.test:{site.edge.port}/cdn-cgi/access/authorized",
        f"{site.edge.team}/cdn-cgi/access/login/grafana.acme.test:{site.edge.port}",
        grafana.split("?", 1)[0],
    ]
    assert Reached(f"grafana.acme.test:{site.edge.port}", "/d/home?orgId=1", "alice@acme.test") in site.reached
    await context.close()
