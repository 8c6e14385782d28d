"""Managed OAuth on the wire (spec §1.7, §14.2): challenge, metadata, registration, code, tokens."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from fakeedge.config import parse_config
from fakeedge.testing import FakeEdgeFactory, browser_login, loopback_session

from .conftest import Origin, RunningEdge
from .test_hardening_functional import raw

CALLBACK = "http://127.0.0.1:9/callback"


def oauth_config(origin_url: str, **dcr: Any) -> dict[str, Any]:
    return {
        "team": "acme",
        "users": [{"email": "alice@acme.test", "name": "Alice"}, {"email": "bob@acme.test", "name": "Bob"}],
        "apps": [
            {
                "name": "Tools",
                "domains": ["mcp.acme.test", "tools.acme.test"],
                "policies": [
                    {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}
                ],
                "oauth_configuration": {
                    "enabled": True,
                    "dynamic_client_registration": dcr or {"allow_any_on_loopback": True},
                    "grant": {"session_duration": "2h"},
                },
            },
            {
                "name": "Plain",
                "domain": "plain.acme.test",
                "policies": [{"name": "all", "decision": "allow", "include": [{"everyone": {}}]}],
            },
        ],
        "ingress": [{"service": origin_url}],
    }


@pytest.fixture
async def edge(make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin) -> RunningEdge:
    return await make_edge(oauth_config(origin.url))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def register(edge: RunningEdge, uris: list[str], host: str = "mcp.acme.test", **extra: Any) -> dict[str, Any]:
    resp = await edge.client.post(
        edge.url(host, "/cdn-cgi/access/oauth/registration"),
        json={"redirect_uris": uris, "token_endpoint_auth_method": "none", **extra},
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    return body


async def authorize(
    edge: RunningEdge, client_id: str, challenge: str, *, email: str = "alice@acme.test", **params: str
) -> dict[str, str]:
    """Sign in through the authorization endpoint; the query the client's redirect URI receives."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": edge.url("mcp.acme.test", "/mcp"),
        **params,
    }
    url = edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/authorization") + "?" + urlencode(query)
    async with loopback_session() as browser:
        resp = await browser_login(browser, url, email)
    assert resp.status == 302, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def token(edge: RunningEdge, form: dict[str, str], host: str = "mcp.acme.test") -> tuple[int, dict[str, Any]]:
    resp = await edge.client.post(edge.url(host, "/cdn-cgi/access/oauth/token"), data=form)
    assert resp.headers["Cache-Control"].startswith("private, max-age=0, no-store")
    return resp.status, await resp.json()


async def grant(edge: RunningEdge) -> tuple[str, dict[str, Any]]:
    """A client id and the token response of a full authorization."""
    client = await register(edge, [CALLBACK])
    verifier, challenge = pkce()
    got = await authorize(edge, client["client_id"], challenge)
    status, body = await token(
        edge,
        {
            "grant_type": "authorization_code",
            "code": got["code"],
            "redirect_uri": CALLBACK,
            "client_id": client["client_id"],
            "code_verifier": verifier,
            "resource": edge.url("mcp.acme.test", "/mcp"),
        },
    )
    assert status == 200, body
    return client["client_id"], body


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}", "Accept": "application/json, text/event-stream"}


