"""The edge clock: sessions expire on demand; an origin's own clock does not move with it."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import jwt
import pytest

from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .origins import config_for, verify, whoami


@pytest.fixture
async def edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    return await fakeedge(config=config_for(whoami()))


async def test_the_app_session_expires_and_the_browser_is_sent_to_sign_in(edge: FakeEdge) -> None:
    client = await edge.login("alice@acme.test", app="Admin")  # Admin: session_duration 1h
    exp = jwt.decode(edge.cookies(client)["CF_Authorization"], options={"verify_signature": False})["exp"]
    edge.clock.freeze()
    edge.clock.advance(exp - edge.clock.now() - 1)
    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 200  # one second before exp
    edge.clock.advance(1)
    async with client.get(edge.url("Admin", "/reports?q=1"), allow_redirects=False) as resp:
        assert resp.status == 302
        location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == edge.team_domain
    assert location.path == f"/cdn-cgi/access/login/admin.acme.test:{edge.port}"
    assert location.query.endswith("&redirect_url=%2Freports%3Fq%3D1")

    # the org session (24 h) is still valid: following the redirects signs in again silently
    async with client.get(edge.url("Admin", "/reports")) as resp:
        assert resp.status == 200
        assert (await resp.json())["path"] == "/reports"


async def test_after_the_org_session_the_browser_sees_the_sign_in_page(edge: FakeEdge) -> None:
    client = await edge.login("alice@acme.test", app="Admin")
    edge.clock.advance(24 * 3600 + 1)
    async with client.get(edge.url("Admin")) as resp:
        assert resp.status == 200
        assert resp.url.path == f"/cdn-cgi/access/login/admin.acme.test:{edge.port}"
        assert "<h1>Log in to Admin</h1>" in await resp.text()


async def test_service_token_jwts_follow_the_edge_clock(edge: FakeEdge) -> None:
    client = edge.client()
    async with client.get(edge.url("Admin"), headers=edge.service_token("ci-deploy-bot")) as resp:
        cookie = resp.cookies["CF_Authorization"].value
    # the service token's JWT works as a session on an app with an Allow policy (spec §5) ...
    async with client.get(edge.url("Admin"), headers={"Cf-Access-Token": cookie}, allow_redirects=False) as resp:
        assert resp.status == 200
    edge.clock.advance(3600)  # ... until its exp on the edge clock
    async with client.get(edge.url("Admin"), headers={"Cf-Access-Token": cookie}, allow_redirects=False) as resp:
        assert resp.status == 302


async def test_a_clock_ahead_of_the_origin_puts_iat_in_the_origins_future(edge: FakeEdge) -> None:
    edge.clock.skew(3600)
    token = edge.mint(app="Admin", email="alice@acme.test")
    with pytest.raises(jwt.ImmatureSignatureError) as exc:
        await verify(edge.certs_url, token, audience=edge.aud("Admin"), issuer=edge.team_domain)
    assert str(exc.value) == "The token is not yet valid (iat)"
    # a leeway as large as the skew lets it through
    jwks = jwt.PyJWKClient(edge.certs_url, cache_jwk_set=False)
    key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=edge.aud("Admin"), leeway=3600)
    assert claims["email"] == "alice@acme.test"


async def test_expiry_on_the_edge_clock_is_not_expiry_for_the_origin(edge: FakeEdge) -> None:
    token = edge.mint(app="Admin", email="alice@acme.test")
    edge.clock.advance(2 * 3600)  # past exp for the edge ...
    async with edge.client().get(edge.url("Admin"), headers={"Cf-Access-Token": token}, allow_redirects=False) as r:
        assert r.status == 302
    # ... not for an origin on real time: test its expiry handling with mint(variant="expired"), or mint
    # while the edge clock is behind
    claims = await verify(edge.certs_url, token, audience=edge.aud("Admin"), issuer=edge.team_domain)
    assert claims["email"] == "alice@acme.test"
    edge.clock.reset()
    edge.clock.advance(-2 * 3600)
    old = edge.mint(app="Admin", email="alice@acme.test")
    with pytest.raises(jwt.ExpiredSignatureError):
        await verify(edge.certs_url, old, audience=edge.aud("Admin"), issuer=edge.team_domain)
