"""A Playwright storageState from the control API's login (issue 11): Chromium opens the app signed in,
as the edge's own session, which a reset ends; a service token's cookies carry navigations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from fakeedge.testing import one_app
from fakeedge.testing_sync import SyncEdge, chromium_args, loopback_requests_session, start_edge

from .conftest import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS
from .test_toolkit_browser import origin

pytestmark = BROWSER_MARKS
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def edge() -> Iterator[SyncEdge]:
    with start_edge(one_app(origin, "alice@acme.test", service_token="ci")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *chromium_args()])
        yield chromium
        chromium.close()


def _login(edge: SyncEdge, **body: Any) -> dict[str, Any]:
    resp = loopback_requests_session().post(f"{edge.team_domain}/cdn-cgi/fakeedge/login", json={"app": "App", **body})
    assert resp.status_code == 200, resp.text
    state: dict[str, Any] = resp.json()["storage_state"]
    return state


def test_the_control_apis_storage_state_opens_the_app_until_reset(edge: SyncEdge, browser: Browser) -> None:
    context = browser.new_context(storage_state=_login(edge, email="alice@acme.test"))  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(edge.url("App"), timeout=TIMEOUT_MS)
    assert page.locator("#who").inner_text(timeout=TIMEOUT_MS) == "alice@acme.test"
    assert "/cdn-cgi/access/login/" not in page.url
    edge.reset()  # the edge's own session: the same cookies meet the login wall now
    page.goto(edge.url("App"), timeout=TIMEOUT_MS)
    assert "/cdn-cgi/access/login/" in page.url
    context.close()


def test_a_service_tokens_storage_state_carries_navigations(edge: SyncEdge, browser: Browser) -> None:
    context = browser.new_context(storage_state=_login(edge, service_token="ci"))  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(edge.url("App"), timeout=TIMEOUT_MS)
    assert page.locator("#who").inner_text(timeout=TIMEOUT_MS) == edge.service_token("ci")["CF-Access-Client-Id"]
    context.close()
    edge.reset()