# --- the challenge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Accept": "application/json, text/event-stream"}, 401),  # MCP SDKs
        ({"Accept": "*/*"}, 401),  # curl
        ({}, 401),
        ({"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, 302),  # a browser's address bar
        ({"Accept": "*/*", "Sec-Fetch-Mode": "navigate"}, 302),
        ({"Accept": "TEXT/HTML; q=0.9"}, 302),
        ({"Accept": "text/htmlx"}, 401),
        ({"Accept": "text/html", "Authorization": "Bearer oauth:forged"}, 401),  # a token: never a browser
    ],
    ids=["mcp-sdk", "curl", "no-accept", "browser", "navigate", "case", "not-html", "bad-token"],
)
async def test_api_clients_get_the_bearer_challenge_browsers_the_302(
    edge: RunningEdge, headers: dict[str, str], status: int
) -> None:
    resp = await edge.client.get(edge.url("mcp.acme.test", "/mcp"), headers=headers, allow_redirects=False)
    assert resp.status == status
    if status == 302:
        assert resp.headers["Location"].startswith(f"{edge.team}/cdn-cgi/access/login/mcp.acme.test:{edge.port}?")
        return
    error = ', error="invalid_token"' if "Authorization" in headers else ""
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer realm="OAuth", resource_metadata="http://mcp.acme.test:{edge.port}'
        f'/.well-known/cloudflare-access-protected-resource/mcp"{error}'
    )
    assert resp.headers["cf-access-aud"] == edge.aud("Tools")
    assert resp.headers["cf-access-domain"] == "mcp.acme.test"
    assert edge.edge.recorder is not None  # the inspector's journal says why it was no 302
    assert edge.edge.recorder.all()[-1].reason.endswith(
        "; managed OAuth: the oauth: token is expired, revoked or unknown (401, invalid_token)"
        if error
        else "; managed OAuth: a client that is no browser gets 401 and the metadata URL, not the login"
    )


async def test_challenge_percent_encodes_the_path(edge: RunningEdge) -> None:
    # a quote or comma in the path must not end the quoted string or split the header
    resp = await edge.client.get(
        edge.url("mcp.acme.test", "/a%22b,c%20d/%E2%9C%93"), headers={"Accept": "*/*"}, allow_redirects=False
    )
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer realm="OAuth", resource_metadata="http://mcp.acme.test:{edge.port}'
        '/.well-known/cloudflare-access-protected-resource/a%22b%2Cc%20d/%E2%9C%93"'
    )


async def test_apps_without_managed_oauth_keep_the_302(edge: RunningEdge) -> None:
    resp = await edge.client.get(edge.url("plain.acme.test", "/x"), headers={"Accept": "*/*"}, allow_redirects=False)
    assert resp.status == 302
    resp = await edge.client.get(
        edge.url("plain.acme.test", "/.well-known/oauth-authorization-server"), allow_redirects=False
    )
    assert resp.status == 302  # no managed OAuth here: an ordinary protected path


# --- metadata --------------------------------------------------------------------------------------


async def test_metadata_documents(edge: RunningEdge) -> None:
    base = f"http://mcp.acme.test:{edge.port}"
    resp = await edge.client.get(base + "/.well-known/cloudflare-access-protected-resource/mcp")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert await resp.json() == {
        "resource": base + "/mcp",
        "authorization_servers": [base],
        "bearer_methods_supported": ["header"],
        "resource_name": "Tools",
    }
    resp = await edge.client.get(base + "/.well-known/oauth-protected-resource/mcp")
    assert (await resp.json())["resource"] == base + "/mcp"
    resp = await edge.client.get(base + "/.well-known/oauth-authorization-server")
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "issuer": base,
        "authorization_endpoint": base + "/cdn-cgi/access/oauth/authorization",
        "token_endpoint": base + "/cdn-cgi/access/oauth/token",
        "registration_endpoint": base + "/cdn-cgi/access/oauth/registration",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": True,
    }
    # spec §14.2: clients append their own query to the endpoints
    assert not any("?" in v for v in body.values() if isinstance(v, str))
    # the other domain of the app is its own issuer
    resp = await edge.client.get(f"http://tools.acme.test:{edge.port}/.well-known/oauth-authorization-server")
    assert (await resp.json())["issuer"] == f"http://tools.acme.test:{edge.port}"


# --- dynamic client registration -------------------------------------------------------------------

LISTS = {"allowed_uris": ["https://app.example.com/oauth/*", "https://exact.example.com/cb", "myapp://callback"]}


