"""The browser sign-in on real sockets, hop by hop: SSO page, callback, cookies, re-login, logout."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import pytest
import yarl

from fakeedge.config import parse_config
from fakeedge.demo import DEMO_ADMITS
from fakeedge.edge import Edge
from fakeedge.testing import browser_login, loopback_session
from fakeedge.web_app import AccessLog, start

from .conftest import MakeEdge, Origin, RunningEdge, base_config, copy_test_key

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _login_page(edge: RunningEdge, url: str) -> tuple[aiohttp.ClientResponse, str]:
    resp = await edge.client.get(url, allow_redirects=False)
    assert resp.status == 302
    login = resp.headers["Location"]
    page = await edge.client.get(login, allow_redirects=False)
    assert page.status == 200
    return page, login


async def test_the_whole_dance_hop_by_hop(edge: RunningEdge, origin: Origin) -> None:
    start = edge.url("admin.acme.test", "/reports?month=2026-11")
    page, login = await _login_page(edge, start)
    html = await page.text()
    assert "<title>Sign in ・ Cloudflare Access</title>" in html
    assert "Log in to Admin" in html
    assert 'value="alice@acme.test"' in html and 'value="bob@acme.test"' in html  # one button per persona
    assert '<form method="post">' in html and 'name="email" type="email"' in html
    assert page.headers["cf-access-domain"] == "admin.acme.test"
    csrf_cookie = page.cookies["CF_Session"]
    assert csrf_cookie["httponly"] and not csrf_cookie["secure"]

    csrf = CSRF.search(html)
    assert csrf is not None
    resp = await edge.client.post(
        login, data={"csrf": csrf.group(1), "email": "alice@acme.test"}, allow_redirects=False
    )
    assert resp.status == 302
    callback = urlsplit(resp.headers["Location"])
    assert (callback.scheme, callback.netloc, callback.path) == (
        "http",
        f"admin.acme.test:{edge.port}",
        "/cdn-cgi/access/authorized",
    )
    assert [k for k, _ in parse_qsl(callback.query)] == ["nonce", "state"]
    org = resp.cookies["CF_Authorization"]  # the org session, on the team domain
    assert org["httponly"] and org["samesite"] == "Lax" and not org["secure"]
    org_claims = json.loads(__import__("base64").urlsafe_b64decode(org.value.split(".")[1] + "=="))
    assert org_claims["type"] == "org"

    resp = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == start
    app_cookie = resp.cookies["CF_Authorization"]
    assert app_cookie["path"] == "/" and app_cookie["httponly"] and app_cookie["samesite"] == "Lax"
    assert not app_cookie["secure"]  # plain http: browsers would drop a Secure cookie here

    resp = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert resp.status == 200
    assert origin.last.path == "/reports?month=2026-11"
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"
    assert origin.last.headers["Cf-Access-Jwt-Assertion"] == app_cookie.value


async def test_typed_address_without_persona_gets_default_attributes(edge: RunningEdge, origin: Origin) -> None:
    resp = await browser_login(edge.client, edge.url("admin.acme.test"), "Carol@Acme.test")
    assert resp.status == 200
    claims = json.loads(
        __import__("base64").urlsafe_b64decode(origin.last.headers["Cf-Access-Jwt-Assertion"].split(".")[1] + "==")
    )
    assert claims["email"] == "Carol@Acme.test"  # case kept, as IdPs send it
    assert claims["country"] == "US"


async def test_allow_any_email_false_refuses_strangers(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["allow_any_email"] = False
    running = await make_edge(cfg)
    resp = await browser_login(running.client, running.url("admin.acme.test"), "carol@acme.test")
    assert resp.status == 403
    assert "carol@acme.test is not one of the configured users." in await resp.text()
    resp = await browser_login(running.client, running.url("admin.acme.test"), "bob@acme.test")
    assert resp.status == 200


async def _callback(edge: RunningEdge, client: aiohttp.ClientSession, email: str = "alice@acme.test") -> str:
    resp = await client.get(edge.url("admin.acme.test"), allow_redirects=False)
    login = resp.headers["Location"]
    html = await (await client.get(login)).text()
    csrf = CSRF.search(html)
    assert csrf is not None
    resp = await client.post(login, data={"csrf": csrf.group(1), "email": email}, allow_redirects=False)
    return str(resp.headers["Location"])


async def test_callback_nonce_is_one_time(edge: RunningEdge) -> None:
    callback = await _callback(edge, edge.client)
    assert (await edge.client.get(callback, allow_redirects=False)).status == 302
    again = await edge.client.get(callback, allow_redirects=False)
    assert again.status == 400
    assert "Invalid login session" in await again.text()


async def test_callback_nonce_is_bound_to_its_host(edge: RunningEdge) -> None:
    callback = await _callback(edge, edge.client)
    moved = callback.replace("admin.acme.test", "grafana.acme.test")
    resp = await edge.client.get(moved, allow_redirects=False)
    assert resp.status == 400
    # and the nonce is spent: the right host cannot use it after the attempt either
    assert (await edge.client.get(callback, allow_redirects=False)).status == 400


async def test_callback_nonce_is_bound_to_the_app_session_cookie(edge: RunningEdge) -> None:
    callback = await _callback(edge, edge.client)
    async with loopback_session() as stranger:  # no CF_AppSession: someone else's browser
        resp = await stranger.get(callback, allow_redirects=False)
        assert resp.status == 400


OPEN_REDIRECTS = [
    "//evil.test/",
    "///evil.test/",
    "/\\evil.test/",
    "\\\\evil.test",
    "https://evil.test/",
    "http:evil.test",
    "javascript:alert(1)",
    "/\t/evil.test",
    "/\n/evil.test",
    " //evil.test",
    "%2F%2Fevil.test",
    "@evil.test",
    "evil.test",
    "//evil.test@admin.acme.test/",
    "/%09/evil.test",
]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
async def test_no_open_redirect_through_redirect_url(edge: RunningEdge, target: str) -> None:
    resp = await edge.client.get(edge.url("admin.acme.test"), allow_redirects=False)
    login = yarl.URL(resp.headers["Location"])
    tampered = login.update_query(redirect_url=target)
    html = await (await edge.client.get(tampered)).text()
    csrf = CSRF.search(html)
    assert csrf is not None
    resp = await edge.client.post(
        tampered, data={"csrf": csrf.group(1), "email": "alice@acme.test"}, allow_redirects=False
    )
    assert resp.status == 302
    resp = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert resp.status == 302
    final = yarl.URL(resp.headers["Location"])
    assert final.host == "admin.acme.test" and final.port == edge.port and final.scheme == "http"
    assert final.raw_path.startswith("/") and not final.raw_path.startswith("//")


@pytest.mark.parametrize(
    "host", ["evil.test", "admin.acme.test:1", "admin.acme.test@evil.test", "grafana.acme.test", "admin.acme.test:x"]
)
async def test_login_url_for_a_host_outside_the_app_is_refused(edge: RunningEdge, host: str) -> None:
    url = f"{edge.team}/cdn-cgi/access/login/{quote(host, safe=':@')}?kid={edge.aud('Admin')}&redirect_url=%2F"
    resp = await edge.client.get(url, allow_redirects=False)
    assert resp.status == 404
    assert "Unable to find your Access application!" in await resp.text()


async def test_unknown_kid_shows_cloudflares_page(edge: RunningEdge) -> None:
    resp = await edge.client.get(
        f"{edge.team}/cdn-cgi/access/login/admin.acme.test:{edge.port}?kid={'0' * 64}&redirect_url=%2F"
    )
    assert resp.status == 404
    assert "It appears that you have attempted to reach an invalid URL" in await resp.text()


async def test_silent_relogin_for_a_second_app_and_after_expiry(edge: RunningEdge, origin: Origin) -> None:
    resp = await browser_login(edge.client, edge.url("admin.acme.test"), "alice@acme.test")
    assert resp.status == 200
    # a second app: 302 to the team domain, which answers with the callback at once (no page)
    resp = await edge.client.get(edge.url("grafana.acme.test", "/d/1"), allow_redirects=False)
    resp = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert resp.status == 302
    assert "/cdn-cgi/access/authorized?nonce=" in resp.headers["Location"]
    resp = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    resp = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert resp.status == 200
    assert origin.last.path == "/d/1"
    # the Admin app token lasts 1h; the team session 24h: after 2h Admin re-logs in silently
    first = origin.received[-2].headers["Cf-Access-Jwt-Assertion"]
    edge.clock.advance(2 * 3600)
    resp = await edge.client.get(edge.url("admin.acme.test", "/again"), allow_redirects=False)
    assert resp.status == 302
    resp = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert resp.status == 302 and "/cdn-cgi/access/authorized" in resp.headers["Location"]
    resp = await browser_login(edge.client, resp.headers["Location"], "nobody@x.test")
    assert resp.status == 200
    assert origin.last.path == "/again"
    assert origin.last.headers["Cf-Access-Jwt-Assertion"] != first
    # after the team session itself ends, the SSO page is shown again
    edge.clock.advance(25 * 3600)
    resp = await edge.client.get(edge.url("admin.acme.test"), allow_redirects=False)
    page = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert page.status == 200 and "Log in to Admin" in await page.text()


async def test_refused_identity_gets_the_block_page(edge: RunningEdge, origin: Origin) -> None:
    resp = await browser_login(edge.client, edge.url("admin.acme.test"), "mallory@evil.test")
    assert resp.status == 403
    assert resp.headers["cf-access-aud"] == edge.aud("Admin")
    assert resp.headers["cf-access-domain"] == "admin.acme.test"
    html = await resp.text()
    data = re.search(r'<div id="json_data" hidden>(.*?)</div>', html)
    assert data is not None
    blob = json.loads(data.group(1).replace("&quot;", '"').replace("&#x27;", "'"))
    assert blob == {
        "message": "Forbidden. You don't have permission to view this. Please contact your system administrator.",
        "status_code": 403,
        "aud": edge.aud("Admin"),
        "ray_id": resp.headers["CF-Ray"].split("-")[0],
    }
    assert origin.received == []


async def test_the_block_page_names_the_identity_and_offers_a_way_out(
    edge: RunningEdge, origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    start = edge.url("admin.acme.test", "/x?y=1")
    with caplog.at_level(logging.INFO, logger="fakeedge"):
        resp = await browser_login(edge.client, start, "mallory@evil.test")
    assert resp.status == 403
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("login ")] == [
        "login mallory@evil.test app='Admin' policy=- decision=deny"
    ]
    html = await resp.text()
    assert '<p>Signed in as <b id="signed_in_as">mallory@evil.test</b>.</p>' in html
    switch = re.search(r'<a id="switch_account" href="([^"]+)">Sign in as someone else</a>', html)
    assert switch is not None
    login_url = str(resp.url)  # the block page answered the sign-in form, on the team domain
    assert switch.group(1).replace("&amp;", "&") == "/cdn-cgi/access/logout?redirect_url=" + quote(
        yarl.URL(login_url).raw_path_qs, safe=""
    )
    # the logout forgets the refused session and leads back to the sign-in page, not the block page
    resp = await edge.client.get(f"{edge.team}{switch.group(1).replace('&amp;', '&')}", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == yarl.URL(login_url).raw_path_qs
    assert resp.cookies["CF_Authorization"].value == ""
    page = await edge.client.get(f"{edge.team}{resp.headers['Location']}", allow_redirects=False)
    assert page.status == 200 and "Log in to Admin" in await page.text()
    assert origin.received == []


async def test_the_block_page_on_an_app_host_leads_back_through_sign_in(edge: RunningEdge, origin: Origin) -> None:
    # an app cookie whose identity the policy refuses (minted here; in life, a policy changed since)
    from fakeedge.mint import mint

    token = mint(edge.edge, app="Admin", email="mallory@evil.test")
    edge.client.cookie_jar.update_cookies({"CF_Authorization": token}, yarl.URL(edge.url("admin.acme.test")))
    resp = await edge.client.get(edge.url("admin.acme.test", "/r?q=1"), allow_redirects=False)
    assert resp.status == 403
    switch = re.search(r'<a id="switch_account" href="([^"]+)">', await resp.text())
    assert switch is not None and switch.group(1) == "/cdn-cgi/access/logout?redirect_url=%2Fr%3Fq%3D1"
    resp = await edge.client.get(edge.url("admin.acme.test", switch.group(1)), allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/r?q=1")
    assert resp.cookies["CF_Authorization"].value == ""
    resp = await edge.client.get(edge.url("admin.acme.test", "/r?q=1"), allow_redirects=False)
    assert resp.status == 302  # no longer refused: to the sign-in page
    page = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert page.status == 200 and "Log in to Admin" in await page.text()


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
async def test_no_open_redirect_through_logout(edge: RunningEdge, target: str) -> None:
    for base in (edge.team, edge.url("admin.acme.test").rstrip("/")):
        resp = await edge.client.get(
            yarl.URL(f"{base}/cdn-cgi/access/logout").with_query(redirect_url=target), allow_redirects=False
        )
        assert resp.status == 302
        location = resp.headers["Location"]
        assert location.startswith("/") and not location.startswith("//") and "\\" not in location, location
        assert yarl.URL(location).host is None


async def test_team_domain_root_links_to_the_apps_and_favicons_stay_out_of_the_log(
    origin: Origin, tmp_path: Path
) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][2]["domain"] = "grafana.acme.test/d/*"
    cfg["apps"].append({"name": "Previews", "domain": "*.pr.acme.test", "policies": []})
    cfg["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    edge = Edge.create(parse_config(cfg, source="test.yml"))
    stream = io.StringIO()
    log = AccessLog(stream)
    runner, (_, port) = await start(edge, "127.0.0.1", 0, access_log=log)
    try:
        async with loopback_session() as client:
            resp = await client.get(f"http://127.0.0.1:{port}/")
            assert resp.status == 200
            html = await resp.text()
            links = re.findall(r'<li><a href="([^"]+)">([^<]+)</a>', html)
            assert links == [
                (f"http://admin.acme.test:{port}/", "Admin"),
                (f"http://sentry.acme.test:{port}/", "Sentry"),
                (f"http://grafana.acme.test:{port}/d/", "Grafana"),
            ]  # the wildcard app names no page to open
            resp = await client.get(f"http://127.0.0.1:{port}/favicon.ico")
            assert (resp.status, await resp.read()) == (204, b"")
            resp = await client.get(f"http://127.0.0.1:{port}/nothing-here")
            assert resp.status == 404
    finally:
        await runner.cleanup()  # flushes the access log
    lines = [line.split(" ", 3)[:3] for line in stream.getvalue().splitlines()]
    assert lines == [
        ["GET", f"127.0.0.1:{port}/", "200"],
        ["GET", f"127.0.0.1:{port}/nothing-here", "404"],
    ]


async def test_github_org_persona_passes(edge: RunningEdge, origin: Origin) -> None:
    resp = await browser_login(edge.client, edge.url("admin.acme.test"), "octo@github.test")
    assert resp.status == 200
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == "octo@github.test"


async def test_get_identity_on_app_and_team_hosts(edge: RunningEdge) -> None:
    for url in (
        edge.url("admin.acme.test", "/cdn-cgi/access/get-identity"),
        f"{edge.team}/cdn-cgi/access/get-identity",
    ):
        resp = await edge.client.get(url)
        assert resp.status == 401
    await browser_login(edge.client, edge.url("admin.acme.test"), "alice@acme.test")
    app_identity = await (await edge.client.get(edge.url("admin.acme.test", "/cdn-cgi/access/get-identity"))).json()
    team_identity = await (await edge.client.get(f"{edge.team}/cdn-cgi/access/get-identity")).json()
    for identity in (app_identity, team_identity):
        assert identity["email"] == "alice@acme.test"
        assert identity["name"] == "Alice"
        assert identity["groups"] == [{"id": "admins", "name": "admins", "email": "admins@acme.test"}]
        assert identity["geo"] == {"country": "GB"}
        assert identity["amr"] == ["pwd"]
        assert identity["version"] == 2
        assert identity["ip"] == "127.0.0.1"
    assert app_identity["user_uuid"] == team_identity["user_uuid"]


async def test_logout_on_the_app_host_revokes_everywhere(edge: RunningEdge, origin: Origin) -> None:
    await browser_login(edge.client, edge.url("admin.acme.test"), "alice@acme.test")
    token = origin.last.headers["Cf-Access-Jwt-Assertion"]
    resp = await edge.client.get(edge.url("admin.acme.test", "/cdn-cgi/access/logout"))
    assert resp.status == 200
    assert resp.cookies["CF_Authorization"].value == ""
    # the old token is dead even when replayed by hand, and the team session with it
    resp = await edge.client.get(
        edge.url("admin.acme.test"), headers={"Cookie": f"CF_Authorization={token}"}, allow_redirects=False
    )
    assert resp.status == 302
    page = await edge.client.get(resp.headers["Location"], allow_redirects=False)
    assert page.status == 200 and "Log in to Admin" in await page.text()


async def test_logout_on_the_team_domain_after_a_delay(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["logout_delay"] = "30s"
    running = await make_edge(cfg)
    await browser_login(running.client, running.url("admin.acme.test"), "alice@acme.test")
    resp = await running.client.get(f"{running.team}/cdn-cgi/access/logout")
    assert resp.status == 200
    # the app cookie still works for the delay Cloudflare takes (spec §1.9), then stops
    assert (await running.client.get(running.url("admin.acme.test"), allow_redirects=False)).status == 200
    running.clock.advance(31)
    assert (await running.client.get(running.url("admin.acme.test"), allow_redirects=False)).status == 302


async def test_one_time_pin(make_edge: MakeEdge, origin: Origin, caplog: pytest.LogCaptureFixture) -> None:
    cfg = base_config(origin.url)
    cfg["one_time_pin"] = True
    running = await make_edge(cfg)
    resp = await running.client.get(running.url("admin.acme.test"), allow_redirects=False)
    login = resp.headers["Location"]
    html = await (await running.client.get(login)).text()
    assert "Send login code" in html
    csrf = CSRF.search(html)
    assert csrf is not None
    with caplog.at_level(logging.INFO, logger="fakeedge"):
        resp = await running.client.post(login, data={"csrf": csrf.group(1), "email": "bob@acme.test"})
    assert resp.status == 200
    page = await resp.text()
    otp_id = re.search(r'name="otp_id" value="([^"]+)"', page)
    assert otp_id is not None
    code = re.search(r"one-time PIN for bob@acme.test is (\d{6})", caplog.text)
    assert code is not None
    resp = await running.client.post(
        login,
        data={
            "csrf": csrf.group(1),
            "otp_id": otp_id.group(1),
            "code": "000000" if code.group(1) != "000000" else "111111",
        },
        allow_redirects=False,
    )
    assert resp.status == 400
    resp = await running.client.post(
        login, data={"csrf": csrf.group(1), "otp_id": otp_id.group(1), "code": code.group(1)}, allow_redirects=False
    )
    assert resp.status == 302
    resp = await browser_login(running.client, resp.headers["Location"], "unused@x.test")
    assert resp.status == 200
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == "bob@acme.test"


async def test_csrf_is_required(edge: RunningEdge) -> None:
    _, login = await _login_page(edge, edge.url("admin.acme.test"))
    resp = await edge.client.post(login, data={"csrf": "forged", "email": "alice@acme.test"}, allow_redirects=False)
    assert resp.status == 400


async def test_demo_runs_with_no_config(tmp_path: Path) -> None:
    """``fakeedge serve`` with no config: a protected app on localhost, a verified whoami page."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeedge.cli", "serve", "--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        env={"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        for _ in range(50):  # bounded: the banner is a handful of lines
            line = proc.stderr.readline()
            if not line or line.strip():
                break  # the first line with words in it, on a first run too (new keys, in the cache)
        found = re.fullmatch(r"  Open (http://localhost:\d+/) in your browser and sign in as a persona.\n", line)
        assert found, f"the demo's first line is not the URL to open: {line!r}"
        url = found.group(1)
        async with loopback_session() as client:
            resp = await browser_login(client, url, "alice@example.com")
            assert resp.status == 200
            html = await resp.text()
            assert '<span id="who">alice@example.com</span>' in html
            assert "verified by PyJWT against http://127.0.0.1:" in html
            # the banner's team domain (what terminals make clickable) links to the app
            root = url.replace("localhost", "127.0.0.1")
            resp = await client.get(root)
            assert resp.status == 200
            assert f'<li><a href="{url}">Demo app</a>' in await resp.text()
            # what the demo admits is said on its sign-in page, and is what happens
            async with loopback_session() as other:
                resp = await other.get(url)
                assert "Log in to Demo app" in await resp.text()
                assert f'<p class="muted">{DEMO_ADMITS}</p>' in await resp.text()
                resp = await browser_login(other, url, "carol@example.org")
                assert resp.status == 403
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


