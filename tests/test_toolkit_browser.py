"""E2E suites past the login wall: Playwright for Python (sync API) in Debian's Chromium against a sync
edge and a Flask origin that verifies the assertion. Three ways in: a stored state from
``edge.storage_state()``, the fake SSO page, and a service token's headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flask
import jwt
import pytest
from playwright.sync_api import Browser, sync_playwright

from fakeedge.testing import one_app
from fakeedge.testing_sync import SyncEdge, chromium_args, start_edge

from .conftest import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS

pytestmark = BROWSER_MARKS
TIMEOUT_MS = 10_000


def origin(edge: Any) -> flask.Flask:
    app = flask.Flask("origin")
    jwks = jwt.PyJWKClient(edge.certs_url)

    @app.get("/")
    def home() -> Any:
        token = flask.request.headers.get("Cf-Access-Jwt-Assertion", "")
        try:
            key = jwks.get_signing_key_from_jwt(token)
            c = jwt.decode(token, key.key, algorithms=["RS256"], audience=edge.aud("App"), issuer=edge.team_domain)
        except jwt.PyJWTError:
            return "refused", 401
        who = c.get("email") or c.get("common_name")
        return f'<!doctype html><title>home</title><p id="who">{who}</p>'

    return app


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


@pytest.fixture(autouse=True)
def _reset(edge: SyncEdge) -> Iterator[None]:
    yield
    edge.reset()


def test_a_stored_state_opens_the_app_signed_in(edge: SyncEdge, browser: Browser) -> None:
    context = browser.new_context(storage_state=edge.storage_state("alice@acme.test"))  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(edge.url("App"), timeout=TIMEOUT_MS)
    assert page.locator("#who").inner_text(timeout=TIMEOUT_MS) == "alice@acme.test"
    # the page (and Chromium's favicon request) went straight to the origin: no sign-in hop
    assert (edge.requests[0].path, edge.requests[0].email) == ("/", "alice@acme.test")
    context.close()


def test_without_it_the_browser_meets_the_sso_page_and_signs_in(edge: SyncEdge, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(edge.url("App"), timeout=TIMEOUT_MS)
    assert "/cdn-cgi/access/login/" in page.url
    page.fill("input[name=email]", "alice@acme.test")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(edge.url("App"), timeout=TIMEOUT_MS)
    assert page.locator("#who").inner_text(timeout=TIMEOUT_MS) == "alice@acme.test"
    context.close()


def test_a_service_token_header_route(edge: SyncEdge, browser: Browser) -> None:
    context = browser.new_context(extra_http_headers=edge.service_token("ci"))
    page = context.new_page()
    page.goto(edge.url("App"), timeout=TIMEOUT_MS)
    assert page.locator("#who").inner_text(timeout=TIMEOUT_MS) == edge.config.service_tokens[0].client_id
    context.close()


def test_a_state_from_before_a_reset_meets_the_wall_again(edge: SyncEdge, browser: Browser) -> None:
    state = edge.storage_state("alice@acme.test")
    edge.reset()
    context = browser.new_context(storage_state=state)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(edge.url("App"), timeout=TIMEOUT_MS)
    assert "/cdn-cgi/access/login/" in page.url
    context.close()