@pytest.mark.parametrize(
    ("dcr", "uri", "allowed"),
    [
        ({"allow_any_on_localhost": True}, "http://localhost:33418/callback", True),
        ({"allow_any_on_localhost": True}, "https://localhost/x", True),
        ({"allow_any_on_localhost": True}, "http://127.0.0.1:5000/cb", False),
        ({"allow_any_on_loopback": True}, "http://127.0.0.1:5000/cb", True),
        ({"allow_any_on_loopback": True}, "http://127.9.9.9/cb", True),
        ({"allow_any_on_loopback": True}, "http://[::1]:8080/cb", True),
        ({"allow_any_on_loopback": True}, "http://localhost:5000/cb", False),
        ({"allow_any_on_loopback": True}, "http://127.0.0.1.evil.test/cb", False),
        ({}, "http://localhost:33418/callback", False),
        (LISTS, "https://app.example.com/oauth/callback", True),
        (LISTS, "https://app.example.com/oauth/", True),
        (LISTS, "https://app.example.com/oauth", False),
        (LISTS, "https://app.example.com/oauthx/cb", False),
        (LISTS, "https://app.example.com.evil.test/oauth/cb", False),
        (LISTS, "https://app.example.com/oauth/../admin", False),
        (LISTS, "https://app.example.com/oauth/%2e%2e/admin", False),
        (LISTS, "https://user@app.example.com/oauth/cb", False),
        (LISTS, "https://app.example.com/oauth/cb#frag", False),
        (LISTS, "https://exact.example.com/cb", True),
        (LISTS, "https://exact.example.com/cb/more", False),
        (LISTS, "myapp://callback", True),
        (LISTS, "myapp://callback/x", False),
        (LISTS, "MYAPP://callback", False),
        (LISTS, "otherapp://callback", False),
        ({"allow_any_on_localhost": True, "allow_any_on_loopback": True}, "http://localhost\t/cb", False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_registration_redirect_uri_rules(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin, dcr: dict[str, Any], uri: str, allowed: bool
) -> None:
    edge = await make_edge(oauth_config(origin.url, **dcr) if dcr else _no_dcr_lists(origin.url))
    resp = await edge.client.post(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/registration"), json={"redirect_uris": [uri]}
    )
    body = await resp.json()
    if allowed:
        assert resp.status == 201, body
        assert body["redirect_uris"] == [uri]
        assert body["token_endpoint_auth_method"] == "client_secret_basic"  # RFC 7591 §2 default
        assert len(body["client_secret"]) >= 32
    else:
        assert resp.status == 400
        assert body["error"] == "invalid_redirect_uri"
        assert body["error_description"].startswith(f"redirect_uri {uri!r} ")


def _no_dcr_lists(origin_url: str) -> dict[str, Any]:
    raw = oauth_config(origin_url)
    raw["apps"][0]["oauth_configuration"]["dynamic_client_registration"] = {}
    return raw


async def test_registration_disabled(make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin) -> None:
    edge = await make_edge(oauth_config(origin.url, enabled=False))
    resp = await edge.client.post(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/registration"), json={"redirect_uris": [CALLBACK]}
    )
    assert resp.status == 403
    assert await resp.json() == {
        "error": "invalid_client_metadata",
        "error_description": "dynamic client registration is disabled for the application 'Tools'",
    }
    resp = await edge.client.get(edge.url("mcp.acme.test", "/.well-known/oauth-authorization-server"))
    assert "registration_endpoint" not in await resp.json()


# --- the authorization code and its PKCE -----------------------------------------------------------


async def test_full_flow_reaches_the_origin_as_the_user(edge: RunningEdge, origin: Origin) -> None:
    _, body = await grant(edge)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900  # grant.access_token_lifetime's default, 15 min
    assert body["access_token"].startswith("oauth:")
    resp = await edge.client.get(edge.url("mcp.acme.test", "/mcp"), headers=bearer(body["access_token"]))
    assert resp.status == 200
    sent = origin.last.headers
    assert "Authorization" not in sent  # an Access credential: the origin gets the assertion instead
    assert sent["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"
    jwks = jwt.PyJWKClient(f"{edge.team}/cdn-cgi/access/certs")
    # PyJWKClient fetches synchronously, and the edge runs on this loop
    key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, sent["Cf-Access-Jwt-Assertion"])
    claims = jwt.decode(sent["Cf-Access-Jwt-Assertion"], key.key, algorithms=["RS256"], audience=edge.aud("Tools"))
    assert claims["email"] == "alice@acme.test"
    assert claims["iss"] == edge.team


async def test_authorization_response_carries_state_and_issuer(edge: RunningEdge) -> None:
    client = await register(edge, [CALLBACK])
    got = await authorize(edge, client["client_id"], pkce()[1])
    assert set(got) == {"code", "state", "iss"}
    assert got["state"] == "st-1"
    assert got["iss"] == f"http://mcp.acme.test:{edge.port}"  # RFC 9207


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"resource": "https://elsewhere.test/mcp"}, "invalid_target"),
    ],
    ids=["plain", "no-challenge", "bad-challenge", "implicit", "foreign-resource"],
)
async def test_authorization_errors_go_back_to_the_client(
    edge: RunningEdge, params: dict[str, str], error: str
) -> None:
    client = await register(edge, [CALLBACK])
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": CALLBACK,
        "state": "s",
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
        **params,
    }
    resp = await edge.client.get(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/authorization") + "?" + urlencode(query),
        allow_redirects=False,
    )
    assert resp.status == 302
    got = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert got["error"] == [error]
    assert got["state"] == ["s"]


