"""Login CSRF, attacked on real sockets: an attacker's browser and a victim's, each its own cookie jar.

The attacker signs in and hands the victim a URL from the middle of the flow (a login URL, a
callback, a hop of the eager cookie chain). Whatever the URL, the victim must never end up with
the attacker's ``CF_Authorization``: a login URL needs a ``meta`` the edge signed for that app and
host, and every callback is bound to the ``CF_AppSession`` of the browser that was sent to it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
import yarl
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import Browser

from fakeedge import claims, tokens
from fakeedge.testing import LoopbackResolver, browser_login, loopback_session

from .conftest import CHROMIUM, MakeEdge, Origin, RunningEdge, base_config
from .test_browser_functional import browser, land_on, new_page, sign_in

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
INVALID_LINK = (
    "This sign-in link was not issued to your browser by the application, or it has expired. "
    "Please go to the URL of your application again."
)
ATTACKER = "alice@acme.test"
VICTIM = "bob@acme.test"
__all__ = ["browser"]  # the Chromium fixture, shared with test_browser_functional


def _multi_domain(origin: Origin) -> dict[str, Any]:
    """The base config with Admin on two concrete hosts (an eager cookie chain) and a wildcard."""
    cfg = base_config(origin.url)
    cfg["apps"][0]["destinations"] = ["admin2.acme.test", {"type": "public", "uri": "*.admin.acme.test"}]
    cfg["ingress"].insert(0, {"hostname": "admin2.acme.test", "service": origin.url})
    return cfg


@pytest.fixture
async def multi(make_edge: MakeEdge, origin: Origin) -> RunningEdge:
    running: RunningEdge = await make_edge(_multi_domain(origin))
    return running


@pytest.fixture
async def jars() -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    """Two browsers: the attacker's and the victim's, sharing nothing."""
    async with loopback_session() as attacker, loopback_session() as victim:
        yield attacker, victim


def _payload(jwt: str) -> dict[str, Any]:
    segment = jwt.split(".")[1]
    parsed: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return parsed


def _with_meta(login: str, meta: str | None) -> yarl.URL:
    url = yarl.URL(login, encoded=True)
    query = {k: v for k, v in url.query.items() if k != "meta"}
    if meta is not None:
        query = {"kid": query["kid"], "meta": meta, "redirect_url": query["redirect_url"]}
    return url.with_query(query)


async def _login_url(client: aiohttp.ClientSession, url: str) -> str:
    resp = await client.get(url, allow_redirects=False)
    assert resp.status == 302, resp.status
    return str(resp.headers["Location"])


async def _post_form(client: aiohttp.ClientSession, login: yarl.URL | str, email: str) -> aiohttp.ClientResponse:
    """Open the SSO page and post ``email``; the CSRF cookie comes from that page (or an earlier one)."""
    page = await client.get(login, allow_redirects=False)
    csrf = CSRF.search(await page.text()) if page.status == 200 else None
    token = csrf.group(1) if csrf else _cookie(client, "CF_Session") or "none"
    return await client.post(login, data={"csrf": token, "email": email}, allow_redirects=False)


def _cookie(client: aiohttp.ClientSession, name: str) -> str | None:
    for morsel in client.cookie_jar:
        if morsel.key == name:
            return morsel.value
    return None


def _authorizations(client: aiohttp.ClientSession) -> list[str]:
    """Every ``CF_Authorization`` the jar holds, team domain and app hosts alike."""
    return [m.value for m in client.cookie_jar if m.key == "CF_Authorization" and m.value]


async def _follow(client: aiohttp.ClientSession, url: str, limit: int = 12) -> aiohttp.ClientResponse:
    """Open ``url`` as a browser would: follow redirects, bounded."""
    resp = await client.get(yarl.URL(url, encoded=True), allow_redirects=False)
    for _ in range(limit):
        await resp.read()
        if resp.status not in (301, 302, 303, 307, 308):
            return resp
        resp = await client.get(
            yarl.URL(urljoin(str(resp.url), resp.headers["Location"]), encoded=True), allow_redirects=False
        )
    raise AssertionError(f"still redirecting after {limit} hops from {url}")


async def _assert_not_signed_in(edge: RunningEdge, victim: aiohttp.ClientSession) -> None:
    assert _authorizations(victim) == []
    hosts = [h for h in ("admin.acme.test", "admin2.acme.test") if edge.edge.index.apps_for_host(h)]
    for host in hosts:
        resp = await victim.get(edge.url(host, "/private"), allow_redirects=False)
        assert resp.status == 302 and "/cdn-cgi/access/login/" in resp.headers["Location"], host


# -- a login URL whose meta does not verify is refused ---------------------------------------------


def _forged(edge: RunningEdge, meta: str) -> str:
    """The same claims, the attacker's ``app_session_hash``, signed by a key the edge never had."""
    payload = {**_payload(meta), "app_session_hash": claims.app_session_hash("nattacker00000000")}
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    head = {"typ": "JWT", "alg": "RS256", "kid": edge.edge.keys.current.kid}
    return tokens.sign(payload, edge.edge.keys.current, header=head, private_key=foreign)


