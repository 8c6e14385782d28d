"""Issue 13 in Chromium: URL fragments survive the login (spec §14.6, fixed at Cloudflare in 2026-07)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from .conftest import BROWSER_MARKS
from .test_browser_functional import SignIn, Site, browser, land_on, new_page, open_sso_page, sign_in, site

__all__ = ["browser", "site"]  # the fixtures, shared with test_browser_functional

pytestmark = BROWSER_MARKS

# the characters encodeURIComponent used to mangle: / ? = & ; (and a space and a percent escape)
FRAGMENT = "#/reports/7?tab=a&b=c;d=%20e"


@pytest.mark.parametrize(("how", "who"), [("typed", "carol@acme.test"), ("persona", "Alice")])
async def test_the_fragment_survives_the_sign_in(site: Site, browser: Browser, how: SignIn, who: str) -> None:
    context, page = await new_page(browser)
    target = site.url("/dash?q=1") + FRAGMENT
    await open_sso_page(site, page, target)
    await sign_in(page, how, who)
    await land_on(page, target)
    assert await page.evaluate("location.hash") == FRAGMENT
    assert site.reached[0].raw_path == "/dash?q=1"  # a fragment never reaches a server
    await context.close()


async def test_purpose_justification_once_per_sign_in(site: Site, browser: Browser) -> None:
    # spec §14.5: an Allow policy asks why after the sign-in, once per session and app
    policy = site.edge.config.apps[0].policies[0]
    assert policy.name == "staff"
    object.__setattr__(policy, "purpose_justification_required", True)
    object.__setattr__(policy, "purpose_justification_prompt", "Which ticket are you working on?")
    context, page = await new_page(browser)
    target = site.url("/reports?q=1") + FRAGMENT
    await open_sso_page(site, page, target)
    await sign_in(page, "persona", "Alice")
    await page.wait_for_selector("#prompt")
    assert await page.locator("#prompt").text_content() == "Which ticket are you working on?"
    assert site.reached == []  # the origin sees nothing before the answer
    await page.get_by_role("button", name="Submit").click()  # empty: the browser refuses (required)
    assert await page.locator("#prompt").count() == 1
    await page.fill("#justification", "INC-4711: on call")
    await page.get_by_role("button", name="Submit").click()
    await land_on(page, target)
    assert site.reached[0].email == "alice@acme.test"
    await context.close()


async def test_independent_mfa_then_justification(site: Site, browser: Browser) -> None:
    # spec §14.5: the fake authenticator after the IdP, then the justification, then the app
    config = site.edge.config
    object.__setattr__(config, "mfa_required_for_all_apps", True)
    policy = config.apps[0].policies[0]
    object.__setattr__(policy, "purpose_justification_required", True)
    context, page = await new_page(browser)
    target = site.url("/deep/link") + FRAGMENT
    await open_sso_page(site, page, target)
    await sign_in(page, "persona", "Alice")
    await page.wait_for_selector("#mfa_for")
    assert site.reached == []
    await page.get_by_role("button", name="Use my security key").click()
    await page.wait_for_selector("#prompt")
    await page.fill("#justification", "deploy review")
    await page.get_by_role("button", name="Submit").click()
    await land_on(page, target)
    assert site.reached[0].email == "alice@acme.test"
    await context.close()


async def test_temporary_authentication_in_the_browser(site: Site, browser: Browser) -> None:
    # spec §14.5: request, wait, an approver grants through the control API, "Check again" lets in
    policy = site.edge.config.apps[0].policies[0]
    object.__setattr__(policy, "approval_required", True)
    context, page = await new_page(browser)
    target = site.url("/ops")
    await open_sso_page(site, page, target)
    await sign_in(page, "persona", "Alice")
    await page.fill("#approval_reason", "INC-9: restart the workers")
    await page.get_by_role("button", name="Request access").click()
    await page.wait_for_selector("#request_id")
    request_id = await page.locator("#request_id").text_content()
    await page.get_by_role("link", name="Check again").click()
    await page.wait_for_selector("#request_id")  # still waiting
    assert site.reached == []
    async with site.edge.client.post(
        f"{site.edge.team}/cdn-cgi/fakeedge/approvals", json={"id": request_id, "approve": True, "duration": "2h"}
    ) as resp:
        assert resp.status == 200
    await page.get_by_role("link", name="Check again").click()
    await land_on(page, target)
    assert site.reached[0].email == "alice@acme.test"
    await context.close()
