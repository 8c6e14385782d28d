"""Chromium over HTTPS with fakeedge's CA trusted the way a user trusts it: in an NSS database.

The CA goes into ``$HOME/.pki/nssdb`` of a ``HOME`` made for the test (``certutil``, Debian's
``libnss3-tools``); ``--ignore-certificate-errors`` is never used, so a wrong certificate fails
here as it would for a user. The real names reach the edge through ``--host-resolver-rules``,
port 443 mapped to the TLS listener's, so every URL is the production one:
``https://admin.acme.test/`` and ``https://acme.cloudflareaccess.com/cdn-cgi/access/login/...``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Error, async_playwright

from fakeedge import headers as h

from .conftest import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, Origin, base_config
from .tls_support import MakeTLSEdge, TLSEdge, make_tls_edge

__all__ = ["make_tls_edge"]
TEAM = "https://acme.cloudflareaccess.com"
TIMEOUT_MS = 10_000
pytestmark = BROWSER_MARKS


def nss_home(root: Path, ca_file: Path | None) -> Path:
    """A HOME whose NSS database trusts ``ca_file`` for TLS servers (none trusted: ``ca_file=None``)."""
    certutil = shutil.which("certutil")
    if certutil is None:
        message = "needs certutil to make an NSS database (apt-get install libnss3-tools)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it (.ci/run): never let this test silently vanish there
        pytest.skip(message)
    db = root / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True, timeout=30)
    if ca_file is not None:
        subprocess.run(
            [certutil, "-A", "-d", f"sql:{db}", "-t", "C,,", "-n", "fakeedge test CA", "-i", str(ca_file)],
            check=True,
            timeout=30,
        )
    return root


Launch = Callable[[Path, int], Coroutine[Any, Any, Browser]]


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    """Start headless Debian Chromium with a given HOME; every browser is closed at the end."""
    browsers: list[Browser] = []
    async with async_playwright() as playwright:

        async def go(home: Path, tls_port: int) -> Browser:
            rules = f"MAP acme.cloudflareaccess.com:443 127.0.0.1:{tls_port}, MAP *.acme.test:443 127.0.0.1:{tls_port}"
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"],
                env={**os.environ, "HOME": str(home)},
                timeout=30_000,
            )
            browsers.append(browser)
            return browser

        yield go
        for browser in reversed(browsers):
            await browser.close()


@pytest.fixture
async def acme(make_tls_edge: MakeTLSEdge, origin: Origin) -> TLSEdge:
    return await make_tls_edge({**base_config(origin.url), "team_domain": TEAM})


async def test_sign_in_over_https_with_the_ca_in_nss(
    acme: TLSEdge, origin: Origin, launch: Launch, tmp_path: Path
) -> None:
    browser = await launch(nss_home(tmp_path / "home", acme.ca.cert_path), acme.tls_port)
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()

    response = await page.goto("https://admin.acme.test/reports?q=1")
    assert response is not None and response.status == 200
    login = f"{TEAM}/cdn-cgi/access/login/admin.acme.test?kid={acme.aud('Admin')}&meta="
    assert page.url.startswith(login), page.url
    security = await response.security_details()
    assert security is not None
    valid_from, valid_to = security.get("validFrom"), security.get("validTo")
    assert valid_from is not None and valid_to is not None
    # the login page's certificate: the team domain's leaf, issued at start for 90 days (and a day back)
    assert (security["subjectName"], valid_to - valid_from) == (
        "acme.cloudflareaccess.com",
        91 * 86400,
    )

    await page.fill("input[name=email]", "carol@acme.test")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url("https://admin.acme.test/reports?q=1")
    assert json.loads(await page.locator("body").text_content() or "") == {"path": "/reports?q=1", "size": 0}

    received = origin.last
    assert (received.headers["X-Forwarded-Proto"], received.headers["CF-Visitor"]) == ("https", '{"scheme":"https"}')
    assert received.headers[h.AUTHENTICATED_USER_EMAIL] == "carol@acme.test"

    # over https the browser keeps SameSite=None cookies (it drops them without Secure)
    (app_cookie,) = [c for c in await context.cookies("https://admin.acme.test/") if c["name"] == h.CF_AUTHORIZATION]
    assert (app_cookie["domain"], app_cookie["secure"], app_cookie["httpOnly"], app_cookie["sameSite"]) == (
        "admin.acme.test",
        True,
        True,
        "None",
    )
    team_cookies = {c["name"]: c for c in await context.cookies(TEAM)}
    org = team_cookies[h.CF_AUTHORIZATION]
    assert (org["domain"], org["secure"], org["sameSite"]) == ("acme.cloudflareaccess.com", True, "None")
    await context.close()


async def test_chromium_refuses_what_a_user_would_be_refused(acme: TLSEdge, launch: Launch, tmp_path: Path) -> None:
    trusting = await launch(nss_home(tmp_path / "trusting", acme.ca.cert_path), acme.tls_port)
    page = await trusting.new_page()
    # a name fakeedge has no certificate for: it gets the team domain's, and Chromium says so
    with pytest.raises(Error) as err:
        await page.goto("https://nowhere.acme.test/", timeout=TIMEOUT_MS)
    assert err.value.message.splitlines()[0] == (
        "Page.goto: net::ERR_CERT_COMMON_NAME_INVALID at https://nowhere.acme.test/"
    )

    # a HOME whose NSS database does not hold the CA: the same page is untrusted
    stranger = await launch(nss_home(tmp_path / "stranger", None), acme.tls_port)
    page = await stranger.new_page()
    with pytest.raises(Error) as err:
        await page.goto("https://admin.acme.test/", timeout=TIMEOUT_MS)
    assert err.value.message.splitlines()[0] == "Page.goto: net::ERR_CERT_AUTHORITY_INVALID at https://admin.acme.test/"
