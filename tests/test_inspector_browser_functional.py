"""The inspector page in Debian's Chromium: the live journal, a request's detail, replay as, session revoke.

And a page of another loopback origin in the same browser, which can neither read the journal nor
act through the control API. Screenshots of the page are saved in the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from fakeedge.testing import browser_login

from .conftest import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, Origin, RunningEdge, base_config

pytestmark = BROWSER_MARKS
TIMEOUT_MS = 10_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield chromium
        await chromium.close()


async def open_inspector(browser: Browser, edge: RunningEdge) -> Page:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    response = await page.goto(f"{edge.team}/cdn-cgi/fakeedge/")
    assert response is not None and response.status == 200
    await expect(page.locator("#status")).to_have_text("live")
    return page


async def test_live_rows_detail_replay_and_revoke(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin, browser: Browser, tmp_path: Path
) -> None:
    edge = await make_edge(base_config(origin.url))
    page = await open_inspector(browser, edge)

    client = edge.client
    resp = await browser_login(client, edge.url("admin.acme.test", "/"), "alice@acme.test")
    assert resp.status == 200
    spoof = {"Cf-Access-Authenticated-User-Email": "ceo@acme.test"}
    async with client.get(edge.url("admin.acme.test", "/reports"), headers=spoof) as resp:
        assert resp.status == 200
        ray = resp.headers["CF-Ray"]
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"

    # the row arrives by itself (server-sent events), no reload
    row = page.locator(f"tr.row[data-ray='{ray}']")
    await expect(row).to_contain_text("admin.acme.test/reports")
    await expect(row).to_contain_text("Allow policy 'staff' matched email_domain acme.test")

    # filters: by identity, by outcome
    await page.locator("#f-identity").fill("bob@")
    await expect(row).to_be_hidden()
    await page.locator("#f-identity").fill("alice@")
    await expect(row).to_be_visible()
    await page.locator("#f-outcome").select_option("refused")
    await expect(row).to_be_hidden()
    await page.locator("#f-outcome").select_option("")
    await page.locator("#f-identity").fill("")

    await row.click()
    await expect(page.locator("#detail-headers tr.spoofed")).to_contain_text("ceo@acme.test")
    await expect(page.locator("#detail-removed tr.spoofed")).to_contain_text("Cf-Access-Authenticated-User-Email")
    await expect(page.locator("#detail-added")).to_contain_text("alice@acme.test")
    await expect(page.locator("#detail-claims")).to_contain_text('"email": "alice@acme.test"')
    await expect(page.locator("#everyone")).to_contain_text("mallory@evil.test")

    await page.locator("#replay-as").select_option("mallory@evil.test")
    await page.locator("#replay").click()
    await expect(page.locator("#replay-result")).to_contain_text("as mallory@evil.test: deny")
    await expect(page.locator("#replay-result")).to_contain_text("no policy admits mallory@evil.test")
    await page.screenshot(path=tmp_path / "inspector-detail.png", full_page=True)

    session = page.locator("#sessions tr[data-email='alice@acme.test']")
    await expect(session).to_contain_text("Admin")
    await session.locator("button.revoke").click()
    await expect(page.locator("#status")).to_have_text("revoked alice@acme.test")
    await expect(session).to_have_count(0)
    async with client.get(edge.url("admin.acme.test", "/reports"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"].startswith(f"{edge.team}/cdn-cgi/access/login/")
    await expect(page.locator("tr.row").first).to_contain_text("not signed in")
    await page.screenshot(path=tmp_path / "inspector-revoked.png", full_page=True)

    # the other state actions, as the control API does them
    kid = edge.edge.keys.current.kid
    await page.locator("#rotate").click()
    await expect(page.locator("#status")).to_have_text("keys rotated")
    assert edge.edge.keys.current.kid != kid
    await expect(page.locator("#keys")).to_contain_text(edge.edge.keys.current.kid[:12])
    before = edge.clock.now()
    await page.locator("#advance").click()  # by the default 1h
    await expect(page.locator("#status")).to_have_text("clock advanced")
    assert edge.clock.now() - before >= 3600
    await page.locator("#reset-clock").click()
    await expect(page.locator("#status")).to_have_text("clock reset")
    assert edge.clock.now() - before < 3600
    await page.locator("#p-email").fill("carol@partner.test")
    await page.locator("#p-groups").fill("auditors, staff")
    await page.locator("#add-persona").click()
    await expect(page.locator("#personas tr[data-email='carol@partner.test']")).to_contain_text("auditors, staff")
    assert edge.config.user("carol@partner.test") is not None
    await page.locator("#fault-mode").select_option("failing")
    await page.locator("#set-fault").click()
    await expect(page.locator("#fault")).to_have_text("failing")
    async with client.get(f"{edge.team}/cdn-cgi/access/certs") as resp:
        assert resp.status == 500
    assert (tmp_path / "inspector-detail.png").stat().st_size > 10_000


ATTACK = """async (team) => {
  const out = {};
  const attempt = async (name, go) => {
    try { const resp = await go(); out[name] = "read " + resp.status + " " + (await resp.text()).slice(0, 80); }
    catch (e) { out[name] = "blocked"; }
  };
  await attempt("read", () => fetch(team + "/cdn-cgi/fakeedge/requests"));
  await attempt("read-credentials", () => fetch(team + "/cdn-cgi/fakeedge/requests", {credentials: "include"}));
  await attempt("json-post", () => fetch(team + "/cdn-cgi/fakeedge/keys/rotate",
    {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"}));
  // no-cors: sent without a preflight; the edge must refuse to act on it (the browser then also
  // withholds even the opaque answer)
  for (const [name, path, body, type] of [
    ["rotate", "keys/rotate", "{}", "text/plain"],
    ["revoke", "sessions/revoke", '{"email": "alice@acme.test"}', "application/x-www-form-urlencoded"],
    ["clock", "clock", '{"advance": "30d"}', "text/plain"],
  ]) {
    try {
      const resp = await fetch(team + "/cdn-cgi/fakeedge/" + path,
        {method: "POST", mode: "no-cors", headers: {"Content-Type": type}, body});
      out[name] = resp.type;
    } catch (e) { out[name] = "blocked"; }  // Cross-Origin-Resource-Policy: same-origin
  }
  out.events = await new Promise((resolve) => {
    const source = new EventSource(team + "/cdn-cgi/fakeedge/events");
    source.onmessage = () => { source.close(); resolve("read"); };
    source.addEventListener("request", () => { source.close(); resolve("read"); });
    source.onerror = () => { source.close(); resolve("blocked"); };
  });
  return out;
}"""


async def test_a_page_of_another_origin_cannot_read_the_journal_or_act(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin, browser: Browser
) -> None:
    edge = await make_edge(base_config(origin.url))
    resp = await browser_login(edge.client, edge.url("admin.acme.test", "/"), "alice@acme.test")
    assert resp.status == 200
    kid, now = edge.edge.keys.current.kid, edge.clock.now()

    async def another_site(request: web.Request) -> web.Response:
        return web.Response(text="<h1>another site</h1>", content_type="text/html")

    evil = web.Application()
    evil.router.add_get("/", another_site)
    runner = web.AppRunner(evil, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        context = await browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        # localhost and 127.0.0.1: two sites, both on this machine, as a developer's browser has them
        await page.goto(f"http://localhost:{runner.addresses[0][1]}/")
        results: dict[str, Any] = await page.evaluate(ATTACK, edge.team)
    finally:
        await runner.cleanup()
    assert results == {
        "read": "blocked",
        "read-credentials": "blocked",
        "json-post": "blocked",
        "rotate": "blocked",
        "revoke": "blocked",
        "clock": "blocked",
        "events": "blocked",
    }
    # nothing happened: same key, same clock, alice still signed in
    assert edge.edge.keys.current.kid == kid
    assert edge.clock.now() - now < 60
    async with edge.client.get(edge.url("admin.acme.test", "/"), allow_redirects=False) as resp:
        assert resp.status == 200


async def test_with_an_admin_token_the_browser_signs_in_with_it_as_a_password(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin, browser: Browser
) -> None:
    token = "a-long-admin-token-for-tests-0123"
    edge = await make_edge({**base_config(origin.url), "admin_token": token})
    context = await browser.new_context(http_credentials={"username": "dev", "password": token})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    response = await page.goto(f"{edge.team}/cdn-cgi/fakeedge/")
    assert response is not None and response.status == 200
    await expect(page.locator("#status")).to_have_text("live")
    async with edge.client.get(edge.url("public.acme.test", "/seen")) as resp:
        assert resp.status == 200
    await expect(page.locator("tr.row").first).to_contain_text("public.acme.test/seen")
    kid = edge.edge.keys.current.kid
    await page.locator("#rotate").click()
    await expect(page.locator("#status")).to_have_text("keys rotated")
    assert edge.edge.keys.current.kid != kid