async def test_branded_login_and_block_pages(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["branding"] = {
        "name": "SecurityV0",
        "logo_url": "https://cdn.securityv0.test/favicon.svg",
        "background_color": "#f4f2f1",
        "header_color": "#111111",
        "button_color": "#8a43e1",
        "description": "Sign in to access the SecurityV0 platform.",
    }
    cfg["apps"][0]["custom_deny_message"] = "You don't currently have access to SecurityV0."
    running = await make_edge(cfg)
    resp = await running.client.get(running.url("admin.acme.test"), allow_redirects=False)
    html = await (await running.client.get(resp.headers["Location"])).text()
    assert '<div class="brand">SecurityV0</div>' in html
    assert '<img class="logo" src="https://cdn.securityv0.test/favicon.svg"' in html
    assert "--accent: #8a43e1;" in html and "background: #f4f2f1;" in html and "color: #111111;" in html
    assert "Sign in to access the SecurityV0 platform." in html
    resp = await browser_login(running.client, running.url("admin.acme.test"), "mallory@evil.test")
    assert resp.status == 403
    html = await resp.text()
    assert (
        '<div class="brand">SecurityV0</div>' in html and "You don&#x27;t currently have access to SecurityV0." in html
    )


def test_branding_colour_is_checked() -> None:
    from fakeedge.config import parse_config
    from fakeedge.errors import ConfigError

    cfg = base_config("http://127.0.0.1:9")
    cfg["branding"] = {"button_color": "purple"}
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == "f.yml: branding.button_color: expected a colour such as #8a43e1, got 'purple'"
