"""Key rotation and a misbehaving certs endpoint, seen by an origin that verifies with PyJWKClient.

The origin's key-set cache runs on real time; the edge's grace period runs on the edge clock.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jwt
import pytest

from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .origins import Verifier, config_for, verify, verifying_origin, whoami

WEEK = 7 * 24 * 3600


async def start(fakeedge: FakeEdgeFactory, **client: Any) -> tuple[FakeEdge, Verifier, str]:
    verifier = Verifier(**client)
    edge = await fakeedge(config=config_for(verifying_origin(verifier)))
    verifier.point_at(edge.certs_url, audience=edge.aud("Admin"), issuer=edge.team_domain)
    return edge, verifier, edge.config.ingress[0].service


async def ask(origin_url: str, token: str) -> tuple[int, dict[str, Any]]:
    """Send a token straight to the origin, as the edge would in Cf-Access-Jwt-Assertion."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(origin_url, headers={"Cf-Access-Jwt-Assertion": token}) as resp,
    ):
        return resp.status, await resp.json()


def certs_kids(edge: FakeEdge) -> list[str]:
    return [k["kid"] for k in json.loads(edge.core.keys.certs_document(edge.clock.now()))["keys"]]


async def test_rotation_with_the_key_set_cache_off(fakeedge: FakeEdgeFactory) -> None:
    edge, _, origin_url = await start(fakeedge, cache_jwk_set=False)
    old_kid = edge.core.keys.current.kid
    client = await edge.login("alice@acme.test", app="Admin")  # its cookie is signed by the old key
    old_token = edge.mint(app="Admin", email="bob@acme.test")
    async with client.get(edge.url("Admin")) as resp:
        assert (resp.status, (await resp.json())["kid"]) == (200, old_kid)

    new_kid = edge.rotate_keys()
    assert certs_kids(edge) == [old_kid, new_kid]  # spec §3: previous first, current last
    certs = json.loads(edge.core.keys.certs_document(edge.clock.now()))
    assert certs["public_cert"]["kid"] == new_kid

    # during the grace: the old key still verifies, through the edge and directly
    async with client.get(edge.url("Admin")) as resp:
        assert (resp.status, (await resp.json())["kid"]) == (200, old_kid)
    assert await ask(origin_url, old_token) == (200, {"email": "bob@acme.test", "kid": old_kid})
    # new tokens are signed by the new key and verify too
    new_token = edge.mint(app="Admin", email="bob@acme.test")
    assert await ask(origin_url, new_token) == (200, {"email": "bob@acme.test", "kid": new_kid})
    fresh = await edge.login("carol@acme.test", app="Admin")
    async with fresh.get(edge.url("Admin")) as resp:
        assert (resp.status, (await resp.json())["kid"]) == (200, new_kid)

    # after the grace (on the edge clock) the old key has left certs: the origin refuses its tokens,
    # although by the origin's own clock they have not expired
    edge.clock.advance(WEEK + 1)
    standby = edge.core.keys.standby
    assert standby is not None
    assert certs_kids(edge) == [standby.kid, new_kid]  # §14.7: still two keys, the standby one first
    assert await ask(origin_url, old_token) == (
        401,
        {"error": f'PyJWKClientError: Unable to find a signing key that matches: "{old_kid}"'},
    )
    assert await ask(origin_url, new_token) == (200, {"email": "bob@acme.test", "kid": new_kid})


async def test_rotation_with_a_cached_key_set_refetches_on_an_unknown_kid(fakeedge: FakeEdgeFactory) -> None:
    # cooldown_duration=0: PyJWT 2.15 otherwise refuses to refetch within 30 s of a fetch (next test)
    edge, verifier, origin_url = await start(fakeedge, cache_jwk_set=True, lifespan=300, cooldown_duration=0)
    old_token = edge.mint(app="Admin", email="bob@acme.test")
    assert (await ask(origin_url, old_token))[0] == 200
    assert (await ask(origin_url, old_token))[0] == 200
    assert verifier.fetches == 1  # the second check used the cached key set

    new_kid = edge.rotate_keys(grace="1h")
    new_token = edge.mint(app="Admin", email="bob@acme.test")
    assert await ask(origin_url, new_token) == (200, {"email": "bob@acme.test", "kid": new_kid})
    assert verifier.fetches == 2  # the unknown kid made it fetch certs again

    # the hazard the edge clock cannot show: the cached set still holds the retired key
    edge.clock.advance(3601)
    assert (await ask(origin_url, old_token))[0] == 200
    assert verifier.fetches == 2