@pytest.mark.parametrize(
    ("client_id", "redirect_uri", "message"),
    [
        ("nope", CALLBACK, "Unknown client_id for this application."),
        (None, "http://127.0.0.1:9/other", "The redirect_uri is not registered for this client."),
    ],
    ids=["unknown-client", "unregistered-redirect"],
)
async def test_authorization_errors_never_redirect_to_an_unchecked_uri(
    edge: RunningEdge, client_id: str | None, redirect_uri: str, message: str
) -> None:
    client = await register(edge, [CALLBACK, "http://127.0.0.1:9/second"])
    query = {
        "response_type": "code",
        "client_id": client_id or client["client_id"],
        "redirect_uri": redirect_uri,
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
    }
    resp = await edge.client.get(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/authorization") + "?" + urlencode(query),
        allow_redirects=False,
    )
    assert resp.status == 400
    assert "Location" not in resp.headers
    assert message in await resp.text()


async def _code(edge: RunningEdge) -> tuple[str, str, str]:
    client = await register(edge, [CALLBACK])
    verifier, challenge = pkce()
    got = await authorize(edge, client["client_id"], challenge)
    return client["client_id"], got["code"], verifier


@pytest.mark.parametrize(
    ("change", "error", "description"),
    [
        ({"code_verifier": "x" * 43}, "invalid_grant", "code_verifier does not match the code_challenge"),
        ({"code_verifier": "short"}, "invalid_grant", "code_verifier does not match the code_challenge"),
        ({"code_verifier": ""}, "invalid_request", "code_verifier is required"),
        (
            {"redirect_uri": "http://127.0.0.1:9/other"},
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        ),
        ({"code": "made-up"}, "invalid_grant", "the authorization code is invalid or expired"),
        ({"grant_type": "password"}, "unsupported_grant_type", "grant_type 'password' is not supported"),
        ({"resource": "https://elsewhere.test/"}, "invalid_target", "resource is not a URL of this application"),
    ],
    ids=[
        "wrong-verifier",
        "malformed-verifier",
        "no-verifier",
        "wrong-redirect",
        "unknown-code",
        "password",
        "resource",
    ],
)
async def test_token_endpoint_refusals(edge: RunningEdge, change: dict[str, str], error: str, description: str) -> None:
    client_id, code, verifier = await _code(edge)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": client_id,
        "code_verifier": verifier,
        **change,
    }
    status, body = await token(edge, form)
    assert (status, body) == (400, {"error": error, "error_description": description})