async def _bad_meta(kind: str, edge: RunningEdge, attacker: aiohttp.ClientSession, meta: str) -> str | None:
    match kind:
        case "missing":
            return None
        case "empty":
            return ""
        case "garbage":
            return "not-a-jwt"
        case "huge":
            return "a." * 3000 + "b"  # over 4 KiB, under the request line limit
        case "forged":
            return _forged(edge, meta)
        case "unsigned":
            header = tokens.b64url(b'{"alg":"none","typ":"JWT"}')
            return f"{header}.{tokens.b64url(json.dumps(_payload(meta)).encode())}."
        case "expired":
            edge.clock.advance(301)  # meta lives five minutes (spec §1.2)
            return meta
        case "other-app":
            other = yarl.URL(await _login_url(attacker, edge.url("grafana.acme.test")), encoded=True)
            return other.query["meta"]
        case "other-host":
            other = yarl.URL(await _login_url(attacker, edge.url("admin2.acme.test")), encoded=True)
            return other.query["meta"]
        case "match-token":
            # a JWT the edge signs for anyone who asks (cloudflared's metadata probe): not a meta
            resp = await attacker.head(
                edge.url("admin.acme.test"), headers={"cf-access-metadata-request": "true"}, allow_redirects=False
            )
            return str(resp.headers["cf-access-metadata"])
    raise AssertionError(kind)


BAD_METAS = [
    "missing",
    "empty",
    "garbage",
    "huge",
    "forged",
    "unsigned",
    "expired",
    "other-app",
    "other-host",
    "match-token",
]


@pytest.mark.parametrize("kind", BAD_METAS)
async def test_a_login_url_without_a_verified_meta_is_refused(
    multi: RunningEdge, jars: tuple[aiohttp.ClientSession, aiohttp.ClientSession], origin: Origin, kind: str
) -> None:
    attacker, victim = jars
    login = await _login_url(attacker, multi.url("admin.acme.test"))
    assert (await attacker.get(login)).status == 200  # a genuine page: the attacker holds a CSRF cookie
    tampered = _with_meta(login, await _bad_meta(kind, multi, attacker, yarl.URL(login, encoded=True).query["meta"]))

    page = await attacker.get(tampered, allow_redirects=False)
    assert page.status == 400
    text = await page.text()
    assert "<h1>Invalid login link</h1>" in text and INVALID_LINK in text
    assert page.headers["Cache-Control"].startswith("private, max-age=0, no-store")
    if kind != "expired":  # (a form posted after the meta's five minutes: see the grace test below)
        # posting the form anyway, with the genuine page's CSRF cookie, gets no callback either
        resp = await _post_form(attacker, tampered, ATTACKER)
        assert resp.status == 400 and INVALID_LINK in await resp.text()
        assert "Location" not in resp.headers
    assert _authorizations(attacker) == []

    # and the attacker's team-domain session cannot mint an unbound callback silently either
    await browser_login(attacker, multi.url("grafana.acme.test"), ATTACKER)
    silent = await attacker.get(tampered, allow_redirects=False)
    assert silent.status == 400 and "Location" not in silent.headers
    await _assert_not_signed_in(multi, victim)
    assert all(r.headers["Host"].startswith("grafana.") for r in origin.received)


async def test_the_meta_less_attack_end_to_end(
    edge: RunningEdge, jars: tuple[aiohttp.ClientSession, aiohttp.ClientSession], origin: Origin
) -> None:
    """The issue's reproduction: a login URL typed by hand, signed into, its callback handed on."""
    attacker, victim = jars
    login = f"{edge.team}/cdn-cgi/access/login/admin.acme.test:{edge.port}?kid={edge.aud('Admin')}&redirect_url=%2F"
    resp = await _post_form(attacker, login, ATTACKER)
    assert resp.status == 400
    callback = resp.headers.get("Location")
    if callback is not None:  # (what the edge did before: give the victim the attacker's session)
        await _follow(victim, callback)
    await _assert_not_signed_in(edge, victim)
    assert origin.received == []


# -- a callback works only in the browser that was sent to the login -------------------------------


