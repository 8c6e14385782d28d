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
