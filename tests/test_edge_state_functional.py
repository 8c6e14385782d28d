"""The edge's state across ``reconfigure`` (issue 17): what the old config let in stops counting at once.

Every request goes through a real edge on 127.0.0.1 to a real aiohttp origin. Each test first
uses a credential, so that the edge has it cached (verified token, signed JWT, verdict), then
takes out what it rested on.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import jwt
from aiohttp import web

from fakeedge.config import parse_config
from fakeedge.testing import FakeEdge, FakeEdgeFactory

DIGEST = hashlib.sha256(b"acme:ci").hexdigest()
CI = {"CF-Access-Client-Id": f"{DIGEST[:32]}.access", "CF-Access-Client-Secret": DIGEST[32:]}
ASSERTION = "Cf-Access-Jwt-Assertion"


def _origin() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"assertion": request.headers.get(ASSERTION)})

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    return app


def _config(
    service: Any,
    *,
    token: bool = True,
    allowed: str = "alice@acme.test",
    bots: bool = True,
    session_duration: str = "24h",
) -> dict[str, Any]:
    policies: list[dict[str, Any]] = [
        {"name": "people", "decision": "allow", "include": [{"email": {"email": allowed}}]}
    ]
    if bots:
        policies.append({"name": "bots", "decision": "non_identity", "include": [{"any_valid_service_token": {}}]})
    return {
        "team": "acme",
        # legacy mode: the service token's JWT comes back as a cookie and works as one (spec §5)
        "strict_service_token_auth": False,
        "service_tokens": (
            [{"name": "ci", "client_id": CI["CF-Access-Client-Id"], "client_secret": CI["CF-Access-Client-Secret"]}]
            if token
            else []
        ),
        "apps": [
            {"name": "Admin", "domain": "admin.acme.test", "session_duration": session_duration, "policies": policies}
        ],
        "ingress": [{"hostname": "admin.acme.test", "service": service}, {"service": "http_status:404"}],
    }


def _reconfigure(edge: FakeEdge, **changes: Any) -> None:
    """Give the running edge the test config with ``changes``, its origin kept."""
    new = parse_config(_config("http://127.0.0.1:9", **changes), source="changed.yml")
    edge.core.reconfigure(dataclasses.replace(new, ingress=edge.config.ingress, keys_dir=edge.config.keys_dir))


async def test_a_service_token_taken_out_stops_working_with_the_next_request(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=_config(_origin()))
    client = edge.client()
    async with client.get(edge.url("Admin"), headers=CI, allow_redirects=False) as resp:
        assert resp.status == 200
        service_jwt = (await resp.json())["assertion"]
    assert edge.cookies(client, edge.url("Admin")) == {"CF_Authorization": service_jwt}
    identity = f"{edge.team_domain}/cdn-cgi/access/get-identity"
    async with client.get(identity, headers={ASSERTION: service_jwt}) as resp:
        assert resp.status == 200 and (await resp.json())["service_token_status"] is True
    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:  # the cookie alone
        assert resp.status == 200 and (await resp.json())["assertion"] == service_jwt

    _reconfigure(edge, token=False)

    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 302 and "/cdn-cgi/access/login/" in resp.headers["Location"]
    async with client.get(identity, headers={ASSERTION: service_jwt}) as resp:
        assert resp.status == 401 and await resp.json() == {"err": "no valid Access session"}
    async with client.get(edge.url("Admin"), headers=CI, allow_redirects=False) as resp:
        assert resp.status == 302


async def test_a_policy_taken_out_stops_a_signed_in_user(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=_config(_origin()))
    alice = await edge.login("alice@acme.test", app="Admin")
    for _ in range(2):  # the second answer comes from the cached verdict
        async with alice.get(edge.url("Admin"), allow_redirects=False) as resp:
            assert resp.status == 200
    assert edge.requests.last.policy == "people"

    _reconfigure(edge, allowed="bob@acme.test")

    async with alice.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 403
    assert edge.requests.all()[-1].reason == (
        "no policy admits alice@acme.test: Allow policy 'people': no include rule matched (email bob@acme.test)"
    )


async def test_an_app_given_a_shorter_session_signs_new_service_jwts(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=_config(_origin()))
    client = edge.client()

    async def lifetime() -> int:
        async with client.get(edge.url("Admin"), headers=CI, allow_redirects=False) as resp:
            assert resp.status == 200
            claims = jwt.decode((await resp.json())["assertion"], options={"verify_signature": False})
        client.cookie_jar.clear()
        return int(claims["exp"] - claims["iat"])

    assert await lifetime() == 24 * 3600
    assert await lifetime() == 24 * 3600  # the signed JWT, reused
    _reconfigure(edge, session_duration="1h")
    assert await lifetime() == 3600


async def test_an_app_taken_out_leaves_its_host_to_the_ingress(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=_config(_origin()))
    alice = await edge.login("alice@acme.test", app="Admin")
    async with alice.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 200 and (await resp.json())["assertion"]

    new = parse_config(_config("http://127.0.0.1:9"), source="changed.yml")
    edge.core.reconfigure(dataclasses.replace(new, apps=(), ingress=edge.config.ingress))

    async with alice.get(f"http://admin.acme.test:{edge.port}/", allow_redirects=False) as resp:
        assert resp.status == 200 and (await resp.json())["assertion"] is None  # no app: nothing signed