@pytest.mark.parametrize("how", ["form", "silent"])
async def test_a_callback_handed_to_another_browser_is_refused(
    edge: RunningEdge, jars: tuple[aiohttp.ClientSession, aiohttp.ClientSession], origin: Origin, how: str
) -> None:
    attacker, victim = jars
    if how == "silent":
        await browser_login(attacker, edge.url("grafana.acme.test"), ATTACKER)  # an org session first
        resp = await attacker.get(await _login_url(attacker, edge.url("admin.acme.test")), allow_redirects=False)
    else:
        resp = await _post_form(attacker, await _login_url(attacker, edge.url("admin.acme.test")), ATTACKER)
    assert resp.status == 302
    callback = resp.headers["Location"]
    assert "/cdn-cgi/access/authorized?nonce=" in callback
    received = len(origin.received)

    refused = await victim.get(callback, allow_redirects=False)
    assert refused.status == 400
    assert "Invalid login session" in await refused.text()
    await _assert_not_signed_in(edge, victim)
    # a victim who already has a CF_AppSession of its own (it was sent to a login too) fares the same
    await _login_url(victim, edge.url("admin.acme.test"))
    assert (await victim.get(callback, allow_redirects=False)).status == 400
    await _assert_not_signed_in(edge, victim)
    assert len(origin.received) == received


# -- the eager cookie chain: every hop bound -------------------------------------------------------


async def _chain_urls(edge: RunningEdge, client: aiohttp.ClientSession, email: str) -> list[str]:
    """Sign in on admin.acme.test and follow the chain to its end, returning every URL opened."""
    resp = await _post_form(client, await _login_url(client, edge.url("admin.acme.test", "/start")), email)
    urls: list[str] = []
    for _ in range(10):
        assert resp.status == 302, (resp.status, urls)
        urls.append(urljoin(str(resp.url), resp.headers["Location"]))
        resp = await client.get(yarl.URL(urls[-1], encoded=True), allow_redirects=False)
        if urls[-1].endswith("/start"):
            assert resp.status == 200
            return urls
    raise AssertionError(urls)


async def test_the_eager_chain_is_an_ordinary_bound_sign_in_on_each_host(
    multi: RunningEdge, jars: tuple[aiohttp.ClientSession, aiohttp.ClientSession], origin: Origin
) -> None:
    user, _ = jars
    urls = await _chain_urls(multi, user, ATTACKER)
    h1, h2 = f"http://admin.acme.test:{multi.port}", f"http://admin2.acme.test:{multi.port}"
    shapes = [re.sub(r"=[^&]+", "=…", u) for u in urls]
    assert shapes == [
        f"{h1}/cdn-cgi/access/authorized?nonce=…&state=…",
        f"{h2}/cdn-cgi/access/authorized?chain=…",
        f"{multi.team}/cdn-cgi/access/login/admin2.acme.test:{multi.port}?kid=…&meta=…&redirect_url=…&chain=…",
        f"{h2}/cdn-cgi/access/authorized?nonce=…&state=…",
        f"{h1}/start",
    ]
    # admin2's own meta carries the hash of admin2's own CF_AppSession
    meta = yarl.URL(urls[2], encoded=True).query["meta"]
    assert _payload(meta)["hostname"] == f"admin2.acme.test:{multi.port}"
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == ATTACKER
    assert (await user.get(multi.url("admin2.acme.test", "/x"), allow_redirects=False)).status == 200


@pytest.mark.parametrize("stop", [1, 2, 3], ids=["chain-start", "team-login", "second-callback"])
async def test_a_leaked_eager_chain_hop_is_useless_in_another_browser(
    multi: RunningEdge, jars: tuple[aiohttp.ClientSession, aiohttp.ClientSession], origin: Origin, stop: int
) -> None:
    """The attacker follows the chain up to a hop, keeps that hop's URL unopened, hands it on."""
    attacker, victim = jars
    resp = await _post_form(attacker, await _login_url(attacker, multi.url("admin.acme.test", "/start")), ATTACKER)
    for _ in range(stop):
        resp = await attacker.get(
            yarl.URL(urljoin(str(resp.url), resp.headers["Location"]), encoded=True), allow_redirects=False
        )
        assert resp.status == 302
    leaked = urljoin(str(resp.url), resp.headers["Location"])
    assert "admin2.acme.test" in leaked

    await _follow(victim, leaked)
    await _assert_not_signed_in(multi, victim)
    assert all(r.headers.get("Cf-Access-Authenticated-User-Email") != ATTACKER for r in origin.received)