async def test_code_for_another_client(edge: RunningEdge) -> None:
    _, code, verifier = await _code(edge)
    other = await register(edge, [CALLBACK])
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": other["client_id"],
        "code_verifier": verifier,
    }
    assert await token(edge, form) == (
        400,
        {"error": "invalid_grant", "error_description": "the authorization code was issued to another client"},
    )


async def test_expired_code(edge: RunningEdge) -> None:
    client_id, code, verifier = await _code(edge)
    edge.clock.advance(61)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    assert await token(edge, form) == (
        400,
        {"error": "invalid_grant", "error_description": "the authorization code is invalid or expired"},
    )


async def test_code_replay_is_refused_and_revokes_the_first_tokens(edge: RunningEdge, origin: Origin) -> None:
    client_id, code, verifier = await _code(edge)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    status, first = await token(edge, form)
    assert status == 200
    url = edge.url("mcp.acme.test", "/mcp")
    assert (await edge.client.get(url, headers=bearer(first["access_token"]))).status == 200
    assertion = origin.last.headers["Cf-Access-Jwt-Assertion"]
    assert await token(edge, form) == (
        400,
        {"error": "invalid_grant", "error_description": "the authorization code was already used"},
    )
    resp = await edge.client.get(edge.url("mcp.acme.test", "/mcp"), headers=bearer(first["access_token"]))
    assert resp.status == 401  # RFC 6749 §4.1.2: what the code got is revoked
    status, _ = await token(
        edge, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client_id}
    )
    assert status == 400
    # nor does the assertion minted for that grant work as a credential of its own
    resp = await edge.client.get(url, headers={"Cf-Access-Token": assertion, "Accept": "*/*"}, allow_redirects=False)
    assert resp.status == 401


async def test_confidential_client_must_authenticate(edge: RunningEdge) -> None:
    resp = await edge.client.post(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/registration"), json={"redirect_uris": [CALLBACK]}
    )
    client = await resp.json()
    verifier, challenge = pkce()
    got = await authorize(edge, client["client_id"], challenge)
    form = {
        "grant_type": "authorization_code",
        "code": got["code"],
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
    }
    status, body = await token(edge, {**form, "client_id": client["client_id"], "client_secret": "wrong"})
    assert (status, body["error"]) == (401, "invalid_client")
    basic = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    resp = await edge.client.post(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/token"), data=form, headers={"Authorization": basic}
    )
    assert resp.status == 200, await resp.text()


# --- access tokens and refresh ---------------------------------------------------------------------


async def test_expired_access_token_then_refresh(edge: RunningEdge) -> None:
    client_id, body = await grant(edge)
    url = edge.url("mcp.acme.test", "/mcp")
    edge.clock.advance(901)
    resp = await edge.client.get(url, headers=bearer(body["access_token"]), allow_redirects=False)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].endswith(', error="invalid_token"')
    status, fresh = await token(
        edge, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id}
    )
    assert status == 200, fresh
    assert (await edge.client.get(url, headers=bearer(fresh["access_token"]))).status == 200
    # the refresh token rotated: the old one is spent
    status, _ = await token(
        edge, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id}
    )
    assert status == 400


async def test_refresh_re_evaluates_the_policies(edge: RunningEdge, origin: Origin, tmp_path: Any) -> None:
    client_id, body = await grant(edge)
    raw = copy.deepcopy(oauth_config(origin.url))
    raw["apps"][0]["policies"][0]["include"] = [{"email": {"email": "bob@acme.test"}}]  # alice removed
    raw["keys_dir"] = str(tmp_path / "keys")
    edge.edge.reconfigure(parse_config(raw, source="test.yml", base_dir=tmp_path))
    status, refused = await token(
        edge, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id}
    )
    assert (status, refused) == (
        400,
        {"error": "invalid_grant", "error_description": "the application's policies no longer allow this user"},
    )


