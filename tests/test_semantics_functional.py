"""Access semantics end to end: bypass, pre-checks, strict service tokens, deny options, cookies, CORS, cloudflared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from fakeedge import tokens
from fakeedge.testing import browser_login

from .conftest import BOT_ID, BOT_SECRET, OTHER_ID, OTHER_SECRET, MakeEdge, Origin, RunningEdge, base_config
from .test_access_functional import BOT, segments


def _cfg(origin: Origin, **admin: Any) -> dict[str, Any]:
    cfg = base_config(origin.url)
    cfg["apps"][0].update(admin)
    return cfg


async def test_bypass_passes_without_identity_and_still_strips(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][0]["policies"].insert(
        0, {"name": "local", "decision": "bypass", "include": [{"ip": {"ip": "127.0.0.0/8"}}]}
    )
    running = await make_edge(cfg)
    resp = await running.client.get(
        running.url("admin.acme.test"),
        headers={"Cf-Access-Jwt-Assertion": "forged", "Cf-Access-Authenticated-User-Email": "ceo@acme.test"},
        allow_redirects=False,
    )
    assert resp.status == 200
    assert "Cf-Access-Jwt-Assertion" not in origin.last.headers
    assert "Cf-Access-Authenticated-User-Email" not in origin.last.headers


async def test_non_identity_precheck_blocks_before_login(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][0]["policies"][0]["require"] = [{"ip": {"ip": "10.0.0.0/8"}}]
    running = await make_edge(cfg)
    resp = await running.client.get(running.url("admin.acme.test"), allow_redirects=False)
    assert resp.status == 403  # no login page: nothing a login could change
    assert "Forbidden" in await resp.text()
    assert resp.headers["cf-access-aud"] == running.aud("Admin")


async def test_custom_deny_options(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = _cfg(
        origin, custom_deny_url="https://intranet.acme.test/denied", custom_deny_message="Ask #it-help for access."
    )
    running = await make_edge(cfg)
    resp = await browser_login(running.client, running.url("admin.acme.test"), "mallory@evil.test")
    assert resp.status == 302 and resp.headers["Location"] == "https://intranet.acme.test/denied"
    cfg = _cfg(origin, custom_deny_message="Ask #it-help for access.")
    cfg["apps"][0]["custom_non_identity_deny_url"] = "https://intranet.acme.test/wrong-network"
    running = await make_edge(cfg)
    resp = await browser_login(running.client, running.url("admin.acme.test"), "mallory@evil.test")
    assert resp.status == 403 and "Ask #it-help for access." in await resp.text()
    cfg["apps"][0]["policies"][0]["require"] = [{"ip": {"ip": "10.0.0.0/8"}}]
    running = await make_edge(cfg)
    resp = await running.client.get(running.url("admin.acme.test"), allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "https://intranet.acme.test/wrong-network"


async def test_strict_service_token_mode(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["strict_service_token_auth"] = True
    running = await make_edge(cfg)
    url = running.url("admin.acme.test")
    bad = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": "wrong"}
    assert (await running.client.get(url, headers=bad, allow_redirects=False)).status == 401
    partial = {"CF-Access-Client-Id": BOT_ID}
    assert (await running.client.get(url, headers=partial, allow_redirects=False)).status == 401
    other = {"CF-Access-Client-Id": OTHER_ID, "CF-Access-Client-Secret": OTHER_SECRET}
    resp = await running.client.get(url, headers=other, allow_redirects=False)
    assert resp.status == 403 and resp.headers["cf-access-aud"] == running.aud("Admin")
    resp = await running.client.get(url, headers=BOT, allow_redirects=False)
    assert resp.status == 200
    assert "Set-Cookie" not in resp.headers  # strict mode returns no cookie
    duplicated = [
        ("CF-Access-Client-Id", BOT_ID),
        ("CF-Access-Client-Id", BOT_ID),
        ("CF-Access-Client-Secret", BOT_SECRET),
    ]
    assert (await running.client.get(url, headers=duplicated, allow_redirects=False)).status == 401
    # without token headers, browsers still sign in as usual
    assert (await running.client.get(url, allow_redirects=False)).status == 302


async def test_expired_and_wrong_aud_cookies_count_as_no_session(edge: RunningEdge, origin: Origin) -> None:
    await browser_login(edge.client, edge.url("grafana.acme.test"), "alice@acme.test")
    grafana_token = origin.last.headers["Cf-Access-Jwt-Assertion"]
    edge.client.cookie_jar.clear()
    resp = await edge.client.get(
        edge.url("admin.acme.test"), headers={"Cookie": f"CF_Authorization={grafana_token}"}, allow_redirects=False
    )
    assert resp.status == 302  # another app's token: wrong aud
    _, payload, _ = segments(grafana_token)
    now = int(edge.clock.now())
    expired = tokens.sign({**payload, "aud": [edge.aud("Admin")], "exp": now - 1}, edge.edge.keys.current)
    resp = await edge.client.get(
        edge.url("admin.acme.test"), headers={"Cookie": f"CF_Authorization={expired}"}, allow_redirects=False
    )
    assert resp.status == 302


async def test_policy_session_duration_sets_exp(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][0]["policies"][0]["session_duration"] = "15m"
    running = await make_edge(cfg)
    await browser_login(running.client, running.url("admin.acme.test"), "alice@acme.test")
    _, payload, _ = segments(origin.last.headers["Cf-Access-Jwt-Assertion"])
    assert payload["exp"] - payload["iat"] == 900


@pytest.mark.parametrize(
    ("settings", "attributes"),
    [
        ({}, {"samesite": "Lax", "httponly": True, "path": "/"}),
        ({"same_site_cookie_attribute": "strict"}, {"samesite": "strict", "httponly": True, "path": "/"}),
        ({"http_only_cookie_attribute": False}, {"samesite": "Lax", "httponly": "", "path": "/"}),
        ({"domain": "admin.acme.test/console", "path_cookie_attribute": True}, {"path": "/console"}),
    ],
)
async def test_app_cookie_settings(
    make_edge: MakeEdge, origin: Origin, settings: dict[str, Any], attributes: dict[str, Any]
) -> None:
    running = await make_edge(_cfg(origin, **settings))
    path = "/console/x" if "domain" in settings else "/"
    resp = await browser_login(running.client, running.url("admin.acme.test", path), "alice@acme.test")
    assert resp.status == 200
    (morsel,) = [
        m for m in running.client.cookie_jar if m.key == "CF_Authorization" and m["domain"] == "admin.acme.test"
    ]
    for name, value in attributes.items():
        assert morsel[name] == value, name


async def test_binding_cookie(make_edge: MakeEdge, origin: Origin) -> None:
    running = await make_edge(_cfg(origin, enable_binding_cookie=True))
    resp = await browser_login(running.client, running.url("admin.acme.test"), "alice@acme.test")
    assert resp.status == 200
    assert "CF_Binding" not in origin.last.headers.get("Cookie", "")  # never reaches the origin
    token = origin.last.headers["Cf-Access-Jwt-Assertion"]
    # the app cookie alone, without its CF_Binding, is refused
    running.client.cookie_jar.clear()
    resp = await running.client.get(
        running.url("admin.acme.test"), headers={"Cookie": f"CF_Authorization={token}"}, allow_redirects=False
    )
    assert resp.status == 302


async def test_cors_preflights(make_edge: MakeEdge, origin: Origin) -> None:
    preflight = {
        "Origin": "https://app.acme.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type",
    }
    running = await make_edge(base_config(origin.url))
    await browser_login(running.client, running.url("admin.acme.test"), "alice@acme.test")
    count = len(origin.received)
    resp = await running.client.options(running.url("admin.acme.test", "/api"), headers=preflight)
    assert resp.status == 403  # even signed in: browsers send no cookies on preflights (spec §7.4)

    cors = {
        "allowed_origins": ["https://app.acme.test"],
        "allowed_methods": ["GET", "POST"],
        "allow_all_headers": True,
        "allow_credentials": True,
        "max_age": 600,
    }
    running = await make_edge(_cfg(origin, cors_headers=cors))
    resp = await running.client.options(running.url("admin.acme.test", "/api"), headers=preflight)
    assert resp.status == 200
    assert resp.headers["Vary"] == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.acme.test"
    assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    assert resp.headers["Access-Control-Allow-Headers"] == "content-type"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Max-Age"] == "600"
    resp = await running.client.options(
        running.url("admin.acme.test"), headers={**preflight, "Origin": "https://evil.test"}
    )
    assert resp.status == 403
    assert len(origin.received) == count  # Access answered; the origin saw no preflight

    running = await make_edge(_cfg(origin, options_preflight_bypass=True))
    resp = await running.client.options(running.url("admin.acme.test", "/api"), headers=preflight)
    assert resp.status == 200
    assert origin.last.method == "OPTIONS" and "Cf-Access-Jwt-Assertion" not in origin.last.headers


async def test_eager_cookie_chain_for_multi_domain_apps(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][0]["destinations"] = ["admin2.acme.test", {"type": "public", "uri": "*.admin.acme.test"}]
    cfg["ingress"].insert(0, {"hostname": "admin2.acme.test", "service": origin.url})
    running = await make_edge(cfg)
    resp = await browser_login(running.client, running.url("admin.acme.test", "/start"), "alice@acme.test")
    assert resp.status == 200
    assert origin.last.path == "/start"
    # the second domain already holds its cookie: no redirect
    resp = await running.client.get(running.url("admin2.acme.test", "/other"), allow_redirects=False)
    assert resp.status == 200


async def test_cloudflared_token_check_and_metadata(edge: RunningEdge, origin: Origin) -> None:
    await browser_login(edge.client, edge.url("admin.acme.test"), "alice@acme.test")
    token = origin.last.headers["Cf-Access-Jwt-Assertion"]
    edge.client.cookie_jar.clear()
    check = edge.url("admin.acme.test", "/?cloudflared_token_check=true")
    good = await edge.client.get(check, headers={"Cf-Access-Token": token}, allow_redirects=False)
    assert good.status == 200
    bad = await edge.client.get(check, headers={"Cf-Access-Token": token[:-4] + "AAAA"}, allow_redirects=False)
    # cloudflared: invalid iff a 302 whose Location path starts with /cdn-cgi/access/login (spec §9.2)
    assert bad.status == 302 and "/cdn-cgi/access/login/" in bad.headers["Location"]

    resp = await edge.client.head(
        edge.url("admin.acme.test", "/x"), headers={"cf-access-metadata-request": "true"}, allow_redirects=False
    )
    meta = resp.headers["cf-access-metadata"]
    keys = jwt.PyJWKSet.from_dict(json.loads(edge.edge.keys.certs_document(edge.clock.now())))
    claims = jwt.decode(meta, keys[jwt.get_unverified_header(meta)["kid"]].key, algorithms=["RS256"], audience=edge.aud("Admin"))
    assert claims["type"] == "match"
    assert claims["hostname"] == "admin.acme.test"
    assert claims["app_hostname"] == "admin.acme.test"
    assert claims["auth_domain"] == "127.0.0.1"


def test_explain_command(tmp_path: Path) -> None:
    cfg = base_config("http://127.0.0.1:9")
    cfg["apps"].append(
        {
            "name": "Reports",
            "domain": "admin.acme.test/reports",
            "policies": [{"name": "ceo", "decision": "allow", "include": [{"email": {"email": "ceo@acme.test"}}]}],
        }
    )
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(cfg))

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "fakeedge.cli", "explain", "--config", str(path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    out = run("https://admin.acme.test/reports/q3", "--email", "alice@acme.test")
    assert "ingress   rule 0: admin.acme.test -> http://127.0.0.1:9" in out
    assert "app       'Reports' via admin.acme.test/reports" in out
    assert "broader, lost: admin.acme.test" in out
    assert "policy    none matched: deny by default" in out
    assert "outcome   403 block page (identity refused)" in out
    out = run("https://admin.acme.test/", "--service-token", "ci-deploy-bot")
    assert f"policy    'bots' (non_identity), rule service_token {BOT_ID}" in out
    assert "outcome   admit via Service Auth" in out
    out = run("https://sentry.acme.test/")
    assert "outcome   403: only Service Auth can pass" in out
    out = run("https://public.acme.test/")
    assert "outcome   proxied without Access" in out
    # an http_status rule: the edge answers itself, nothing is proxied (with or without an app)
    assert run("https://nowhere.acme.test/x").splitlines()[1:] == [
        "ingress   rule 5: * -> http_status:404",
        "app       none: no Access application covers this host and path",
        "outcome   404 from the edge (ingress http_status:404); no origin is reached",
    ]
    assert (
        run("https://teapot.acme.test/").splitlines()[-1]
        == "outcome   418 from the edge (ingress http_status:418); no origin is reached"
    )