async def test_a_leaked_chain_hop_opened_by_a_signed_in_victim_keeps_the_victim_s_identity(
    multi: RunningEdge, jars: tuple[aiohttp.ClientSession, aiohttp.ClientSession], origin: Origin
) -> None:
    attacker, victim = jars
    await browser_login(victim, multi.url("grafana.acme.test"), VICTIM)  # the victim's own org session
    resp = await _post_form(attacker, await _login_url(attacker, multi.url("admin.acme.test", "/start")), ATTACKER)
    resp = await attacker.get(resp.headers["Location"], allow_redirects=False)  # admin.acme.test's callback
    leaked = resp.headers["Location"]  # the chain's start on admin2.acme.test
    final = await _follow(victim, leaked)
    assert final.status == 200
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == VICTIM
    for token in _authorizations(victim):
        assert _payload(token)["email"] == VICTIM


# -- cloudflared's org-token exchange (spec §9.2): HEAD requests, cookies set by hand ---------------


async def test_cloudflared_org_token_exchange_with_head_requests(edge: RunningEdge) -> None:
    await browser_login(edge.client, edge.url("grafana.acme.test"), ATTACKER)
    (org,) = [m.value for m in edge.client.cookie_jar if m.key == "CF_Authorization" and m["domain"] == "127.0.0.1"]
    assert _payload(org)["type"] == "org"

    connector = aiohttp.TCPConnector(resolver=LoopbackResolver())
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as cloudflared:
        # token.go handleRedirects: the org token on the login hop, the first hop's CF_AppSession on
        # the authorized hop, and stop after the authorized hop
        resp = await cloudflared.head(edge.url("admin.acme.test", "/api"), allow_redirects=False)
        assert resp.status == 302
        app_session = resp.cookies["CF_AppSession"].value
        login = yarl.URL(resp.headers["Location"], encoded=True)
        assert "/cdn-cgi/access/login/" in login.path
        resp = await cloudflared.head(login, headers={"Cookie": f"CF_Authorization={org}"}, allow_redirects=False)
        assert resp.status == 302
        callback = yarl.URL(resp.headers["Location"], encoded=True)
        assert callback.path == "/cdn-cgi/access/authorized"
        resp = await cloudflared.head(
            callback, headers={"Cookie": f"CF_AppSession={app_session}"}, allow_redirects=False
        )
        assert resp.status == 302
        app_token = resp.cookies["CF_Authorization"].value
    claims_ = _payload(app_token)
    assert (claims_["type"], claims_["aud"], claims_["email"]) == ("app", [edge.aud("Admin")], ATTACKER)
    async with loopback_session() as fresh:
        resp = await fresh.get(
            edge.url("admin.acme.test", "/api"), headers={"Cf-Access-Token": app_token}, allow_redirects=False
        )
        assert resp.status == 200


# -- the form may be posted a while after the meta's five minutes ----------------------------------


async def test_a_slow_form_post_still_signs_in_within_the_grace(edge: RunningEdge) -> None:
    login = await _login_url(edge.client, edge.url("admin.acme.test"))
    page = await edge.client.get(login)
    csrf = CSRF.search(await page.text())
    assert csrf is not None
    edge.clock.advance(20 * 60)  # the user went for coffee: the meta expired, its signature still holds
    resp = await edge.client.post(login, data={"csrf": csrf.group(1), "email": ATTACKER}, allow_redirects=False)
    assert resp.status == 302 and "/cdn-cgi/access/authorized?nonce=" in resp.headers["Location"]
    assert (await _follow(edge.client, resp.headers["Location"])).status == 200

    late = await _login_url(edge.client, edge.url("grafana.acme.test"))
    edge.clock.advance(300 + 3600 + 1)
    resp = await edge.client.post(late, data={"csrf": csrf.group(1), "email": ATTACKER}, allow_redirects=False)
    assert resp.status == 400 and INVALID_LINK in await resp.text()


# -- the eager chain in a real browser: SameSite=Lax team cookie across the redirects ---------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
async def test_the_eager_chain_in_chromium(multi: RunningEdge, origin: Origin, browser: Browser) -> None:
    context, page = await new_page(browser)
    start = multi.url("admin.acme.test", "/start")
    await page.goto(start)
    assert page.url.startswith(f"{multi.team}/cdn-cgi/access/login/admin.acme.test:{multi.port}?kid=")
    await sign_in(page, "persona", "Alice")
    await land_on(page, start)
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == ATTACKER

    # admin2.acme.test got its cookie on the way: no redirect when the browser goes there
    second = multi.url("admin2.acme.test", "/x")
    response = await page.goto(second)
    assert response is not None and response.status == 200 and response.request.redirected_from is None
    # not origin.last: Chromium may ask for the first page's /favicon.ico at any moment
    got = [r for r in origin.received if r.path == "/x"]
    assert [r.headers["Host"] for r in got] == [f"admin2.acme.test:{multi.port}"]
    names = sorted(c["name"] for c in await context.cookies(second))
    assert names == ["CF_Authorization"]  # admin2's CF_AppSession was spent at its callback
    await context.close()