async def test_refresh_ends_with_the_grant_session_duration(edge: RunningEdge) -> None:
    client_id, body = await grant(edge)
    edge.clock.advance(2 * 3600 + 1)  # grant.session_duration: 2h
    status, refused = await token(
        edge, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id}
    )
    assert (status, refused["error"]) == (400, "invalid_grant")


async def test_logout_ends_the_grant(edge: RunningEdge) -> None:
    client = await register(edge, [CALLBACK])
    verifier, challenge = pkce()
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": CALLBACK,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    async with loopback_session() as browser:
        resp = await browser_login(
            browser,
            edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/authorization") + "?" + urlencode(query),
            "alice@acme.test",
        )
        code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
        status, body = await token(
            edge,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": CALLBACK,
                "client_id": client["client_id"],
                "code_verifier": verifier,
            },
        )
        assert status == 200
        url = edge.url("mcp.acme.test", "/mcp")
        assert (await edge.client.get(url, headers=bearer(body["access_token"]))).status == 200
        await browser.get(edge.url("mcp.acme.test", "/cdn-cgi/access/logout"))
    resp = await edge.client.get(url, headers=bearer(body["access_token"]), allow_redirects=False)
    assert resp.status == 401


async def test_token_from_one_domain_works_on_all_of_the_app(edge: RunningEdge, origin: Origin) -> None:
    _, body = await grant(edge)
    resp = await edge.client.get(edge.url("tools.acme.test", "/api"), headers=bearer(body["access_token"]))
    assert resp.status == 200
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"
    # another app does not take it
    resp = await edge.client.get(
        edge.url("plain.acme.test", "/"), headers=bearer(body["access_token"]), allow_redirects=False
    )
    assert resp.status == 302


# --- an attacker's requests ------------------------------------------------------------------------


async def test_raw_path_cannot_break_out_of_the_challenge(edge: RunningEdge) -> None:
    # sent as bytes: no client library percent-encodes the quote, comma and backslash for us
    status, head = await raw(
        edge.port,
        b'GET /x"y,z\\w HTTP/1.1\r\nHost: mcp.acme.test\r\nAccept: */*\r\nConnection: close\r\n\r\n',
    )
    assert status == 401
    challenge = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"www-authenticate:"))
    assert challenge == (
        b'WWW-Authenticate: Bearer realm="OAuth", resource_metadata="http://mcp.acme.test'
        b'/.well-known/cloudflare-access-protected-resource/x%22y%2Cz%5Cw"'
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"grant_type=refresh_token&grant_type=authorization_code", "application/x-www-form-urlencoded", 400, "invalid_request"),
        (b"grant_type=authorization_code&code=%ff", "application/x-www-form-urlencoded", 400, "invalid_request"),
        (b"x=" + b"a" * (64 * 1024), "application/x-www-form-urlencoded", 413, "invalid_request"),
    ],
    ids=["duplicate-param", "not-utf8", "too-large"],
)  # fmt: skip
async def test_token_endpoint_rejects_malformed_bodies(
    edge: RunningEdge, body: bytes, content_type: str, status: int, error: str
) -> None:
    resp = await edge.client.post(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/token"), data=body, headers={"Content-Type": content_type}
    )
    assert resp.status == status
    assert (await resp.json())["error"] == error