async def test_pyjwt_cooldown_rejects_a_new_key_right_after_a_fetch(fakeedge: FakeEdgeFactory) -> None:
    edge, verifier, origin_url = await start(fakeedge, cache_jwk_set=True)  # PyJWT's defaults
    assert (await ask(origin_url, edge.mint(app="Admin", email="bob@acme.test")))[0] == 200
    new_kid = edge.rotate_keys()
    status, body = await ask(origin_url, edge.mint(app="Admin", email="bob@acme.test"))
    assert (status, body) == (
        401,
        {"error": f'PyJWKClientError: Unable to find a signing key that matches: "{new_kid}"'},
    )
    assert verifier.fetches == 1


async def test_service_tokens_are_signed_by_the_new_key_after_a_rotation(fakeedge: FakeEdgeFactory) -> None:
    edge, _, _ = await start(fakeedge, cache_jwk_set=False)
    client = edge.client()
    bot = edge.service_token("ci-deploy-bot")
    async with client.get(edge.url("Admin"), headers=bot) as resp:
        assert (await resp.json())["kid"] == edge.core.keys.current.kid
    new_kid = edge.rotate_keys()
    async with client.get(edge.url("Admin"), headers=bot) as resp:
        assert (await resp.json())["kid"] == new_kid


# --- certs faults --------------------------------------------------------------------------------


@pytest.fixture
async def edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    return await fakeedge(config=config_for(whoami()))


async def check(edge: FakeEdge, token: str | None = None, **client: Any) -> str:
    """A fresh PyJWKClient verifying a valid token: "ok", or PyJWT's error."""
    token = token or edge.mint(app="Admin", email="alice@acme.test")
    try:
        await verify(edge.certs_url, token, audience=edge.aud("Admin"), issuer=edge.team_domain, **client)
    except jwt.PyJWTError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


async def test_failing_certs(edge: FakeEdge) -> None:
    edge.certs_fault("failing", times=1)
    assert await check(edge) == (
        'PyJWKClientConnectionError: Fail to fetch data from the url, err: "HTTP Error 500: Internal Server Error"'
    )
    assert await check(edge) == "ok"  # times=1: the next fetch works


async def test_empty_certs_on_every_host(edge: FakeEdge) -> None:
    edge.certs_fault("empty")
    assert await check(edge) == "PyJWKSetError: The JWK Set did not contain any keys"
    async with edge.client().get(edge.url("Admin", "/cdn-cgi/access/certs")) as resp:
        assert (resp.status, await resp.read()) == (200, b'{"keys":[],"public_certs":[]}')
    edge.certs_fault(None)
    assert await check(edge) == "ok"


async def test_slow_certs_against_a_client_timeout(edge: FakeEdge) -> None:
    with edge.certs_fault("slow", delay=30):
        assert await check(edge, timeout=0.2) == (
            'PyJWKClientConnectionError: Fail to fetch data from the url, err: "timed out"'
        )
    assert await check(edge, timeout=5) == "ok"  # the context manager ended the fault


async def test_slow_certs_answer_after_the_delay(edge: FakeEdge) -> None:
    edge.certs_fault("slow", delay=0.05, times=1)
    assert await check(edge, timeout=5) == "ok"


async def test_a_fault_for_a_duration_on_the_edge_clock(edge: FakeEdge) -> None:
    token = edge.mint(app="Admin", email="alice@acme.test")  # before the jump: its iat is not in the origin's future
    edge.certs_fault("failing", duration="10m")
    assert (await check(edge, token)).startswith("PyJWKClientConnectionError")
    edge.clock.advance(601)
    assert await check(edge, token) == "ok"


async def test_a_cached_key_set_survives_an_outage_until_a_kid_is_unknown(fakeedge: FakeEdgeFactory) -> None:
    edge, _, origin_url = await start(fakeedge, cache_jwk_set=True, cooldown_duration=0)
    old_token = edge.mint(app="Admin", email="bob@acme.test")
    assert (await ask(origin_url, old_token))[0] == 200
    edge.rotate_keys()
    with edge.certs_fault("failing"):
        assert (await ask(origin_url, old_token))[0] == 200  # served from the cache
        status, body = await ask(origin_url, edge.mint(app="Admin", email="bob@acme.test"))
    assert (status, body["error"]) == (
        401,
        'PyJWKClientConnectionError: Fail to fetch data from the url, err: "HTTP Error 500: Internal Server Error"',
    )


async def test_certs_fault_mistakes(edge: FakeEdge) -> None:
    with pytest.raises(ValueError) as exc:
        edge.certs_fault("down")
    assert str(exc.value) == "unknown certs fault 'down'; valid: slow, empty, failing"
    with pytest.raises(ValueError) as exc:
        edge.certs_fault("failing", times=0)
    assert str(exc.value) == "times: expected a whole number of requests from 1, got 0"
    with pytest.raises(ValueError) as exc:
        edge.certs_fault("slow", delay="soon")
    assert str(exc.value) == "expected a duration such as 30s, 15m or 24h, got 'soon'"