@pytest.mark.parametrize(
    ("body", "status", "description"),
    [
        (b"not json", 400, "the body is not JSON"),
        (b"[]", 400, "the body is not a JSON object"),
        (b'{"redirect_uris": "http://127.0.0.1/cb"}', 400, "redirect_uris must be a list of 1 to 20 strings"),
        (b'{"redirect_uris": []}', 400, "redirect_uris must be a list of 1 to 20 strings"),
        (b"{" + b" " * (64 * 1024) + b"}", 413, "the body is larger than 65536 bytes"),
        (
            b'{"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "private_key_jwt"}',
            400,
            "token_endpoint_auth_method must be one of none, client_secret_basic, client_secret_post",
        ),
        (
            b'{"redirect_uris": ["http://127.0.0.1/cb"], "grant_types": ["implicit"]}',
            400,
            "grant_types may only hold authorization_code and refresh_token",
        ),
    ],
    ids=["not-json", "array", "uris-string", "uris-empty", "too-large", "auth-method", "grant-type"],
)
async def test_registration_rejects_malformed_metadata(
    edge: RunningEdge, body: bytes, status: int, description: str
) -> None:
    resp = await edge.client.post(
        edge.url("mcp.acme.test", "/cdn-cgi/access/oauth/registration"),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == status
    assert (await resp.json())["error_description"] == description


async def test_tokens_are_not_interchangeable(edge: RunningEdge) -> None:
    client_id, body = await grant(edge)
    url = edge.url("mcp.acme.test", "/mcp")
    # the refresh token is no access token, and the access token no refresh token
    resp = await edge.client.get(url, headers=bearer("oauth:" + body["refresh_token"]), allow_redirects=False)
    assert resp.status == 401
    status, refused = await token(
        edge, {"grant_type": "refresh_token", "refresh_token": body["access_token"], "client_id": client_id}
    )
    assert (status, refused["error"]) == (400, "invalid_grant")
    # a client cannot refresh another client's grant
    other = await register(edge, [CALLBACK])
    status, refused = await token(
        edge, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": other["client_id"]}
    )
    assert (status, refused["error"]) == (400, "invalid_grant")
    # nor can a client of another host's app use this app's endpoints
    resp = await edge.client.post(
        edge.url("plain.acme.test", "/cdn-cgi/access/oauth/token"),
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id},
        allow_redirects=False,
    )
    assert resp.status == 302  # no managed OAuth on Plain: an ordinary protected path


# --- the toolkit -----------------------------------------------------------------------------------


async def test_toolkit_lists_records_and_revokes_grants(fakeedge: FakeEdgeFactory, origin: Origin) -> None:
    edge = await fakeedge(oauth_config(origin.url))
    running = RunningEdge(edge, edge.client())
    client_id, body = await grant(running)
    url = running.url("tools.acme.test", "/api")

    listed = edge.oauth()
    (entry,) = listed["grants"]
    assert entry == {
        "id": entry["id"],
        "client_id": client_id,
        "app": "Tools",
        "email": "alice@acme.test",
        "expires": entry["expires"],
        "access_tokens": 1,
    }
    assert [c["client_id"] for c in listed["clients"]] == [client_id]

    assert (await running.client.get(url, headers=bearer(body["access_token"]))).status == 200
    assert edge.requests.last.grant == entry["id"]  # which grant a request came through
    assert edge.requests.to_json()[-1]["grant"] == entry["id"]

    # the control API lists and revokes too
    control = f"{edge.team_domain}/cdn-cgi/fakeedge/oauth"
    async with running.client.get(control) as resp:
        assert (await resp.json())["grants"] == [entry]
    async with running.client.post(control + "/revoke", json={"email": "ALICE@acme.test"}) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert (answer["revoked"], answer["grants"]) == ([entry["id"]], [])
    resp = await running.client.get(url, headers=bearer(body["access_token"]), allow_redirects=False)
    assert resp.status == 401
    async with running.client.post(control + "/revoke", json={"grant": 1}) as resp:
        assert (resp.status, await resp.json()) == (
            400,
            {"error": 'expected one of {"grant": "<grant id>"} or {"email": "<address>"}'},
        )
    assert edge.revoke_oauth(grant="unknown") == []
